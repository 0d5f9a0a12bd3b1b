"""An operator pause holds every automatic action, even when the primary dies.

`crctl pause mail`; once a renewal that says "paused" has reached mail-a, mail-a crashes.
The orchestrator sees it down, confirmed from two vantages, and does nothing, saying it
is paused. Its agent would keep that paused lease without end, and a crash looks like a
partition from here: so `crctl resume mail` does not make the rounds fail over either;
they hold, saying why and what the operator runs once the host is known to be off
(`crctl failover mail`). The operator runs it: mail-b is promoted, and the client reads
its mail through the shared IP. A client watches for split brain throughout.
(test_lease_mail.py shows the split brain that failing over here would make when mail-a
is only cut off.)

Run: CR_LAB_NAME=sc CR_LAB_BASE=198.18.192.0/20 pytest -m lab tests/scenarios
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from scenario_kit import (  # noqa: F401 - fixtures
    count_mail, decisions, orchestrator, send_mail, shared_ip_holder, split_brain_watch,
    wait_for,
)

from cr_orchestrator.state.lease import LeaseStore

pytestmark = pytest.mark.lab


def test_paused_cluster_does_nothing_and_after_resume_waits_for_the_operator_to_fail_over(lab, orchestrator):
    state = orchestrator.state
    orchestrator.settle()
    subject = f"before-pause-{uuid.uuid4().hex[:8]}"
    sent_at = time.time()
    send_mail(lab, subject)
    wait_for(lambda: orchestrator.synced_since("mail-b", sent_at), 60,
             "a sync after the mail", every_s=0.3)

    paused = orchestrator.crctl("pause", "mail")
    assert paused.returncode == 0, paused.stderr
    lease = LeaseStore(state.redis, orchestrator.prefix)
    wait_for(lambda: (grant := lease.last_grant("mail")) and grant[0] == "mail-a" and grant[3]
             and (Path(lab.state_dir_of("mail-a")) / "mail.lease").read_text().split()[3] == "1",
             30, "a paused renewal that reached mail-a", every_s=0.2)
    lab.fail("mail-a", "crash")
    held = wait_for(lambda: (d := state.last_decision("mail")) and "down for" in d["reason"]
                    and d, 60, "the paused orchestrator to see mail-a down", every_s=0.3)
    print("paused:", held["reason"])
    assert held["action"] == "hold"
    assert held["reason"].startswith("cluster mail is paused; not failing over: mail-a "), \
        held["reason"]
    assert "given while the cluster was paused" in held["reason"], held["reason"]
    time.sleep(3)  # a few more rounds: still nothing
    assert (state.primary("mail"), state.epoch("mail")) == ("mail-a", 0)
    assert not [e for e in state.events("mail", count=1000)
                if e.kind in ("promotion", "playbook")]

    resumed = orchestrator.crctl("resume", "mail")
    assert resumed.returncode == 0, resumed.stderr
    resumed_at = time.time()
    held = wait_for(lambda: (d := state.last_decision("mail")) and d["at"] >= resumed_at
                    and not d["reason"].startswith("cluster mail is paused") and d, 30,
                    "a round after the resume", every_s=0.3)
    print("resumed:", held["reason"])
    assert held["action"] == "hold", held["reason"]
    assert held["reason"].endswith("If mail-a is known to be off: crctl failover mail"), \
        held["reason"]
    time.sleep(6)  # longer than the lease's ttl and margin: still nothing
    assert (state.primary("mail"), state.epoch("mail")) == ("mail-a", 0)

    failover = orchestrator.crctl("failover", "mail")
    assert failover.returncode == 0, failover.stderr
    wait_for(lambda: state.primary("mail") == "mail-b", 90, "mail-b to be promoted",
             every_s=0.3)
    wait_for(lambda: shared_ip_holder(lab) == ["mail-b"], 60, "the shared IP on mail-b",
             every_s=0.3)
    out = wait_for(lambda: (o := count_mail(lab, subject)) and "IMAP 1" in o and o, 30,
                   "the mail through the shared IP", every_s=0.3)
    assert "POP3 1" in out, out
