"""Failback when configured: `cr_failback: auto` brings the primary role home.

The cluster is configured with `cr_failback: auto` and `failback_min_healthy: 10s`.
mail-a crashes and mail-b takes over. mail-a reboots (manual start: not serving), is
resynced from mail-b; only after that resync, once it has been healthy and in sync for
10 s, the orchestrator switches back to it by itself (demote mail-b, final sync, promote
mail-a at a new epoch). Mail sent to mail-b while mail-a was away is there after the
failback. A client watches for split brain throughout.

Run: CR_LAB_NAME=sc CR_LAB_BASE=198.18.192.0/20 pytest -m lab tests/scenarios
"""

from __future__ import annotations

import uuid

import pytest
from scenario_kit import (  # noqa: F401 - split_brain_watch is a fixture
    count_mail, decisions, running_orchestrator, scenario_inventory, send_mail,
    split_brain_watch, wait_for,
)

pytestmark = pytest.mark.lab


def test_auto_failback_brings_the_primary_home_with_the_mail_it_missed(lab, tmp_path,
                                                                      split_brain_watch):
    inventory = scenario_inventory(lab, tmp_path, policy={"failback_min_healthy": "10s"},
                                   cr_failback="auto")
    with running_orchestrator(lab, inventory) as orch:
        state = orch.state
        orch.settle()
        lab.fail("mail-a", "crash")
        wait_for(lambda: state.primary("mail") == "mail-b", 90, "mail-b to be promoted",
                 every_s=0.3)
        while_away = f"while-mail-a-away-{uuid.uuid4().hex[:8]}"
        wait_for(lambda: "IMAP 0" in count_mail(lab, while_away), 60, "mail-b serving",
                 every_s=0.3)
        send_mail(lab, while_away)

        lab.heal("mail-a")
        wait_for(lambda: state.primary("mail") == "mail-a", 150, "the failback to mail-a",
                 every_s=0.3)
        assert state.epoch("mail") == 2
        made = decisions(state)
        assert ("demote_rejoined", "mail-a") not in made  # manual start: it came back stopped
        steps = [("failover", "mail-b"), ("failback", "mail-a")]
        assert all(step in made for step in steps), made
        assert made.index(steps[0]) < made.index(steps[1])
        # the failback was decided only after mail-a had been resynced from mail-b (by a
        # resync decision or the scheduled sync, whichever came first)
        events = state.events("mail", count=1000)
        decided = next(e.at for e in events if e.kind == "decision"
                       and e.data["action"] == "failback")
        resynced = [e for e in events if e.kind == "sync" and e.data["target"] == "mail-a"
                    and e.data["source"] == "mail-b" and e.data["epoch"] == 1
                    and e.data["ok"] and e.at < decided]
        assert resynced, [(e.kind, e.data) for e in events if e.kind != "decision"]
        # mail-a was copied from mail-b (epoch 1) before the role came home
        record = orch.freshness.get(cluster="mail", set_name="maildata", host="mail-a")
        assert (record.last_success_source, record.last_success_epoch) == ("mail-b", 1)
        reason = next(e.data["reason"] for e in state.events("mail", count=500)
                      if e.kind == "decision" and e.data["action"] == "failback")
        assert reason.startswith("failing back from mail-b to mail-a: mail-a healthy and in "
                                 "sync for"), reason
        out = wait_for(lambda: (o := count_mail(lab, while_away)) and "IMAP 1" in o and o, 30,
                       "the mail sent while mail-a was away", every_s=0.3)
        assert "POP3 1" in out, out
