"""The primary loses the shared IP while its service runs: the orchestrator takes it back.

A network restart on a host drops its extra addresses; a failover playbook that failed
after the promotion leaves the new primary serving without the address. Either way the
primary answers on its own address while clients reach nothing. The orchestrator checks
the service through the shared IP every round: after a few failed probes it re-asserts
the live primary (shared IP and gratuitous ARP again) at the same epoch, and says why.

Run: CR_LAB_NAME=sc CR_LAB_BASE=198.18.192.0/20 pytest -m lab tests/scenarios
"""

from __future__ import annotations

import time
import uuid

import pytest
from scenario_kit import (  # noqa: F401 - orchestrator is a fixture
    count_mail, decisions, orchestrator, send_mail, shared_ip_holder, wait_for,
)

pytestmark = pytest.mark.lab


def test_primary_that_lost_the_shared_ip_gets_it_back_at_the_same_epoch(lab, orchestrator):
    state = orchestrator.state
    orchestrator.settle()
    assert shared_ip_holder(lab) == ["mail-a"]

    removed = lab.run_on("mail-a", f"ip addr del {lab.shared_ip}/24 dev eth0")
    assert removed.returncode == 0, removed.stderr
    lost_at = time.time()
    assert shared_ip_holder(lab) == []

    wait_for(lambda: shared_ip_holder(lab) == ["mail-a"], 60, "mail-a to hold the shared IP again")
    back_after = time.time() - lost_at
    assert (state.primary("mail"), state.epoch("mail")) == ("mail-a", 0)
    assert ("reassert", "mail-a") in decisions(state)
    assert not {"failover", "restart_service"} & {action for action, _ in decisions(state)}
    reason = next(e.data["reason"] for e in state.events("mail", count=500)
                  if e.kind == "decision" and e.data["action"] == "reassert")
    assert reason.startswith("re-asserting mail-a as primary (epoch 0): it serves on its own "
                             f"address but the shared IP {lab.shared_ip} failed"), reason
    play = wait_for(lambda: [e for e in state.events("mail", count=500)
                             if e.kind == "playbook" and e.data["playbook"] == "switch_ip"],
                    60, "the switch_ip playbook to finish")[0]
    assert play.data["ok"] and play.data["epoch"] == 0, play.data

    # Clients are served through the shared IP again.
    subject = f"after-reassert-{uuid.uuid4().hex[:8]}"
    send_mail(lab, subject)
    assert "IMAP 1" in count_mail(lab, subject)
    print(f"shared IP back on mail-a {back_after:.1f} s after it was removed")
