"""The Redis master dies in the middle of a failover: the orchestrator (`crctl run` on a
real Sentinel quorum: three redis-servers, three redis-sentinels) carries on on the
promoted replica, and the cluster converges.

Under SMTP load through the shared IP:

1. mail-a crashes; the orchestrator decides to fail over to mail-b and takes epoch 1 (the
   promotion and its journal acknowledged by a replica before anything acts on them);
2. the moment the promotion lands, the Redis master is SIGKILLed, while `failover.yml`
   runs; the sentinels promote a replica;
3. the worker's clients (state, broker, results) and the beat find the new master; the
   failover's journal (on the new master: it was replicated) is finished by the running
   playbook or, if its lease was lost meanwhile, resumed by the next round.

Checked: within 60 s of the kill one primary serves (mail-b, records "1" and "primary 1"),
the shared IP is held by mail-b alone, mail is acknowledged again through it, the journal
is closed, and history tells the promotion (and the resumption, when there was one).
"""

from __future__ import annotations

import time
import uuid

import pytest
from scenario_kit import (  # noqa: F401 - fixtures
    Load,
    running_orchestrator, scenario_inventory, shared_ip_holder, split_brain_watch, wait_for,
)

from cr_orchestrator.testworld.redis_quorum import LocalQuorum

pytestmark = pytest.mark.lab


def _events(orch, kind: str) -> list:
    return [e for e in orch.state.events("mail", count=5000) if e.kind == kind]


def test_redis_master_killed_mid_failover_converges_on_the_promoted_replica(
        lab, split_brain_watch, tmp_path):
    quorum = LocalQuorum(tmp_path / "quorum", 18400 + (uuid.uuid4().int % 40) * 5).start()
    try:
        inventory = scenario_inventory(lab, tmp_path)
        with running_orchestrator(lab, inventory, redis_url=quorum.url) as orch:
            orch.settle()
            load = Load(lab, tmp_path / "load.jsonl")
            try:
                started = time.time()
                wait_for(lambda: len(load.acked_after(started)) >= 20, 30, "the load's first mail")

                lab.fail("mail-a", "crash")
                wait_for(lambda: _events(orch, "promotion"), 90, "the promotion", every_s=0.02)
                old_master = quorum.master_port()
                quorum.kill(old_master)
                killed_at = time.time()
                new_master = quorum.wait_for_new_master(old_master)
                print(f"\nRedis master {old_master} killed at the promotion; sentinels promoted "
                      f"{new_master} after {time.time() - killed_at:.1f} s")

                def converged() -> bool:
                    return (orch.state.primary("mail") == "mail-b"
                            and orch.state.epoch("mail") == 1
                            and orch.state.change("mail") is None
                            and shared_ip_holder(lab) == ["mail-b"]
                            and bool(load.acked_after(killed_at)))

                wait_for(converged, 60, "one primary serving with the shared IP, journal closed",
                         every_s=0.3)
                print(f"converged {time.time() - killed_at:.1f} s after the kill; first mail "
                      f"acknowledged again {load.acked_after(killed_at)[0].done - killed_at:.1f} s "
                      "after it")
            finally:
                load.stop()
            for e in orch.state.events("mail", count=300):
                if e.at > killed_at - 3 and e.kind != "decision":
                    print(f"  {e.at - killed_at:+7.2f} s {e.kind}: "
                          f"{e.data.get('reason') or e.data.get('summary') or ''}"[:160])
            promotions = [(e.data["new_primary"], e.data["epoch"]) for e in _events(orch, "promotion")]
            assert promotions == [("mail-b", 1)], promotions
            resumed = _events(orch, "resumed")
            print("the running playbook finished" if not resumed else
                  f"resumed: {resumed[0].data['reason']}")
            assert all(e.data["epoch"] == 1 for e in resumed)
            state_dir = lab.state_dir_of("mail-b")
            assert (open(f"{state_dir}/mail.epoch").read().strip(),
                    open(f"{state_dir}/mail.role").read().strip()) == ("1", "primary 1")
    finally:
        quorum.stop()
