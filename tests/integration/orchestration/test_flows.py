"""The topology-change flows against real Redis, with the playbook runner and the sync
engine replaced by recorders: what runs, in which order, with which epoch, and what the
history says. (The real playbooks and sync run in tests/scenarios.)"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import time

import pytest

from cr_orchestrator.runtime import cycle
from cr_orchestrator.runtime.commands import run_command
from cr_orchestrator.errors import StateError
from cr_orchestrator.act.sync.plan import SyncReport, TargetResult

from cr_orchestrator.state.lease import LeaseStore

from .conftest import make_topology

# every order carries the cluster's lease_ttl: a promotion writes the first lease with it
TTL = f"{make_topology().cluster('mail').policy.lease_ttl:g}"


@dataclass
class Result:
    ok: bool = True
    status: str = "successful"
    rc: int = 0
    duration_s: float = 1.5
    changed: int = 1
    failed_hosts: tuple = ()
    unreachable_hosts: tuple = ()
    artifact_dir: str | None = None
    summary: str = "ok=3 changed=1"
    refused: bool = False


@dataclass
class Recorder:
    calls: list = field(default_factory=list)
    fail_playbooks: set = field(default_factory=set)
    fail_sync_to: set = field(default_factory=set)

    def run_playbook(self, *, playbook, inventory, extravars, limit, check, timeout_s, on_event,
                     cancel, vault_password_file):
        self.calls.append(("playbook", playbook, limit, dict(extravars)))
        ok = playbook not in self.fail_playbooks
        return Result(ok=ok, status="successful" if ok else "failed", rc=0 if ok else 2,
                      summary="ok" if ok else "mail-a: service would not stop")

    def sync(self, *, topology, cluster, replica_set, source, epoch, store, now):
        self.calls.append(("sync", replica_set, source, epoch))
        targets = tuple(TargetResult(h, h not in self.fail_sync_to, 10, 1, 0.1,
                                     None if h not in self.fail_sync_to else "rsync rc 23")
                        for h in ("mail-b", "mail-dr"))
        return SyncReport(cluster, replica_set, source, epoch, now(), now() + 0.1, targets)

    def names(self):
        return [c[1] for c in self.calls]


@pytest.fixture
def rec():
    return Recorder()


@pytest.fixture
def env(redis_client, prefix, rec):
    e = cycle.Env(topology=make_topology(), redis=redis_client, prefix=prefix,
                  run_playbook=rec.run_playbook, sync=rec.sync, probe=lambda **kw: [])
    e.state.ensure(cluster="mail", configured_primary="mail-a")
    # as a running orchestrator has it: the hosts confirmed the seeded state long ago
    e.state.adopt(cluster="mail", primary="mail-a", epoch=0, expected_epoch=0)
    return e


def cluster(env):
    return env.topology.cluster("mail")


def test_failover_takes_a_new_epoch_before_the_playbook_runs(env, rec):
    out = cycle.failover(env, cluster(env), to="mail-b", expected_epoch=0, reason="mail-a down")
    assert out.ok and out.epoch == 1
    assert rec.calls == [("playbook", "failover", None, {
        "cr_cluster": "mail", "cr_new_primary": "mail-b", "cr_old_primary": "mail-a",
        "cr_epoch": 1, "cr_lease_ttl": TTL})]
    assert (env.state.primary("mail"), env.state.epoch("mail")) == ("mail-b", 1)
    # the run may have written mail-b's first lease: a later failover away waits for it
    assert LeaseStore(env.redis, env.prefix).last_grant("mail")[:2] == ("mail-b", 1)
    assert len(env.state.failovers("mail")) == 1
    assert [e.kind for e in env.state.events("mail")] == ["promotion", "playbook"]


def test_a_stale_decision_does_not_act(env, rec):
    env.state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0)
    with pytest.raises(StateError, match="moved on to epoch 1"):
        cycle.failover(env, cluster(env), to="mail-dr", expected_epoch=0, reason="x")
    assert rec.calls == []


def test_a_held_cluster_lock_stops_a_second_change(env, rec):
    with env.state.lock(cluster="mail"):
        with pytest.raises(StateError, match="cluster mail is locked"):
            cycle.failover(env, cluster(env), to="mail-b", expected_epoch=0, reason="x")
    assert rec.calls == []


def test_switchover_demotes_syncs_from_the_old_primary_then_moves_at_the_new_epoch(env, rec):
    out = cycle.switchover(env, cluster(env), to="mail-b", expected_epoch=0, reason="planned")
    assert out.ok, out.summary
    assert rec.calls == [
        ("playbook", "demote", "mail-a", {"cr_cluster": "mail", "cr_new_primary": "mail-b",
                                           "cr_old_primary": "mail-a", "cr_epoch": 0,
                                           "cr_lease_ttl": TTL}),
        ("sync", "maildata", "mail-a", 0),
        ("playbook", "switchover", None, {"cr_cluster": "mail", "cr_new_primary": "mail-b",
                                           "cr_old_primary": "mail-a", "cr_epoch": 1,
                                           "cr_lease_ttl": TTL}),
    ]
    assert "no write lost" in out.summary
    assert env.state.primary("mail") == "mail-b"


def test_switchover_aborts_and_restores_the_old_primary_when_the_final_sync_fails(env, rec):
    rec.fail_sync_to.add("mail-b")
    out = cycle.switchover(env, cluster(env), to="mail-b", expected_epoch=0, reason="planned")
    assert not out.ok
    assert "final sync of maildata to mail-b failed" in out.summary
    assert "mail-a serving again" in out.summary
    assert rec.names() == ["demote", "maildata", "promote", "switch_ip"]
    assert rec.calls[2][3] == {"cr_cluster": "mail", "cr_new_primary": "mail-a", "cr_epoch": 0,
                               "cr_lease_ttl": TTL}
    assert (env.state.primary("mail"), env.state.epoch("mail")) == ("mail-a", 0)
    assert env.state.events("mail")[-1].kind == "aborted"


def test_switchover_stops_when_the_old_primary_cannot_be_demoted(env, rec):
    rec.fail_playbooks.add("demote")
    out = cycle.switchover(env, cluster(env), to="mail-b", expected_epoch=0, reason="planned")
    assert not out.ok and "demoting mail-a failed" in out.summary
    assert "sync" not in [c[0] for c in rec.calls]
    assert env.state.epoch("mail") == 0


def test_restart_counts_an_attempt_and_sends_a_one_host_order(env, rec):
    out = cycle.restart_service(env, cluster(env), host="mail-a", expected_epoch=0, reason="r")
    assert out.ok
    assert rec.calls == [("playbook", "service", "mail-a", {
        "cr_cluster": "mail", "cr_new_primary": "mail-a", "cr_epoch": 0, "cr_lease_ttl": TTL,
        "cr_service_action": "restarted"})]
    assert env.state.restarts("mail") == 1


def test_rejoin_demotes_the_old_primary_and_resync_copies_from_the_live_one(env, rec):
    env.state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0)
    out = cycle.demote_rejoined(env, cluster(env), host="mail-a", expected_epoch=1, reason="r")
    assert out.ok
    assert rec.calls[0] == ("playbook", "demote", "mail-a", {
        "cr_cluster": "mail", "cr_new_primary": "mail-b", "cr_old_primary": "mail-a",
        "cr_epoch": 1, "cr_lease_ttl": TTL})
    with pytest.raises(StateError, match="live primary"):
        cycle.demote_rejoined(env, cluster(env), host="mail-b", expected_epoch=1, reason="r")
    out = cycle.resync(env, cluster(env), host="mail-a", reason="behind")
    assert rec.calls[-1] == ("sync", "maildata", "mail-b", 1)


def test_operator_commands_pause_and_failover_to_a_replica(env, rec):
    assert run_command(env, command="pause", cluster="mail").ok
    assert env.state.paused("mail")
    run_command(env, command="resume", cluster="mail")
    assert not env.state.paused("mail")
    # nothing observed: mail-dr's liveness is unknown, so an operator may not pick it blind
    with pytest.raises(StateError, match="cannot failover mail to mail-dr: mail-dr is unknown"):
        run_command(env, command="failover", cluster="mail", to="mail-dr")
    kinds = [e.data.get("command") for e in env.state.events("mail") if e.kind == "operator"]
    assert kinds == ["pause", "resume"]
    with pytest.raises(StateError, match="nothing to fail back"):
        run_command(env, command="failback", cluster="mail")


def test_a_second_round_of_the_same_cluster_is_skipped_while_one_runs(env, rec):
    with env.state.lock(cluster="mail", kind="round"):
        out = cycle.probe_round(env, "mail")
    assert out.ok and out.summary == "skipped: the previous round of mail is still running"
    assert env.state.events("mail") == []


def test_a_round_decides_records_and_acts(env, rec):
    # no observations at all: the primary is unknown, so the round waits and records why
    out = cycle.probe_round(env, "mail")
    assert out.decision.action.value == "none"
    assert "waiting: primary mail-a is unknown" in out.summary
    assert env.state.last_decision("mail")["members"] == {
        "mail-a": "host unknown", "mail-b": "host unknown", "mail-dr": "host unknown"}
    assert rec.calls == []


def test_switchover_waits_for_a_running_sync_then_copies_what_it_missed(env, rec):
    import threading
    import time

    release = threading.Event()

    def scheduled_sync():
        with env.state.lock(cluster="mail", replica_set="maildata", ttl_s=10):
            release.wait(5)

    t = threading.Thread(target=scheduled_sync)
    t.start()
    time.sleep(0.2)
    threading.Timer(0.5, release.set).start()
    out = cycle.switchover(env, cluster(env), to="mail-b", expected_epoch=0, reason="planned")
    t.join()
    assert out.ok, out.summary
    assert rec.names() == ["demote", "maildata", "switchover"]


def test_switchover_undoes_the_demotion_when_the_sync_is_refused(env, rec):
    from cr_orchestrator.errors import SyncError

    def refuse(**kwargs):
        raise SyncError("refusing to sync mail from mail-a at epoch 0: epoch 3 already synced")

    env = replace(env, sync=refuse)
    out = cycle.switchover(env, cluster(env), to="mail-b", expected_epoch=0, reason="planned")
    assert not out.ok and "the final sync failed: refusing to sync" in out.summary
    assert rec.names() == ["demote", "promote", "switch_ip"]
    assert env.state.primary("mail") == "mail-a"


def test_a_failing_demotion_backs_off_instead_of_running_every_round(env, rec):
    from cr_orchestrator.decide.rules import Action, ClusterSnapshot, Decision

    rec.fail_playbooks.add("demote")
    now = [1000.0]
    env = replace(env, clock=lambda: now[0])
    decision = Decision(Action.DEMOTE_REJOINED, "mail-b", "demoting mail-b: it is serving")
    snap = ClusterSnapshot.empty("mail", now=now[0])
    first = cycle.act(env, cluster(env), decision, snap)
    assert not first.ok and "(next try in 4 s)" in first.summary
    now[0] += 2
    held = cycle.act(env, cluster(env), decision, snap)
    assert "not retrying demote_rejoined of mail-b yet: it failed 1 time(s)" in held.summary
    assert rec.names() == ["demote"]
    now[0] += 3
    second = cycle.act(env, cluster(env), decision, snap)
    assert "(next try in 8 s)" in second.summary and rec.names() == ["demote", "demote"]
    rec.fail_playbooks.clear()
    now[0] += 9
    assert cycle.act(env, cluster(env), decision, snap).ok
    assert env.state.backoff(cluster="mail", action="demote_rejoined", target="mail-b") == (0, 0.0)


def test_failover_waits_for_a_running_sync_and_gives_up_after_a_bound(env, rec, monkeypatch):
    from cr_orchestrator.act import changes

    monkeypatch.setattr(changes, "FAILOVER_SYNC_WAIT_S", 0.3)
    with env.state.lock(cluster="mail", replica_set="maildata"):
        with pytest.raises(StateError, match="not promoting mail-b yet: a sync of maildata is "
                                             "still running"):
            cycle.failover(env, cluster(env), to="mail-b", expected_epoch=0, reason="down")
    assert env.state.epoch("mail") == 0 and rec.calls == []
    # once the sync is over, the failover goes ahead
    assert cycle.failover(env, cluster(env), to="mail-b", expected_epoch=0, reason="down").ok


def test_failover_from_a_confirmed_down_host_still_waits_for_a_running_sync(env, rec,
                                                                           monkeypatch):
    from cr_orchestrator.act import changes
    from cr_orchestrator.errors import CrError

    monkeypatch.setattr(changes, "FAILOVER_SYNC_WAIT_S", 0.5)
    # a sync "from" mail-a still holds the set lock when mail-a's host is confirmed down:
    # in the lab such a sync ended after the promotion and its rsync --delete removed the
    # new primary's first mail, so the failover waits (bounded) all the same
    with env.state.lock(cluster="mail", replica_set="maildata"):
        with pytest.raises(CrError, match="not promoting mail-b yet"):
            cycle.failover(env, cluster(env), to="mail-b", expected_epoch=0, reason="down",
                           old_primary_down=True)
    assert env.state.epoch("mail") == 0 and rec.calls == []
    out = cycle.failover(env, cluster(env), to="mail-b", expected_epoch=0, reason="down",
                         old_primary_down=True)
    assert out.ok and env.state.epoch("mail") == 1
    assert rec.calls[0][3]["cr_old_primary_down"] is True


def test_failover_from_a_confirmed_down_host_to_a_linux_take_over_does_not_wait(env, rec,
                                                                              monkeypatch):

    from cr_orchestrator.act import changes
    from cr_orchestrator import model as m

    # With control commands on a Linux target the take-over script itself ends the rsync
    # still receiving from the dead primary before the service starts: no need to sit out
    # the stale sync's ssh timeout (the outage clients see).
    mail = cluster(env)
    controlled = replace(mail, services=tuple(
        replace(s, control=m.ServiceControl("mailctl start", "mailctl stop", "mailctl status"))
        for s in mail.services))
    env = replace(env, topology=replace(env.topology, clusters={**env.topology.clusters, "mail": controlled}))
    monkeypatch.setattr(changes, "FAILOVER_SYNC_WAIT_S", 30)
    with env.state.lock(cluster="mail", replica_set="maildata"):
        started = time.monotonic()
        out = cycle.failover(env, controlled, to="mail-b", expected_epoch=0, reason="down",
                             old_primary_down=True)
        waited = time.monotonic() - started
    assert out.ok and env.state.epoch("mail") == 1 and waited < 10, (out, waited)
    assert rec.calls[0][3]["cr_old_primary_down"] is True
    # a service-only failure (host up) still waits: its sync can still write
    with env.state.lock(cluster="mail", replica_set="maildata"):
        monkeypatch.setattr(changes, "FAILOVER_SYNC_WAIT_S", 0.3)
        with pytest.raises(StateError, match="not promoting mail-a yet"):
            cycle.failover(env, controlled, to="mail-a", expected_epoch=1, reason="down")


def test_no_scheduled_sync_runs_while_a_failover_moves_the_primary(env, rec):
    seen = []

    def playbook(**kwargs):
        # in the middle of the failover playbook a scheduled sync comes in: it must not run
        try:
            cycle.sync_sets(env, cluster(env), sets=["maildata"])
            seen.append("sync ran")
        except StateError as exc:
            seen.append(str(exc))
        return rec.run_playbook(**kwargs)

    env = replace(env, run_playbook=playbook)
    assert cycle.failover(env, cluster(env), to="mail-b", expected_epoch=0, reason="down").ok
    assert seen and "set maildata of mail is locked" in seen[0]
    cycle.sync_sets(env, cluster(env), sets=["maildata"])
    assert rec.calls[-1] == ("sync", "maildata", "mail-b", 1)  # read after the lock: new primary


def test_a_round_that_overlapped_a_change_does_not_decide(env, rec):
    def probe_during_a_failover(**kwargs):
        with env.state.lock(cluster="mail"):  # another worker's change runs meanwhile
            env.state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0)
        return []

    env = replace(env, probe=probe_during_a_failover)
    out = cycle.probe_round(env, "mail")
    assert out.decision is None
    assert out.summary == "observed mail; it moved to epoch 1 meanwhile: not deciding"
    assert env.state.last_decision("mail") is None


def test_a_round_that_starts_while_a_change_runs_does_not_decide(env, rec):
    with env.state.lock(cluster="mail"):
        out = cycle.probe_round(env, "mail")
    assert out.decision is None and "a topology change holds the lock" in out.summary


def test_members_serving_without_being_primary_are_named_for_the_sync_guard(env):
    env.state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0)
    env.state.record_decision(cluster="mail", action="demote_rejoined", target="mail-a",
                              reason="demoting mail-a", epoch=1, now=1.0,
                              members={"mail-a": "up", "mail-b": "up", "mail-dr": "service down"})
    assert cycle.serving_elsewhere(env, cluster(env)) == ["mail-a"]


def test_a_member_whose_service_answered_lately_is_named_before_its_verdict_catches_up(env):
    import time

    from cr_orchestrator.observe.health import Health, Observation
    from cr_orchestrator.observe.store import ObservationStore

    env.state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0)
    # the last round still calls mail-a down (it just came back, autostarted)
    env.state.record_decision(cluster="mail", action="none", target=None, reason="mail-b up",
                              epoch=1, now=1.0, members={"mail-a": "host down", "mail-b": "up",
                                                         "mail-dr": "service down"})
    store = ObservationStore(client=env.redis, prefix=env.prefix)
    now = time.time()
    store.add(observations=[
        Observation("mail-dr", "orchestrator", "service:mail", Health.OK, now - 60),  # old
        Observation("mail-b", "orchestrator", "service:mail", Health.OK, now - 0.5),
    ])
    assert cycle.serving_elsewhere(env, cluster(env)) == []
    store.add(observations=[Observation("mail-a", "orchestrator", "service:mail", Health.OK,
                                        now - 0.5)])
    assert cycle.serving_elsewhere(env, cluster(env)) == ["mail-a"]


@pytest.mark.parametrize(("host", "service", "confirmed", "passed"), [
    ("down", "unknown", True, True),  # host gone, a second vantage agrees: skip demoting it
    ("down", "down", True, True),
    ("up", "down", True, False),  # service-only failure: the host answers, demote it
    ("down", "unknown", False, False),  # one vantage only: never assume it is gone
])
def test_old_primary_down_is_passed_to_the_failover_playbook_only_when_its_host_is_confirmed_down(
        env, rec, host, service, confirmed, passed):
    from cr_orchestrator.decide.rules import Action, ClusterSnapshot, Decision, MemberState
    from cr_orchestrator.observe.health import Liveness
    from cr_orchestrator.model import Role

    old = MemberState("mail-a", Role.PRIMARY, host_liveness=Liveness(host),
                      service_liveness=Liveness(service), confirmed=confirmed, failures=4,
                      vantages=2 if confirmed else 1)
    new = MemberState("mail-b", Role.SECONDARY, host_liveness=Liveness.UP,
                      service_liveness=Liveness.DOWN, lag_s=3.0)
    snapshot = ClusterSnapshot(cluster="mail", members=(old, new), primary="mail-a", epoch=0,
                               now=1000.0)
    out = cycle.act(env, cluster(env), Decision(Action.FAILOVER, "mail-b", "mail-a down"),
                    snapshot)
    assert out.ok, out.summary
    (_, playbook, _, extravars), = rec.calls
    assert playbook == "failover"
    assert extravars.get("cr_old_primary_down", False) is passed
    assert ("cr_old_primary_down" in extravars) is passed  # absent, not false, otherwise


def test_reassert_runs_switch_ip_on_the_live_primary_at_the_same_epoch(env, rec):
    out = cycle.reassert(env, cluster(env), host="mail-a", expected_epoch=0,
                         reason="the shared IP failed 3 probes")
    assert out.ok and env.state.epoch("mail") == 0, out
    assert rec.names() == ["switch_ip"]
    extravars = rec.calls[0][3]
    assert (extravars["cr_new_primary"], extravars["cr_epoch"]) == ("mail-a", 0)
    assert "cr_old_primary" not in extravars  # nothing is taken from anybody
    with pytest.raises(StateError, match="mail-b is not the live primary of mail"):
        cycle.reassert(env, cluster(env), host="mail-b", expected_epoch=0, reason="x")
    with pytest.raises(StateError, match="moved on to epoch 0"):
        cycle.reassert(env, cluster(env), host="mail-a", expected_epoch=3, reason="x")


def test_a_seeded_state_holds_until_every_members_records_were_read(env, rec):
    env.redis.delete(env.state.key("mail"))  # Redis lost its keys
    out = cycle.probe_round(env, "mail")
    assert out.decision.action.value == "hold"
    assert ("Redis had no state for mail and was seeded from the inventory (mail-a at epoch "
            "0); waiting to read the epoch records of mail-a, mail-b, mail-dr") in out.summary
    assert env.state.seeded("mail") and rec.calls == []


def test_a_failover_journals_its_change_and_closes_it_when_the_playbook_ends(env, rec):
    seen = []
    real = rec.run_playbook

    def looking(**kw):
        seen.append(env.state.change("mail"))  # what a dead worker would leave behind
        return real(**kw)

    env = replace(env, run_playbook=looking)
    out = cycle.failover(env, cluster(env), to="mail-b", expected_epoch=0, reason="mail-a down",
                         old_primary_down=True)
    assert out.ok
    assert seen[0]["epoch"] == 1 and seen[0]["new_primary"] == "mail-b"
    assert seen[0]["old_primary_down"] is True and seen[0]["kind"] == "failover"
    assert env.state.change("mail") is None


def test_an_interrupted_failover_is_resumed_at_the_same_epoch(env, rec):
    # the promotion landed with its journal entry, then the worker died (no playbook ran)
    env.state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0, change={
        "kind": "failover", "playbook": "failover", "old_primary": "mail-a",
        "old_primary_down": True, "reason": "mail-a down"})
    out = cycle.resume(env, cluster(env), expected_epoch=1, reason="resuming")
    assert out.ok, out.summary
    # the test topology's service has no control commands: the roles take over, as
    # Python decided (the playbooks follow cr_fast_take_over, they do not re-derive it)
    assert rec.calls == [("playbook", "failover", None, {
        "cr_cluster": "mail", "cr_new_primary": "mail-b", "cr_old_primary": "mail-a",
        "cr_epoch": 1, "cr_lease_ttl": TTL, "cr_old_primary_down": True,
        "cr_fast_take_over": False})]
    assert env.state.epoch("mail") == 1 and env.state.change("mail") is None
    kinds = [e.kind for e in env.state.events("mail")]
    assert kinds == ["resumed", "playbook"]
    with pytest.raises(StateError, match="nothing to resume"):
        cycle.resume(env, cluster(env), expected_epoch=1, reason="again")


def test_a_playbook_whose_lease_is_lost_is_cancelled_and_its_change_kept(env, rec):
    def lose_the_lock(**kw):
        env.redis.set(env.state.lock_key("mail"), "another-worker", px=5000)
        assert kw["cancel"].wait(5), "the playbook was not told to stop"
        return Result(ok=False, status="canceled", rc=-1, summary="canceled")

    env = replace(env, run_playbook=lose_the_lock)
    out = cycle.failover(env, cluster(env), to="mail-b", expected_epoch=0, reason="down")
    assert not out.ok
    assert env.state.change("mail")["epoch"] == 1  # left for the next holder to resume


def test_an_operator_command_issued_before_a_failover_is_refused_after_it(env, rec):
    from cr_orchestrator.runtime.commands import Seen

    seen = Seen("mail-a", 0)  # what `crctl status` showed when the operator typed it
    cycle.failover(env, cluster(env), to="mail-b", expected_epoch=0, reason="mail-a down")
    rec.calls.clear()
    with pytest.raises(StateError) as refused:
        run_command(env, command="switchover", cluster="mail", to="mail-dr", seen=seen)
    assert ("refused: switchover of mail was issued when mail-a was primary at epoch 0, but "
            "the cluster has moved since: mail-b is primary at epoch 1 (failover at ") \
        in str(refused.value)
    assert "mail-a down" in str(refused.value) and "--force" in str(refused.value)
    assert rec.calls == [] and env.state.primary("mail") == "mail-b"
    with pytest.raises(StateError, match="refused: pause of mail was issued"):
        run_command(env, command="pause", cluster="mail", seen=seen)
    assert not env.state.paused("mail")
    # --force: acted on as the cluster is now, and the history says it was forced
    assert run_command(env, command="pause", cluster="mail", seen=seen, force=True).ok
    forced = [e.data for e in env.state.events("mail") if e.data.get("forced")]
    assert forced and "issued when mail-a was primary at epoch 0, carried out with mail-b " \
                      "at epoch 1" in forced[0]["reason"]


def test_a_switchover_is_not_started_while_the_primary_is_failing(env, rec):
    from cr_orchestrator.runtime.commands import Seen

    # nothing observed answers: the detector cannot call mail-a up
    with pytest.raises(StateError) as refused:
        run_command(env, command="switchover", cluster="mail", to="mail-b",
                    seen=Seen("mail-a", 0))
    assert "not starting a switchover of mail: its primary mail-a is unknown (host)" \
        in str(refused.value)
    assert "crctl failover mail --to HOST" in str(refused.value)
    assert rec.calls == [] and env.state.lock_holder("mail") is None


def test_observe_only_reads(env, rec):
    """observe() writes nothing to Redis: no seeding, no observations, no clocks; the
    round's record step does, after decide."""
    from cr_orchestrator.observe.health import ORCHESTRATOR, Health, Observation

    env.redis.delete(env.state.key("mail"))
    env = replace(env, probe=lambda **kw: [Observation("mail-a", ORCHESTRATOR, "host", Health.OK, 1.0)])

    def everything():
        return {k: env.redis.dump(k) for k in env.redis.scan_iter(match=f"{env.prefix}:*")}

    before = everything()
    observed = cycle.observe(env, cluster(env))
    assert everything() == before
    assert observed.snapshot.seeded and observed.snapshot.primary == "mail-a"
    assert len(observed.observations) == 1
    cycle.record(env, cluster(env), observed, None)  # observations only
    assert everything() != before and env.state.primary("mail") is None


