"""Planned moves lose nothing: `crctl switchover` and `crctl failback` in the lab.

A client sends mail through the shared IP and, at once, the operator switches the primary
over to mail-b: the old primary is stopped, a final sync copies what the scheduled syncs
had not, and mail-b takes the shared IP at a new epoch. The mail is there. More mail
arrives on mail-b; the operator fails back to mail-a the same way; both are there.

Run: CR_LAB_NAME=sc CR_LAB_BASE=198.18.192.0/20 pytest -m lab tests/scenarios
"""

from __future__ import annotations

import time
import uuid

import pytest
from scenario_kit import (  # noqa: F401 - orchestrator is a fixture
    count_mail, orchestrator, send_mail, shared_ip_holder, wait_for,
)

pytestmark = pytest.mark.lab


def test_switchover_then_failback_lose_no_mail(lab, orchestrator):
    state = orchestrator.state
    orchestrator.settle()

    # Mail arrives just before a planned switchover (the scheduled sync, every 10 s, has
    # almost surely not copied it yet: the final sync must).
    first = f"before-switchover-{uuid.uuid4().hex[:8]}"
    sent_at = time.time()
    send_mail(lab, first)
    done = orchestrator.crctl("switchover", "mail", "--to", "mail-b")
    assert done.returncode == 0, done.stderr
    assert "switchover of mail from mail-a to mail-b done (epoch 1)" in done.stdout
    assert (state.primary("mail"), state.epoch("mail")) == ("mail-b", 1)
    assert shared_ip_holder(lab) == ["mail-b"]
    assert "IMAP 1" in count_mail(lab, first)

    # The orchestrator keeps mail-a, now a secondary, in sync from mail-b.
    wait_for(lambda: orchestrator.synced_since("mail-a", sent_at), 120,
             "mail-a to be synced from mail-b")
    second = f"before-failback-{uuid.uuid4().hex[:8]}"
    send_mail(lab, second)

    back = orchestrator.crctl("failback", "mail")
    assert back.returncode == 0, back.stderr
    assert "failback of mail from mail-b to mail-a done (epoch 2)" in back.stdout
    assert shared_ip_holder(lab) == ["mail-a"]
    for subject in (first, second):
        out = count_mail(lab, subject)
        assert "IMAP 1" in out and "POP3 1" in out, (subject, out)

    kinds = [(e.kind, e.data.get("kind")) for e in state.events("mail", count=500)
             if e.kind in ("promotion", "operator")]
    assert kinds == [("operator", None), ("promotion", "switchover"),
                     ("operator", None), ("promotion", "failback")]
