"""An operator pause holds every automatic action, even when the primary dies.

`crctl pause mail`, then mail-a crashes: the orchestrator sees it down, confirmed from
two vantages, and does nothing, saying it is paused and what it would otherwise do (fail
over to mail-b). `crctl resume mail`: the next rounds fail over to mail-b, and the client
reads its mail through the shared IP. A client watches for split brain throughout.

Run: CR_LAB_NAME=sc CR_LAB_BASE=198.18.192.0/20 pytest -m lab tests/scenarios
"""

from __future__ import annotations

import time
import uuid

import pytest
from scenario_kit import (  # noqa: F401 - fixtures
    count_mail, decisions, orchestrator, send_mail, shared_ip_holder, split_brain_watch,
    wait_for,
)

pytestmark = pytest.mark.lab


def test_paused_cluster_does_nothing_until_resumed_then_fails_over(lab, orchestrator):
    state = orchestrator.state
    orchestrator.settle()
    subject = f"before-pause-{uuid.uuid4().hex[:8]}"
    sent_at = time.time()
    send_mail(lab, subject)
    wait_for(lambda: orchestrator.synced_since("mail-b", sent_at), 60,
             "a sync after the mail", every_s=0.3)

    paused = orchestrator.crctl("pause", "mail")
    assert paused.returncode == 0, paused.stderr
    lab.fail("mail-a", "crash")
    held = wait_for(lambda: (d := state.last_decision("mail")) and "would otherwise do "
                    "failover" in d["reason"] and d, 60,
                    "the paused orchestrator to hold a failover", every_s=0.3)
    print("paused:", held["reason"])
    assert held["action"] == "hold"
    assert held["reason"].startswith("cluster mail is paused by an operator: not acting; "
                                     "would otherwise do failover: failing over from mail-a "
                                     "to mail-b"), held["reason"]
    time.sleep(3)  # a few more rounds: still nothing
    assert (state.primary("mail"), state.epoch("mail")) == ("mail-a", 0)
    assert not [e for e in state.events("mail", count=1000)
                if e.kind in ("promotion", "playbook")]

    resumed = orchestrator.crctl("resume", "mail")
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: state.primary("mail") == "mail-b", 90, "mail-b to be promoted",
             every_s=0.3)
    assert ("failover", "mail-b") in decisions(state)
    wait_for(lambda: shared_ip_holder(lab) == ["mail-b"], 60, "the shared IP on mail-b",
             every_s=0.3)
    out = wait_for(lambda: (o := count_mail(lab, subject)) and "IMAP 1" in o and o, 30,
                   "the mail through the shared IP", every_s=0.3)
    assert "POP3 1" in out, out