def test_crctl_adopt_records_the_operators_primary_at_the_newest_epoch_known(env, rec):
    """The operator's way out of a hosts-first hold: no host is touched, Redis says the
    chosen member is primary at the newest epoch Redis or any member's records know."""
    from cr_orchestrator.observe.health import ORCHESTRATOR, Health, Observation

    env.redis.delete(env.state.key("mail"))  # lost state
    records = {"mail-a": {"epoch": "4", "role": "secondary 4"},
               "mail-b": {"epoch": "5", "role": "secondary 5"},
               "mail-dr": {"epoch": None, "role": None}}
    env = replace(env, probe=lambda **kw: [
        Observation(h, ORCHESTRATOR, "host", Health.OK, 1.0, detail={"records": r})
        for h, r in records.items()])
    out = run_command(env, command="adopt", cluster="mail", to="mail-a")
    assert out.ok and rec.calls == []
    assert (env.state.primary("mail"), env.state.epoch("mail")) == ("mail-a", 5)
    assert not env.state.seeded("mail")
    said = [e.data["reason"] for e in env.state.events("mail") if e.kind == "adopted"]
    assert said == ["operator adopt of mail: mail-a is the primary at epoch 5 (Redis had "
                    "only the inventory's word, mail-a at epoch 0)"]


