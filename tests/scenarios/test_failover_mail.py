"""The seed's story, end to end in the lab, with the orchestrator running as `crctl run`.

mail-a is the primary of cluster `mail` and holds the shared IP; mail-b is its secondary.
A client sends mail through the shared IP; it is replicated to mail-b. Then mail-a's mail
service stops and will not start again. The orchestrator restarts it in place once, sees
it still down from two vantages, promotes mail-b with a new epoch and moves the shared
IP: the client reads the mail it sent before, through the same shared IP.

Run: CR_LAB_NAME=sc CR_LAB_BASE=198.18.192.0/20 pytest -m lab tests/scenarios
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from scenario_kit import (  # noqa: F401 - orchestrator is a fixture
    break_mail_service, count_mail, decisions, orchestrator, redis_text, send_mail,
    shared_ip_holder, wait_for,
)

pytestmark = pytest.mark.lab


def test_primary_mail_service_that_will_not_restart_fails_over_to_the_secondary(lab, orchestrator):
    state = orchestrator.state

    # The orchestrator settles: secondaries stopped (cold standby), mail-b has a copy.
    orchestrator.settle()

    # A client sends mail through the shared IP; it reaches mail-b with the next sync.
    subject = f"before-failover-{uuid.uuid4().hex[:8]}"
    sent_at = time.time()
    send_mail(lab, subject)
    wait_for(lambda: orchestrator.synced_since("mail-b", sent_at), 90, "a sync after the mail")

    # mail-a's mail service stops and cannot start again.
    break_mail_service(lab)

    # The orchestrator restarts it in place once, then promotes mail-b at a new epoch.
    wait_for(lambda: state.primary("mail") == "mail-b", 150, "mail-b to be promoted")
    epoch = state.epoch("mail")
    assert epoch == 1
    made = decisions(state)
    assert ("restart_service", "mail-a") in made
    assert made.index(("restart_service", "mail-a")) < made.index(("failover", "mail-b"))
    failover = wait_for(lambda: [e for e in state.events("mail", count=500)
                                 if e.kind == "playbook" and e.data["playbook"] == "failover"],
                        120, "the failover playbook to finish")[-1]
    assert failover.data["ok"], json.dumps(failover.data)
    reason = next(e.data["reason"] for e in state.events("mail", count=500)
                  if e.kind == "decision" and e.data["action"] == "failover")
    assert reason.startswith("failing over from mail-a to mail-b: mail-a down for")

    # The client reads, through the same shared IP, the mail it sent before the failure.
    assert shared_ip_holder(lab) == ["mail-b"]
    out = count_mail(lab, subject)
    assert "IMAP 1" in out and "POP3 1" in out, out

    # The audit trail is in Redis; the inventory's TSIG key never is.
    secret = lab.tsig_secret().encode()
    client = state.redis
    for key in client.scan_iter(match=f"{state.prefix}*"):
        assert secret not in redis_text(client, key), f"the TSIG secret leaked into {key!r}"
