"""Observations → detector → snapshot → decide, all pure: what a probe round concludes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cr_orchestrator import model as m
from cr_orchestrator.decide.rules import Action, decide
from cr_orchestrator.decide.detector import assess
from cr_orchestrator.observe.health import ORCHESTRATOR, Health, Liveness, Observation
from cr_orchestrator.decide.snapshot import build_snapshot, member_lags
from cr_orchestrator.state.freshness import Freshness

SMTP = "check:smtp:25@{}"


def cluster() -> m.Cluster:
    return m.Cluster(
        "mail", "cr_cluster_mail",
        (m.Member("mail-a", m.Role.PRIMARY, 100), m.Member("mail-b", m.Role.SECONDARY, 50),
         m.Member("mail-dr", m.Role.REPLICA)),
        (m.Service("mail", (m.Check(m.CheckKind.SMTP, 25),)),), m.ClientSwitch(),
        (m.ReplicaSet("maildata", "/srv/mail", (m.ReplicaTarget("mail-b", "/srv/mail"),
                                                 m.ReplicaTarget("mail-dr", "/srv/mail")), 30),),
        m.Policy())


def round_of(at: float, *, a_host: Health, a_service: Health, peer_sees_a: Health,
             serving=("mail-a",)) -> list[Observation]:
    obs = []
    for host in ("mail-a", "mail-b", "mail-dr"):
        host_health = a_host if host == "mail-a" else Health.OK
        service = a_service if host == "mail-a" else (Health.OK if host in serving else Health.DOWN)
        obs.append(Observation(host, ORCHESTRATOR, "host", host_health, at))
        if host_health is not Health.UNREACHABLE:
            obs.append(Observation(host, ORCHESTRATOR, "service:mail", service, at,
                                   error=None if service is Health.OK else "stopped"))
        check = Health.OK if service is Health.OK and host_health is Health.OK else \
            Health.UNREACHABLE
        obs.append(Observation(host, ORCHESTRATOR, SMTP.format(host), check, at,
                               error=None if check is Health.OK else "refused",
                               detail={"service": "mail"}))
    for peer in ("mail-b", "mail-dr"):
        obs.append(Observation("mail-a", peer, SMTP.format("mail-a"), peer_sees_a, at,
                               error=None if peer_sees_a is Health.OK else "refused",
                               detail={"service": "mail"}))
    return obs


def snapshot_after(rounds, *, restarts=0, lags=None):
    c = cluster()
    window = [o for i, kw in enumerate(rounds) for o in round_of(100.0 + 2 * i, **kw)]
    now = 100.0 + 2 * (len(rounds) - 1) + 0.5
    per_set = {"maildata": {"mail-b": Freshness("mail-b", lag_s=4.0),
                            "mail-dr": Freshness("mail-dr", lag_s=25.0)}}
    lags = lags or member_lags(cluster=c, per_set=per_set, primary="mail-a")
    return build_snapshot(cluster=c, assessment=assess(cluster=c, observations=window, now=now),
                          primary="mail-a", epoch=2, paused=False, lags=lags,
                          restart_attempts=restarts, recent_failovers=(),
                          failback_in_sync_since=None, now=now), c.policy


OK = dict(a_host=Health.OK, a_service=Health.OK, peer_sees_a=Health.OK)
CRASHED = dict(a_host=Health.UNREACHABLE, a_service=Health.UNREACHABLE,
               peer_sees_a=Health.UNREACHABLE)
STOPPED = dict(a_host=Health.OK, a_service=Health.DOWN, peer_sees_a=Health.UNREACHABLE)


def test_healthy_cluster_does_nothing():
    snap, policy = snapshot_after([OK, OK, OK])
    d = decide(snap, policy)
    assert d.action is Action.NONE, d.reason
    assert d.reason.startswith("mail-a is primary (epoch 2) and up; mail-b replica 4 s behind")


def test_crash_seen_from_two_vantages_for_three_rounds_fails_over_to_the_secondary():
    snap, policy = snapshot_after([OK, OK, CRASHED, CRASHED, CRASHED])
    d = decide(snap, policy)
    assert (d.action, d.target) == (Action.FAILOVER, "mail-b"), d.reason
    assert "mail-a down for 3 probes from 3 vantages; mail-b replica 4 s behind" in d.reason


def test_one_failed_round_is_only_suspect():
    snap, policy = snapshot_after([OK, OK, CRASHED])
    assert decide(snap, policy).action is Action.NONE


def test_stopped_service_is_restarted_first_then_failed_over():
    rounds = [OK, OK, STOPPED, STOPPED, STOPPED]
    snap, policy = snapshot_after(rounds)
    d = decide(snap, policy)
    assert (d.action, d.target) == (Action.RESTART_SERVICE, "mail-a"), d.reason
    snap, policy = snapshot_after(rounds, restarts=1)
    d = decide(snap, policy)
    assert (d.action, d.target) == (Action.FAILOVER, "mail-b"), d.reason


def test_a_secondary_serving_is_demoted():
    serving = [dict(OK, serving=("mail-a", "mail-b"))] * 3
    snap, policy = snapshot_after(serving)
    d = decide(snap, policy)
    assert (d.action, d.target) == (Action.DEMOTE_REJOINED, "mail-b"), d.reason


def test_never_synced_member_has_no_lag_and_the_primary_is_the_source():
    c = cluster()
    lags = member_lags(cluster=c, per_set={"maildata": {"mail-b": Freshness("mail-b", lag_s=3.0)}},
                       primary="mail-a")
    assert lags == {"mail-a": 0.0, "mail-b": 3.0, "mail-dr": None}
    no_sets = replace(c, replica_sets=())
    assert member_lags(cluster=no_sets, per_set={}, primary="mail-a")["mail-b"] is None


def test_primary_serving_while_its_shared_ip_fails_is_reasserted():
    c = replace(cluster(), switch=m.ClientSwitch(shared_ip=m.SharedIp("198.18.0.100/24", "eth0")))
    window = []
    for i, ok in enumerate([True, True, False, False, False]):
        at = 100.0 + 2 * i
        window += round_of(at, **OK)
        window.append(Observation("mail-a", ORCHESTRATOR, SMTP.format("198.18.0.100"),
                                  Health.OK if ok else Health.UNREACHABLE, at,
                                  error=None if ok else "no answer within 0.8s",
                                  detail={"service": "mail", "target": "shared_ip"}))
    now = 108.5
    snap = build_snapshot(cluster=c, assessment=assess(cluster=c, observations=window, now=now),
                          primary="mail-a", epoch=2, paused=False,
                          lags={"mail-a": 0.0, "mail-b": 4.0, "mail-dr": 25.0},
                          restart_attempts=0, recent_failovers=(), failback_in_sync_since=None,
                          now=now)
    d = decide(snap, c.policy)
    assert (d.action, d.target) == (Action.REASSERT, "mail-a"), d.reason
    assert "the shared IP 198.18.0.100 failed 3 probes in a row" in d.reason


def test_records_in_the_host_probes_make_redis_adopt_the_promoted_host():
    """Redis lost its keys (seeded: mail-a at epoch 0) while mail-b serves; mail-b's
    probe reports "primary 5": the round adopts mail-b at epoch 5, never demotes it."""
    from cr_orchestrator.decide.snapshot import latest_records

    c = cluster()
    records = {"mail-a": {"epoch": "5", "role": "secondary 5"},
               "mail-b": {"epoch": "5", "role": "primary 5"},
               "mail-dr": {"epoch": None, "role": None}}
    window = []
    for i in range(4):
        for o in round_of(100.0 + 2 * i, a_host=Health.OK, a_service=Health.DOWN,
                          peer_sees_a=Health.UNREACHABLE, serving=("mail-b",)):
            if o.subject == "host":
                o = replace(o, detail={"records": records[o.host]})
            window.append(o)
    now = 107.0
    found = latest_records(cluster="mail", observations=window)
    assert found["mail-b"].claims_primary_at == 5 and found["mail-dr"].epoch is None
    snapshot = build_snapshot(cluster=c, assessment=assess(cluster=c, observations=window,
                                                           now=now),
                              primary="mail-a", epoch=0, paused=False,
                              lags={"mail-a": 0.0, "mail-b": None, "mail-dr": None},
                              restart_attempts=0, recent_failovers=(),
                              failback_in_sync_since=None, now=now, records=found, seeded=True)
    decision = decide(snapshot, c.policy)
    assert (decision.action, decision.target, decision.epoch) == (Action.ADOPT, "mail-b", 5)
    # without the records (an older probe) the same round would demote mail-b
    blind = replace(snapshot, seeded=False, members=tuple(
        replace(mem, record=None) for mem in snapshot.members))
    assert decide(blind, c.policy).action is Action.DEMOTE_REJOINED


def _snapshot_with(*, judged=True, change=None):
    """The snapshot of three OK rounds (or of no verdicts at all: ``judged=False``)
    with ``change`` as the journal Redis holds."""
    from cr_orchestrator.decide.snapshot import interrupted_change

    c = cluster()
    window = [o for i in range(3) for o in round_of(100.0 + 2 * i, **OK)]
    now = 104.5
    assessment = assess(cluster=c, observations=window, now=now) if judged else None
    return build_snapshot(cluster=c, assessment=assessment, primary="mail-a", epoch=4,
                          paused=False, lags={"mail-a": 0.0, "mail-b": 4.0, "mail-dr": 25.0},
                          restart_attempts=0, recent_failovers=(),
                          failback_in_sync_since=None, now=now,
                          interrupted=interrupted_change(change)), c.policy


JOURNAL_ROWS = [
    # id, the change Redis journaled, action, target, reason fragments
    ("nothing journaled: the round goes on", None, Action.NONE, None,
     ["mail-a is primary (epoch 4) and up"]),
    ("an empty journal is no change", {}, Action.NONE, None,
     ["mail-a is primary (epoch 4) and up"]),
    ("a change at the current epoch whose worker died is resumed",
     {"kind": "switchover", "new_primary": "mail-a", "old_primary": "mail-b", "epoch": 4,
      "at": 94.5, "old_primary_down": False, "reason": "operator"},
     Action.RESUME, "mail-a",
     ["resuming the switchover to mail-a at epoch 4", "started 10 s ago and never finished"]),
    ("a journal without a start time counts from the epoch of time",
     {"kind": "failover", "new_primary": "mail-a", "epoch": 4},
     Action.RESUME, "mail-a", ["resuming the failover to mail-a", "started 104 s ago"]),
    ("a change journaled at an older epoch is not resumed",
     {"kind": "failover", "new_primary": "mail-a", "epoch": 3, "at": 90.0},
     Action.NONE, None, ["mail-a is primary (epoch 4) and up"]),
]


@pytest.mark.parametrize("change,action,target,fragments", [r[1:] for r in JOURNAL_ROWS],
                         ids=[r[0] for r in JOURNAL_ROWS])
def test_a_journaled_change_from_redis(change, action, target, fragments):
    snap, policy = _snapshot_with(change=change)
    d = decide(snap, policy)
    assert (d.action, d.target) == (action, target), d.reason
    for fragment in fragments:
        assert fragment in d.reason


def test_no_verdicts_yet_means_waiting_not_acting():
    """Before the detector has judged anyone (no assessment) every member is unknown: the
    round waits on the primary and keeps what the replication store said."""
    snap, policy = _snapshot_with(judged=False)
    assert {mem.host: (mem.host_liveness, mem.service_liveness, mem.lag_s)
            for mem in snap.members} == {
        "mail-a": (Liveness.UNKNOWN, Liveness.UNKNOWN, 0.0),
        "mail-b": (Liveness.UNKNOWN, Liveness.UNKNOWN, 4.0),
        "mail-dr": (Liveness.UNKNOWN, Liveness.UNKNOWN, 25.0)}
    assert not snap.observer_isolated
    d = decide(snap, policy)
    assert (d.action, d.target) == (Action.NONE, None), d.reason
    assert "waiting: primary mail-a is unknown (host)" in d.reason