def _records_probe(records: dict):
    from cr_orchestrator.observe.health import ORCHESTRATOR, Health, Observation

    def probe(**kw):
        return [Observation(h, ORCHESTRATOR, "host", Health.OK, 1.0, detail={"records": r})
                for h, r in records.items()]
    return probe


def test_crctl_recover_rebuilds_primary_and_epoch_from_the_hosts_records(env, rec):
    """Redis flushed while mail-b is primary at epoch 3: `crctl recover` reads the
    members' records, says what it found, and re-seeds Redis from the newest claim
    without touching any host."""
    env.redis.delete(env.state.key("mail"))
    env = replace(env, probe=_records_probe({
        "mail-a": {"epoch": "3", "role": "secondary 3"},
        "mail-b": {"epoch": "3", "role": "primary 3"},
        "mail-dr": {"epoch": "2", "role": "secondary 2"}}))
    out = run_command(env, command="recover", cluster="mail")
    assert out.ok and rec.calls == [], out.summary
    assert (env.state.primary("mail"), env.state.epoch("mail")) == ("mail-b", 3)
    assert not env.state.seeded("mail")
    assert "mail-a: epoch 3, secondary since epoch 3" in out.summary
    assert "mail-b: epoch 3, primary since epoch 3" in out.summary
    adopted = [e.data["reason"] for e in env.state.events("mail") if e.kind == "adopted"]
    assert len(adopted) == 1 and "re-seeding Redis from the hosts: adopting mail-b" in adopted[0]
    # once Redis holds it, there is nothing more to recover
    again = run_command(env, command="recover", cluster="mail")
    assert again.ok and "nothing to recover in mail: Redis says mail-b at epoch 3" in again.summary


