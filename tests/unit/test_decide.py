"""decide(): one table row per rule, snapshot in, action/target/reason out."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from cr_orchestrator.decide.rules import (
    Action,
    ClusterSnapshot,
    Interrupted,
    MemberChanges,
    MemberState,
    decide,
    rank_targets,
    with_member,
)
from cr_orchestrator.observe.health import Liveness
from cr_orchestrator.state.host_records import HostRecord, HostRole
from cr_orchestrator.model import DrMode, FailbackMode, Policy, Role

UP, DOWN, SUSPECT, UNKNOWN = Liveness.UP, Liveness.DOWN, Liveness.SUSPECT, Liveness.UNKNOWN
NOW = 1_000_000.0
POLICY = Policy()  # restart_attempts=1, max_failovers=2/3600 s, max lag 300 s, 2 vantages
AUTO = replace(POLICY, failback=FailbackMode.AUTO, failback_min_healthy_s=60)
DR_AUTO = replace(POLICY, dr=DrMode.AUTO)


def healthy() -> ClusterSnapshot:
    """mail-a primary serving, mail-b secondary 4 s behind, mail-dr replica 20 s behind."""
    return ClusterSnapshot(
        cluster="mail",
        members=(
            MemberState("mail-a", Role.PRIMARY, 100, UP, UP, lag_s=0.0, up_rounds=9),
            MemberState("mail-b", Role.SECONDARY, 50, UP, DOWN, lag_s=4.0, up_rounds=9),
            MemberState("mail-dr", Role.REPLICA, 10, UP, DOWN, lag_s=20.0, up_rounds=9),
        ),
        primary="mail-a",
        epoch=3,
        now=NOW,
    )


def primary_down(**snap) -> ClusterSnapshot:
    """mail-a unreachable for 3 probes, confirmed by 2 vantages."""
    s = with_member(
        healthy(), "mail-a", host_liveness=DOWN, service_liveness=DOWN,
        confirmed=True, failures=3, vantages=2,
    )
    return replace(s, **snap)


def service_down(**snap) -> ClusterSnapshot:
    """mail-a answers, but its mail service is stopped (3 probes, 2 vantages)."""
    s = with_member(
        healthy(), "mail-a", service_liveness=DOWN, confirmed=True, failures=3, vantages=2
    )
    return replace(s, **snap)


def after_failover(**snap) -> ClusterSnapshot:
    """mail-b promoted (epoch 4); mail-a back as a stopped, synced secondary."""
    s = with_member(healthy(), "mail-b", service_liveness=UP, lag_s=0.0)
    s = with_member(s, "mail-a", service_liveness=DOWN, lag_s=2.0)
    return replace(s, primary="mail-b", epoch=4, **snap)


def rec(epoch: int | None, role: str | None = None, role_epoch: int | None = None,
        problem: str | None = None) -> HostRecord:
    return HostRecord(epoch, HostRole(role) if role else None,
                      role_epoch if role_epoch is not None else (epoch if role else None),
                      problem)


def with_records(snapshot: ClusterSnapshot, **records: HostRecord) -> ClusterSnapshot:
    for host, record in records.items():
        snapshot = with_member(snapshot, host.replace("_", "-"), record=record)
    return snapshot


def redis_lost(**snap) -> ClusterSnapshot:
    """Redis lost its keys while mail-b was primary at epoch 4 (the hosts say so); it was
    seeded again from the inventory: mail-a at epoch 0. mail-b serves, mail-a does not."""
    s = with_member(healthy(), "mail-a", service_liveness=DOWN)
    s = with_member(s, "mail-b", service_liveness=UP)
    s = with_records(s, mail_a=rec(4, "secondary"), mail_b=rec(4, "primary"),
                     mail_dr=rec(None))
    return replace(s, epoch=0, seeded=True, **snap)


def seeded(**snap) -> ClusterSnapshot:
    """A first start: Redis seeded with mail-a at epoch 0; no host has any record."""
    s = with_records(healthy(), mail_a=rec(None), mail_b=rec(None), mail_dr=rec(None))
    return replace(s, epoch=0, seeded=True, **snap)


def interrupted(**snap) -> ClusterSnapshot:
    """A failover to mail-b was promoted at epoch 4 and its worker died: mail-b does not
    serve yet, mail-a is down."""
    s = with_member(primary_down(), "mail-b", service_liveness=DOWN)
    return replace(s, primary="mail-b", epoch=4, interrupted=Interrupted(
        "failover", "mail-b", 4, NOW - 9, "mail-a"), **snap)


ROWS = [
    # id, snapshot, policy, action, target, reason fragments
    ("Redis lost its keys: the host that recorded the primary role is adopted",
     redis_lost(), POLICY, Action.ADOPT, "mail-b",
     ["Redis had no state for mail (lost or flushed)",
      "the hosts are ahead of Redis: mail-a, mail-b recorded epoch 4",
      "mail-b recorded that it took the primary role at epoch 4",
      "re-seeding Redis from the hosts: adopting mail-b as primary at epoch 4"]),
    ("Redis behind the hosts (not seeded): adopted too",
     replace(redis_lost(), seeded=False, epoch=3), POLICY, Action.ADOPT, "mail-b",
     ["Redis says mail-a at epoch 3", "adopting mail-b as primary at epoch 4"]),
    ("hosts ahead, no role record: the one serving at that epoch is adopted",
     with_records(redis_lost(), mail_a=rec(None), mail_b=rec(4)), POLICY, Action.ADOPT,
     "mail-b", ["no host recorded the primary role at it, but mail-b serves"]),
    ("hosts ahead, nobody claims or serves: hold, never the inventory's word",
     with_member(with_records(redis_lost(), mail_b=rec(4)), "mail-b",
                 service_liveness=DOWN), POLICY, Action.HOLD, None,
     ["the hosts are ahead of Redis", "none of them serves", "not acting on Redis's word",
      "crctl adopt mail HOST"]),
    ("two hosts claim the primary role at the newest epoch: hold",
     with_records(redis_lost(), mail_a=rec(4, "primary")), POLICY, Action.HOLD, None,
     ["mail-a and mail-b both claim the primary role"]),
    ("a malformed record holds everything", with_records(
        healthy(), mail_b=rec(None, problem="the epoch record /x/mail.epoch on mail-b holds "
                                            "'x1', not a whole number")),
     POLICY, Action.HOLD, None, ["not acting: the epoch record /x/mail.epoch on mail-b"]),
    ("seeded: wait until every member's records were read",
     with_member(seeded(), "mail-dr", record=None), POLICY, Action.HOLD, None,
     ["seeded from the inventory (mail-a at epoch 0)",
      "waiting to read the epoch records of mail-dr"]),
    ("seeded: wait until it is known who serves",
     with_member(seeded(), "mail-b", service_liveness=UNKNOWN), POLICY, Action.HOLD, None,
     ["waiting to see whether mail-b serve(s)"]),
    ("seeded while another member serves and no host is newer: hold, never demote it",
     with_member(seeded(), "mail-b", service_liveness=UP), POLICY, Action.HOLD, None,
     ["but mail-b serve(s)", "not demoting a serving host on the inventory's word"]),
    ("seeded, the hosts agree: the seeded primary is confirmed", seeded(), POLICY,
     Action.ADOPT, "mail-a", ["every member's records were read", "confirming mail-a at epoch 0"]),
    ("paused does not stop adopting (no host changes)", redis_lost(paused=True), POLICY,
     Action.ADOPT, "mail-b", ["adopting mail-b", "adopting changes no host"]),
    ("hosts at Redis's epoch, not seeded: Redis is right", with_records(
        healthy(), mail_a=rec(3, "primary"), mail_b=rec(3, "secondary")), POLICY,
     Action.NONE, None, ["mail-a is primary (epoch 3) and up"]),
    ("a journaled failover whose worker died is resumed", interrupted(), POLICY,
     Action.RESUME, "mail-b",
     ["resuming the failover to mail-b at epoch 4", "started 9 s ago and never finished",
      "same epoch"]),
    ("a resume says the step the first run had reached",
     replace(interrupted(), interrupted=Interrupted("failover", "mail-b", 4, NOW - 9, "mail-a",
                                                    step="old_primary_fenced")),
     POLICY, Action.RESUME, "mail-b", ["stopped after: old primary fenced); running"]),
    ("a journal of an older epoch is not resumed",
     replace(interrupted(), interrupted=Interrupted("failover", "mail-b", 3, NOW, "mail-a")),
     POLICY, Action.NONE, None, ["waiting: primary mail-b"]),
    ("paused holds a resume, saying so", interrupted(paused=True), POLICY, Action.HOLD, None,
     ["paused by an operator", "would otherwise do resume"]),
    ("healthy", healthy(), POLICY, Action.NONE, None,
     ["mail-a is primary (epoch 3) and up", "mail-b replica 4 s behind"]),
    ("orchestrator cut off from a primary its peers see serving",
     with_member(healthy(), "mail-a", observer_cut_off=True), POLICY, Action.NONE, None,
     ["mail-a is primary (epoch 3) and up as its peers see it serving",
      "the orchestrator cannot reach it itself: cut off from it, not failing over"]),
    ("empty snapshot holds", ClusterSnapshot.empty("mail", now=NOW), POLICY, Action.HOLD, None,
     ["no live primary is recorded for mail"]),
    ("unknown live primary holds", replace(healthy(), primary="mail-x"), POLICY, Action.HOLD,
     None, ["live primary mail-x is not a member of mail"]),
    ("paused, healthy", replace(healthy(), paused=True), POLICY, Action.HOLD, None,
     ["cluster mail is paused", "mail-a is primary"]),
    ("paused beats failover", primary_down(paused=True), POLICY, Action.HOLD, None,
     ["paused by an operator", "would otherwise do failover", "from mail-a to mail-b"]),
    ("observer isolated", primary_down(observer_isolated=True), POLICY, Action.HOLD, None,
     ["observer isolated"]),
    ("paused beats isolated", primary_down(observer_isolated=True, paused=True), POLICY,
     Action.HOLD, None, ["cluster mail is paused", "observer isolated"]),
    ("primary suspect: wait", with_member(healthy(), "mail-a", service_liveness=SUSPECT,
                                          failures=1, vantages=1),
     POLICY, Action.NONE, None, ["waiting: primary mail-a is suspect (service)", "needs 3"]),
    ("primary unobserved: wait", with_member(healthy(), "mail-a", host_liveness=UNKNOWN),
     POLICY, Action.NONE, None, ["mail-a is unknown (host)"]),
    ("service down: restart in place", service_down(), POLICY, Action.RESTART_SERVICE,
     "mail-a", ["restarting the service on mail-a", "attempt 1 of 1", "3 probes from 2"]),
    ("primary coming back (last probe answered): wait",
     with_member(service_down(), "mail-a", failures=0), POLICY, Action.NONE, None,
     ["mail-a answered its last probe after being down (service)", "2 good probes"]),
    ("restart attempts spent: failover", service_down(restart_attempts=1), POLICY,
     Action.FAILOVER, "mail-b",
     ["failing over from mail-a to mail-b", "still down after 1 restart",
      "mail-b replica 4 s behind"]),
    ("restart needs no second vantage", with_member(service_down(), "mail-a", confirmed=False),
     POLICY, Action.RESTART_SERVICE, "mail-a", ["attempt 1 of 1"]),
    ("host down: failover, no restart", primary_down(), POLICY, Action.FAILOVER, "mail-b",
     ["failing over from mail-a to mail-b: mail-a down for 3 probes from 2 vantages",
      "mail-b replica 4 s behind"]),
    ("not confirmed by a second vantage", with_member(primary_down(), "mail-a", confirmed=False,
                                                      vantages=1),
     POLICY, Action.HOLD, None, ["no second vantage confirms", "from 1 vantage"]),
    ("one vantage suffices when policy says so",
     with_member(primary_down(), "mail-a", confirmed=False, vantages=1),
     replace(POLICY, required_vantages=1), Action.FAILOVER, "mail-b", ["to mail-b"]),
    ("failover budget spent", primary_down(recent_failovers=(NOW - 100, NOW - 2000)), POLICY,
     Action.HOLD, None, ["budget is spent: 2 failovers in the last 3600 s (max 2)"]),
    ("old failovers leave the budget", primary_down(recent_failovers=(NOW - 5000, NOW - 100)),
     POLICY, Action.FAILOVER, "mail-b", ["to mail-b"]),
    ("unconfirmed beats budget",
     with_member(primary_down(recent_failovers=(NOW, NOW)), "mail-a", confirmed=False),
     POLICY, Action.HOLD, None, ["no second vantage"]),
    ("replica too stale", with_member(primary_down(), "mail-b", lag_s=400.0), POLICY,
     Action.HOLD, None,
     ["no eligible target", "mail-b replica 400 s behind (max 300 s)",
      "mail-dr is a replica"]),
    ("never synced", with_member(primary_down(), "mail-b", lag_s=None), POLICY, Action.HOLD,
     None, ["mail-b has never been synced"]),
    ("no replica sets: lag ignored",
     with_member(primary_down(replicated=False), "mail-b", lag_s=None), POLICY,
     Action.FAILOVER, "mail-b", ["mail-b up"]),
    ("secondary down too: replicas never automatically",
     with_member(primary_down(), "mail-b", host_liveness=DOWN), POLICY, Action.HOLD, None,
     ["mail-b is down", "mail-dr is a replica (promoted only by an operator)",
      "cr_dr is manual", "run `crctl failover mail --to mail-dr`"]),
    ("cr_dr auto on the quorum's majority side: the DR replica takes over",
     with_member(primary_down(quorum=True), "mail-b", host_liveness=DOWN), DR_AUTO,
     Action.FAILOVER, "mail-dr", ["to DR replica mail-dr", "mail-b is down",
                                  "replica 20 s behind (max 300 s)", "majority side"]),
    ("cr_dr auto without a quorum (plain Redis): hold, saying the command",
     with_member(primary_down(), "mail-b", host_liveness=DOWN), DR_AUTO, Action.HOLD, None,
     ["single server, not a Sentinel quorum", "crctl failover mail --to mail-dr"]),
    ("cr_dr auto on the minority side: hold",
     with_member(primary_down(quorum=False), "mail-b", host_liveness=DOWN), DR_AUTO,
     Action.HOLD, None, ["minority side of a partition"]),
    ("cr_dr auto, but the DR replica is too far behind",
     with_member(with_member(primary_down(quorum=True), "mail-b", host_liveness=DOWN),
                 "mail-dr", lag_s=900.0), DR_AUTO, Action.HOLD, None,
     ["no eligible target", "mail-dr replica 900 s behind"]),
    ("cr_dr auto never passes over a secondary that can take over",
     primary_down(quorum=True), DR_AUTO, Action.FAILOVER, "mail-b", ["to mail-b"]),
    ("freshest secondary wins over priority",
     replace(primary_down(), members=primary_down().members + (
         MemberState("mail-c", Role.SECONDARY, 1, UP, DOWN, lag_s=1.0),)),
     POLICY, Action.FAILOVER, "mail-c", ["to mail-c", "mail-c replica 1 s behind"]),
    ("equal freshness: priority decides",
     replace(primary_down(), members=primary_down().members + (
         MemberState("mail-c", Role.SECONDARY, 90, UP, DOWN, lag_s=4.0),)),
     POLICY, Action.FAILOVER, "mail-c", ["to mail-c"]),
    ("healthier before fresher",
     replace(primary_down(), members=primary_down().members + (
         MemberState("mail-c", Role.SECONDARY, 90, UP, DOWN, lag_s=1.0, failures=2),)),
     POLICY, Action.FAILOVER, "mail-b", ["to mail-b"]),
    ("old primary back serving: demote it", with_member(after_failover(), "mail-a",
                                                        service_liveness=UP),
     POLICY, Action.DEMOTE_REJOINED, "mail-a",
     ["demoting mail-a", "mail-b is the live primary (epoch 4)"]),
    ("demote beats failover", with_member(
        with_member(after_failover(), "mail-a", service_liveness=UP), "mail-b",
        host_liveness=DOWN, service_liveness=DOWN, confirmed=True, failures=3, vantages=2),
     POLICY, Action.DEMOTE_REJOINED, "mail-a", ["demoting mail-a"]),
    ("returning member behind: resync", with_member(after_failover(), "mail-a", lag_s=900.0),
     POLICY, Action.RESYNC, "mail-a",
     ["resyncing mail-a from mail-b: replica 900 s behind (max 300 s)"]),
    ("returned, never synced: resync", with_member(after_failover(), "mail-a", lag_s=None),
     POLICY, Action.RESYNC, "mail-a", ["never synced"]),
    ("returned, service state not known yet: wait",
     with_member(after_failover(), "mail-a", lag_s=None, service_liveness=UNKNOWN),
     POLICY, Action.NONE, None,
     ["mail-a is back and never synced, but its service is unknown",
      "watching it before resyncing it"]),
    ("returned, service suspect: wait",
     with_member(after_failover(), "mail-a", lag_s=900.0, service_liveness=SUSPECT),
     POLICY, Action.NONE, None, ["its service is suspect"]),
    ("returned, service still down from its absence: wait",
     with_member(after_failover(), "mail-a", lag_s=None, up_rounds=2),
     POLICY, Action.NONE, None, ["it has answered for 2 of 4 rounds"]),
    ("down member is not resynced", with_member(after_failover(), "mail-a", lag_s=None,
                                                host_liveness=DOWN),
     POLICY, Action.NONE, None, ["mail-b is primary (epoch 4)", "mail-a down (host)"]),
    ("failback manual: stay", after_failover(failback_in_sync_since=NOW - 3600), POLICY,
     Action.NONE, None, ["mail-b is primary (epoch 4) and up"]),
    ("failback auto, healthy long enough", after_failover(failback_in_sync_since=NOW - 90),
     AUTO, Action.FAILBACK, "mail-a",
     ["failing back from mail-b to mail-a", "in sync for 90 s (min 60 s)"]),
    ("failback auto, not yet", after_failover(failback_in_sync_since=NOW - 20), AUTO,
     Action.NONE, None, ["failback to mail-a in 40 s"]),
    ("failback auto, not in sync", with_member(
        after_failover(failback_in_sync_since=NOW - 90), "mail-a", lag_s=None), AUTO,
     Action.RESYNC, "mail-a", ["resyncing mail-a"]),
    ("failback auto, home down", with_member(
        after_failover(failback_in_sync_since=NOW - 90), "mail-a", host_liveness=DOWN), AUTO,
     Action.NONE, None, ["mail-b is primary"]),
    ("resync beats failback", with_member(
        after_failover(failback_in_sync_since=NOW - 90), "mail-dr", lag_s=999.0), AUTO,
     Action.RESYNC, "mail-dr", ["resyncing mail-dr"]),
    ("paused beats failback", after_failover(failback_in_sync_since=NOW - 90, paused=True),
     AUTO, Action.HOLD, None, ["paused by an operator", "would otherwise do failback"]),
    ("clients cannot reach a serving primary: re-assert it", replace(with_member(
        healthy(), "mail-a", via_shared_ip=DOWN, via_shared_ip_failures=3),
        shared_ip="198.18.0.100"), POLICY, Action.REASSERT, "mail-a",
     ["re-asserting mail-a as primary (epoch 3)", "the shared IP 198.18.0.100 failed 3 probes"]),
    ("re-assert beats resync", with_member(with_member(
        healthy(), "mail-a", via_shared_ip=DOWN, via_shared_ip_failures=3), "mail-dr",
        lag_s=999.0), POLICY, Action.REASSERT, "mail-a", ["re-asserting mail-a"]),
    ("orchestrator cut off from the primary: its shared-IP checks fail too, no re-assert",
     with_member(healthy(), "mail-a", via_shared_ip=DOWN, via_shared_ip_failures=4,
                 observer_cut_off=True), POLICY, Action.NONE, None,
     ["mail-a is primary (epoch 3) and up as its peers see it serving", "cut off from it"]),
    ("shared IP answering again after a failed stretch: no re-assert", with_member(
        healthy(), "mail-a", via_shared_ip=DOWN, via_shared_ip_failures=0), POLICY,
     Action.NONE, None, ["mail-a is primary (epoch 3) and up"]),
    ("shared IP only suspect: no re-assert yet", with_member(
        healthy(), "mail-a", via_shared_ip=SUSPECT, via_shared_ip_failures=1), POLICY,
     Action.NONE, None, ["mail-a is primary (epoch 3) and up"]),
    ("a serving non-primary is demoted before the shared IP is re-asserted", with_member(
        with_member(healthy(), "mail-a", via_shared_ip=DOWN, via_shared_ip_failures=3),
        "mail-b", service_liveness=UP), POLICY, Action.DEMOTE_REJOINED, "mail-b",
     ["demoting mail-b"]),
    ("paused beats re-assert", replace(with_member(healthy(), "mail-a", via_shared_ip=DOWN, via_shared_ip_failures=3),
             paused=True), POLICY, Action.HOLD, None,
     ["paused by an operator", "would otherwise do reassert"]),
]


@pytest.mark.parametrize(
    "snapshot,policy,action,target,fragments",
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_decide(snapshot, policy, action, target, fragments):
    decision = decide(snapshot, policy)
    assert (decision.action, decision.target) == (action, target), decision.reason
    for fragment in fragments:
        assert fragment in decision.reason


def test_every_action_has_a_row():
    assert {row[3] for row in ROWS} == set(Action)


def test_rank_targets_lets_an_operator_choose_a_replica():
    eligible, refused = rank_targets(primary_down(), POLICY, allow_replica=True)
    assert [m.host for m in eligible] == ["mail-b", "mail-dr"]
    assert refused == []
    eligible, refused = rank_targets(primary_down(), POLICY)
    assert [m.host for m in eligible] == ["mail-b"]
    assert refused == ["mail-dr is a replica (promoted only by an operator)"]


SITUATION_ROWS = [
    # id, snapshot, the key history de-duplicates on
    ("healthy", healthy(), "primary_up"),
    ("paused, healthy", replace(healthy(), paused=True), "paused/primary_up"),
    ("host down", primary_down(), "primary_down"),
    ("paused beats failover: same situation, held", primary_down(paused=True),
     "paused/primary_down"),
    ("isolated", primary_down(observer_isolated=True), "observer_isolated"),
]


@pytest.mark.parametrize("snapshot,key", [r[1:] for r in SITUATION_ROWS],
                         ids=[r[0] for r in SITUATION_ROWS])
def test_situation_key_tells_a_paused_hold_from_the_same_situation_unpaused(snapshot, key):
    assert decide(snapshot, POLICY).situation_key == key


def test_with_member_takes_every_member_field():
    # MemberChanges types with_member's keywords: it must follow MemberState.
    assert set(MemberChanges.__annotations__) == {f.name for f in fields(MemberState)} - {"host"}
