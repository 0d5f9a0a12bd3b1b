"""A failover interrupted at the promotion, then a Redis that lost every key: no
acknowledged mail is lost, and the host that serves is never demoted.

Under SMTP load through the shared IP (a numbered message every 50 ms):

1. mail-a crashes; the orchestrator decides to fail over to mail-b and takes epoch 1;
2. the moment the promotion lands, the Celery worker and its pool are SIGKILLed while
   `failover.yml` starts (the playbook dies with them);
3. `crctl run` starts a new worker, the dead worker's 8 s lock lease runs out, and the
   next round resumes the journaled failover at epoch 1: mail-b records epoch 1 and
   "primary 1" on its own disk, then serves; the client's outage from the kill is short;
4. mail-a comes back (its service does not start by itself) and is resynced from mail-b;
5. the orchestrator's Redis keys are all lost and `crctl run` restarts: Redis is seeded
   from the inventory (mail-a at epoch 0), but the hosts' records say mail-b was promoted
   at epoch 1, so mail-b is adopted; nothing demotes it.

Checked: every acknowledged message is on mail-b or in a quarantine, none twice; the
accepting host changed once (mail-a → mail-b) and never back; the client watch never saw
two hosts serving or two holders of the shared IP; history tells each step.

Run: CR_LAB_NAME=sc CR_LAB_BASE=198.18.192.0/20 pytest -m lab tests/scenarios
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from scenario_kit import (  # noqa: F401 - fixtures
    Load,
    running_orchestrator, scenario_inventory, shared_ip_holder, split_brain_watch, wait_for,
)

from cr_orchestrator.testworld.lab.mailcheck import judge, scan

pytestmark = pytest.mark.lab


def _events(orch, kind: str) -> list:
    return [e for e in orch.state.events("mail", count=5000) if e.kind == kind]


def records_of(lab, host: str) -> tuple[str, str]:
    state = Path(lab.state_dir_of(host))
    return tuple((state / name).read_text().strip() if (state / name).exists() else ""
                 for name in ("mail.epoch", "mail.role"))


def test_worker_killed_at_the_promotion_then_redis_lost_keeps_every_acknowledged_mail(
        lab, split_brain_watch, tmp_path):
    inventory = scenario_inventory(lab, tmp_path)
    with running_orchestrator(lab, inventory) as orch:
        orch.settle()
        load = Load(lab, tmp_path / "load.jsonl")
        try:
            started = time.time()
            wait_for(lambda: len(load.acked_after(started)) >= 20, 30, "the load's first mail")
            wait_for(lambda: orch.synced_since("mail-b", started + 0.5), 60,
                     "mail-b to hold some of the load's mail", every_s=0.3)

            # 1-2: crash, and kill the worker the moment the promotion lands
            lab.fail("mail-a", "crash")
            wait_for(lambda: _events(orch, "promotion"), 90, "the promotion", every_s=0.02)
            orch.kill_worker()
            killed_at = time.time()
            promotion = _events(orch, "promotion")[0].data
            assert (promotion["new_primary"], promotion["epoch"]) == ("mail-b", 1), promotion

            # 3: a new worker resumes the failover at the same epoch
            wait_for(lambda: load.acked_after(killed_at), 60,
                     "mail acknowledged again through the shared IP", every_s=0.1)
            outage_s = load.acked_after(killed_at)[0].done - killed_at
            print(f"client outage from the worker kill: {outage_s:.2f} s")
            assert outage_s < 15, f"outage from the worker kill {outage_s:.1f} s"
            resumed = wait_for(lambda: _events(orch, "resumed"), 30, "the resume")[0].data
            for e in orch.state.events("mail", count=200):
                if e.at > killed_at - 5:
                    print(f"  {e.at - killed_at:+7.2f} s {e.kind}: "
                          f"{e.data.get('reason') or e.data.get('summary') or ''}"[:150])
            assert (resumed["new_primary"], resumed["epoch"]) == ("mail-b", 1), resumed
            assert records_of(lab, "mail-b") == ("1", "primary 1")
            assert shared_ip_holder(lab) == ["mail-b"]

            # 4: mail-a returns, does not serve, is resynced from mail-b
            healed_at = time.time()
            lab.heal("mail-a")
            wait_for(lambda: orch.synced_since("mail-a", healed_at), 120,
                     "mail-a to be resynced from mail-b", every_s=0.3)

            # 5: every key lost, `crctl run` restarted
            orch.stop()
            assert orch.forget_everything() > 0
            restarted_at = time.time()
            orch.start()
            wait_for(lambda: orch.state.primary("mail") == "mail-b"
                     and not orch.state.seeded("mail"), 90, "mail-b to be adopted", every_s=0.3)
            assert orch.state.epoch("mail") == 1
            wait_for(lambda: len(load.acked_after(restarted_at)) >= 40, 60,
                     "mail still acknowledged after the restart")
            # the cluster settles with mail-b serving; mail-a is resynced again
            wait_for(lambda: (orch.state.last_decision("mail") or {}).get("action") == "none",
                     120, "the cluster to settle", every_s=0.3)
        finally:
            attempts = load.stop()

        adopted = _events(orch, "adopted")
        assert [(e.data["primary"], e.data["epoch"]) for e in adopted] == [("mail-b", 1)]
        assert "mail-b recorded that it took the primary role at epoch 1" in \
            adopted[0].data["reason"]
        assert "re-seeding Redis from the hosts: adopting mail-b" in adopted[0].data["reason"]
        # never a demotion of (or a move away from) the host that serves
        playbooks = [(e.data["playbook"], e.data["limit"]) for e in _events(orch, "playbook")]
        assert ("demote", "mail-b") not in playbooks, playbooks
        decided = [(e.data["action"], e.data["target"]) for e in _events(orch, "decision")]
        assert not [d for d in decided if d[0] in ("demote_rejoined", "failover", "failback",
                                                   "restart_service")], decided
        assert records_of(lab, "mail-b") == ("1", "primary 1")

        # every acknowledged message kept, once; one host accepting at a time
        maildir = Path(lab.data_dir("mail-b")) / "mail" / "Maildir"
        on_primary = scan(maildir / "new", load.run) + scan(maildir / "cur", load.run)
        # the replica set is /srv/mail: its quarantine is /srv/mail.cr-quarantine/<time>/
        quarantined = [f for host in ("mail-a", "mail-b", "mail-dr") for f in scan(
            Path(lab.data_dir(host)) / "mail.cr-quarantine", load.run)]
        verdict = judge(attempts=attempts, on_primary=on_primary, quarantined=quarantined)
        print(verdict.sentence())
        assert verdict.acknowledged > 200, verdict.sentence()
        assert not verdict.missing, verdict.sentence()
        assert not verdict.duplicated, verdict.sentence()
        assert [(a, b) for _, a, b in verdict.switches] == [("mail-a", "mail-b")], \
            verdict.sentence()