def test_crctl_recover_refuses_when_two_hosts_claim_the_newest_epoch(env, rec):
    env.redis.delete(env.state.key("mail"))
    env = replace(env, probe=_records_probe({
        "mail-a": {"epoch": "3", "role": "primary 3"},
        "mail-b": {"epoch": "3", "role": "primary 3"},
        "mail-dr": {"epoch": None, "role": None}}))
    with pytest.raises(StateError) as refused:
        run_command(env, command="recover", cluster="mail")
    assert "mail-a and mail-b both claim the primary role" in str(refused.value)
    assert "crctl adopt mail" in str(refused.value)
    assert env.state.epoch("mail") == 0 and rec.calls == []


def test_the_journal_follows_the_playbook_and_a_resume_says_where_it_had_got(env, rec):
    """A failover's journal moves through its steps as the playbook reports them; when
    its worker dies after the fence, the resume's history names that step."""
    from cr_orchestrator.state.journal import Step

    env.state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0, change={
        "kind": "failover", "playbook": "failover", "old_primary": "mail-a",
        "old_primary_down": True, "reason": "mail-a down"})
    assert env.state.change("mail").get("step") is None
    assert env.state.journal_step("mail", 1, Step.OLD_PRIMARY_FENCED)
    assert not env.state.journal_step("mail", 1, Step.EPOCH_TAKEN)  # never back
    assert not env.state.journal_step("mail", 7, Step.VERIFIED)  # another change's epoch
    assert env.state.change("mail")["step"] == "old_primary_fenced"

    def run_playbook(**kw):
        for task, host, role in (("Start each service that does not run", "mail-b", "cr_service"),
                                 ("Check that clients get an answer", "mail-b", None)):
            kw["on_event"]({"event": "runner_on_ok",
                            "event_data": {"task": task, "host": host, "role": role}})
            seen.append(env.state.change("mail")["step"])
        return rec.run_playbook(**kw)

    seen: list = []
    env = replace(env, run_playbook=run_playbook)
    out = cycle.resume(env, cluster(env), expected_epoch=1, reason="resuming")
    assert out.ok and seen == ["promoted", "verified"]
    resumed = [e.data for e in env.state.events("mail") if e.kind == "resumed"]
    assert resumed[0]["step"] == "old primary fenced"
    assert "(the first run had reached: old primary fenced)" in resumed[0]["reason"]
    assert env.state.change("mail") is None  # done: the journal is closed


def test_a_scheduled_sync_does_not_wait_on_a_primary_the_last_round_could_not_reach(env, rec):
    env.state.record_decision(cluster="mail", action="none", target=None, reason="r", epoch=0,
                              now=1.0, members={"mail-a": "host suspect", "mail-b": "up"})
    assert cycle.source_unreachable(env, cluster(env)) == "host suspect"
    env.state.record_decision(cluster="mail", action="none", target=None, reason="r", epoch=0,
                              now=2.0, members={"mail-a": "service down", "mail-b": "up"})
    assert cycle.source_unreachable(env, cluster(env)) is None
