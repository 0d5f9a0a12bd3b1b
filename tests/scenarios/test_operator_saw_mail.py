"""Operator commands act only on the cluster the operator saw.

1. The operator looks (`crctl status`: mail-a primary at epoch 0) and decides to move the
   cluster to the DR site. Before the command runs, mail-a crashes and the orchestrator
   fails over to mail-b. The switchover, carrying what the operator saw, is refused with
   a message naming mail-b and epoch 1; the cluster stays where the failover put it.
2. A switchover typed while the primary is already failing (the detector suspects it)
   is refused at once, holding no lock: the automatic failover's client outage is no
   longer than without it, give or take one probe interval (measured: one crash without
   the command, one with it).

Run: CR_LAB_NAME=sc CR_LAB_BASE=198.18.192.0/20 pytest -m lab tests/scenarios
"""

from __future__ import annotations

import re
import time

import pytest
from scenario_kit import (  # noqa: F401 - fixtures
    FAST_POLICY, orchestrator, reset_world, running_orchestrator, scenario_inventory,
    shared_ip_holder, split_brain_watch, wait_for,
)

from cr_orchestrator.testworld.clientwatch import outage_around, read_samples

pytestmark = pytest.mark.lab


def test_a_switchover_issued_before_a_failover_is_refused_after_it(lab, orchestrator):
    state = orchestrator.state
    orchestrator.settle()
    seen = (state.primary("mail"), state.epoch("mail"))
    assert seen == ("mail-a", 0)

    lab.fail("mail-a", "crash")
    wait_for(lambda: state.primary("mail") == "mail-b", 90, "the automatic failover",
             every_s=0.3)
    refused = orchestrator.crctl("switchover", "mail", "--to", "mail-dr", "--seen-primary",
                                 seen[0], "--seen-epoch", str(seen[1]))
    assert refused.returncode == 2, refused.stdout  # refused, as any StateError
    assert ("refused: switchover of mail was issued when mail-a was primary at epoch 0, but "
            "the cluster has moved since: mail-b is primary at epoch 1") in refused.stderr
    time.sleep(2)  # nothing moves afterwards either
    assert (state.primary("mail"), state.epoch("mail")) == ("mail-b", 1)
    assert shared_ip_holder(lab) == ["mail-b"]
    assert not [e for e in state.events("mail", count=1000)
                if e.kind == "playbook" and e.data.get("new_primary") == "mail-dr"]


def _crash_and_measure(lab, tmp_path, *, switchover_when_suspect: bool) -> tuple[float, str]:
    from scenario_kit import SplitBrainWatch

    reset_world(lab)
    watch = SplitBrainWatch(lab, tmp_path / f"watch-{switchover_when_suspect}.jsonl")
    said = ""
    try:
        with running_orchestrator(lab, scenario_inventory(lab, tmp_path)) as orch:
            orch.settle()
            crashed_at = time.time()
            lab.fail("mail-a", "crash")
            if switchover_when_suspect:
                wait_for(lambda: "suspect" in (orch.state.last_decision("mail") or {})
                         .get("reason", ""), 30, "mail-a to be suspect", every_s=0.05)
                done = orch.crctl("switchover", "mail", "--to", "mail-b")
                assert done.returncode == 2, done.stdout
                said = done.stderr
            wait_for(lambda: orch.state.primary("mail") == "mail-b", 90, "the failover",
                     every_s=0.3)
            wait_for(lambda: shared_ip_holder(lab) == ["mail-b"], 60, "the shared IP on mail-b")
            time.sleep(3)
    finally:
        watch.stop()
        lab.heal("mail-a")
    outage = outage_around(read_samples(watch.out), crashed_at)
    assert outage is not None, "the client never got an answer again"
    return outage, said


def test_a_switchover_during_a_suspect_primary_does_not_delay_the_failover(lab, tmp_path):
    alone, _ = _crash_and_measure(lab, tmp_path, switchover_when_suspect=False)
    with_command, said = _crash_and_measure(lab, tmp_path, switchover_when_suspect=True)
    interval = float(FAST_POLICY["probe_interval"].rstrip("s"))
    print(f"client outage: {alone:.2f} s without the switchover, {with_command:.2f} s with it")
    # the command observes again when it runs: on a loaded machine mail-a may already be
    # called down by then; either way the planned change is refused
    assert re.search(r"not starting a switchover of mail: its primary mail-a is "
                     r"(suspect|down) \(host\)", said), said
    assert with_command <= alone + interval, (alone, with_command)
