"""Decide: the pure heart of the orchestrator.

``decide(snapshot, policy)`` looks at an immutable :class:`ClusterSnapshot` (what the
probes, the failure detector, Redis and the replication store said, plus ``now``) and
returns a :class:`Decision`: one action, its target host, and the reason as a plain
sentence naming hosts and numbers. No I/O, no clock: the same snapshot always gives the
same decision, which is what the table-driven tests in ``tests/unit/test_decide.py`` pin.

Rules, in order of precedence (the first that applies wins):

1. paused by an operator → HOLD, saying what would have been done (ADOPT, which changes
   no host, still happens);
2. the orchestrator is isolated (sees nobody) → HOLD;
3. hosts first: a host's epoch or role record cannot be read → HOLD; a host recorded a
   newer epoch than Redis holds → ADOPT the host that recorded the primary role at it
   (else the one serving at it, else HOLD); Redis was seeded from the inventory (first
   start, or lost keys) → HOLD until every member's records were read and it is known
   who serves, then ADOPT (confirm) the seeded primary, or HOLD when another member
   serves: a serving host is never demoted on Redis's word alone;
4. no live primary recorded, or it is not a member → HOLD;
5. a change journaled with the current epoch never finished (its worker died) → RESUME;
6. a member other than the live primary is serving → DEMOTE_REJOINED;
7. the live primary is up → REASSERT it when clients' address (the shared IP) has failed
   ``failures_before_down`` probes in a row although the primary serves on its own address
   as the orchestrator sees it (a failed take-over, or an address lost to a network
   restart on the host), else RESYNC a member that is behind (once its service has been
   seen stopped for a few rounds since it answered again; until then NONE, watching it),
   else FAILBACK when ``failback: auto`` and the configured primary has been healthy and
   in sync long enough, else NONE;
8. the live primary is suspect, unobserved, or coming back (its last probe answered)
   → NONE (wait);
9. its host answers but its service is down and restart attempts remain →
   RESTART_SERVICE;
10. otherwise failover: HOLD if not confirmed from a second vantage, if the failover
   budget is spent, while an unreachable primary's lease may still hold (``lease_ttl`` +
   ``lease_margin`` from the last renewal granted to it: its agent stops it by then),
   for good while it may hold a lease granted while paused (its agent keeps that one
   until an ordinary renewal reaches it), or if no secondary is eligible (down, too
   stale, never synced);
   else FAILOVER to the best secondary (health, then freshness, then priority); with no
   secondary able, a DR replica within ``max_replica_lag`` is promoted only when
   ``cr_dr: auto`` and this orchestrator holds the Redis quorum's majority, else HOLD
   saying the command an operator runs.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import TypedDict, Unpack

from cr_orchestrator.observe.health import Liveness
from cr_orchestrator.state.host_records import HostRecord
from cr_orchestrator.model import DrMode, FailbackMode, Policy, Role


class Action(enum.StrEnum):
    NONE = "none"
    RESTART_SERVICE = "restart_service"
    FAILOVER = "failover"
    HOLD = "hold"
    RESYNC = "resync"
    FAILBACK = "failback"
    DEMOTE_REJOINED = "demote_rejoined"
    REASSERT = "reassert"
    ADOPT = "adopt"  # make Redis say what the hosts recorded (no host changes)
    RESUME = "resume"  # finish a journaled change whose worker died


class Situation(enum.StrEnum):
    """What a decision is about, as a code (history keys on it, never on the sentence)."""

    OBSERVER_ISOLATED = "observer_isolated"
    OBSERVER_CUT_OFF = "observer_cut_off"  # up by its peers' word: the orchestrator can't see it
    BAD_HOST_RECORD = "bad_host_record"
    HOSTS_AHEAD = "hosts_ahead"
    HOSTS_AHEAD_UNCLEAR = "hosts_ahead_unclear"
    SEEDED_WAITING_FOR_RECORDS = "seeded_waiting_for_records"
    SEEDED_WAITING_FOR_SERVICE = "seeded_waiting_for_service"
    SEEDED_OTHER_SERVES = "seeded_other_serves"
    SEEDED_CONFIRMED = "seeded_confirmed"
    NO_PRIMARY = "no_primary"
    INTERRUPTED_CHANGE = "interrupted_change"
    OTHER_MEMBER_SERVES = "other_member_serves"
    CLIENTS_CANNOT_REACH_PRIMARY = "clients_cannot_reach_primary"
    MEMBER_BEHIND = "member_behind"
    WATCHING_RETURNED_MEMBER = "watching_returned_member"
    FAILBACK_PENDING = "failback_pending"
    FAILBACK_DUE = "failback_due"
    PRIMARY_UP = "primary_up"
    PRIMARY_COMING_BACK = "primary_coming_back"
    SERVICE_DOWN_RESTART = "service_down_restart"
    PRIMARY_SUSPECT = "primary_suspect"
    DOWN_UNCONFIRMED = "down_unconfirmed"
    FAILOVER_BUDGET_SPENT = "failover_budget_spent"
    LEASE_WAIT = "lease_wait"  # the unreachable primary's lease may still hold
    NO_ELIGIBLE_TARGET = "no_eligible_target"
    DR_NEEDS_OPERATOR = "dr_needs_operator"  # cr_dr manual: a DR replica could take over
    DR_NEEDS_QUORUM = "dr_needs_quorum"  # cr_dr auto, but not on the quorum's majority side
    DR_FAILOVER = "dr_failover"  # cr_dr auto: promoting a DR replica
    PRIMARY_DOWN = "primary_down"
    OPERATOR = "operator"  # a decision an operator made (commands), not decide()


@dataclass(frozen=True)
class Decision:
    """One thing to do, why (a sentence), and what situation it answers (a code)."""

    action: Action
    target: str | None
    reason: str
    epoch: int | None = None  # ADOPT: the epoch to adopt
    situation: Situation = Situation.OPERATOR
    paused: bool = False  # held because an operator paused the cluster
    # state effects the record step applies with the decision (no I/O here)
    reset_restarts: bool = False  # the primary serves again: the incident is over
    in_sync_since: float | None = None  # the configured primary healthy and in sync since

    @property
    def situation_key(self) -> str:
        """What history de-duplicates on: the situation, and whether it was paused."""
        return f"paused/{self.situation.value}" if self.paused else self.situation.value


def _decision(situation: Situation, action: Action, target: str | None, reason: str, *,
              epoch: int | None = None) -> Decision:
    return Decision(action, target, reason, epoch=epoch, situation=situation)


@dataclass(frozen=True)
class Interrupted:
    """A change journaled with its promotion and not finished (Redis ``change``)."""

    kind: str  # failover, operator failover, switchover, failback
    new_primary: str
    epoch: int
    at: float
    old_primary: str | None = None
    step: str | None = None  # the last step its journal reached (state.journal), if known


@dataclass(frozen=True)
class LeaseGrant:
    """The newest lease renewal an orchestrator granted (``state/lease.py``): to
    ``host`` at ``epoch``; ``at``: the latest moment the host may have received it."""

    host: str
    epoch: int
    at: float
    # the host may hold a renewal that said the cluster is paused: its agent keeps that
    # lease without end, until an ordinary renewal reaches it
    held_paused: bool = False


@dataclass(frozen=True)
class MemberState:
    """One member as seen this round: configured role plus the detector's verdicts."""

    host: str
    role: Role
    priority: int = 0
    host_liveness: Liveness = Liveness.UNKNOWN
    service_liveness: Liveness = Liveness.UNKNOWN
    confirmed: bool = False  # a second vantage agrees with a DOWN verdict
    failures: int = 0  # consecutive failed probes behind the current verdict
    vantages: int = 0  # how many vantages saw those failures
    lag_s: float | None = None  # replica freshness; None: never synced (or unknown)
    up_rounds: int = 0  # consecutive rounds the host has answered (since it came back)
    observer_cut_off: bool = False  # peers see it serving; the orchestrator cannot reach it
    # what clients see: the service checked through the shared IP (the orchestrator's
    # vantage), attributed to the live primary; UNKNOWN where there is no shared IP
    via_shared_ip: Liveness = Liveness.UNKNOWN
    via_shared_ip_failures: int = 0
    record: HostRecord | None = None  # its epoch and role records; None: not read lately


class MemberChanges(TypedDict, total=False):
    """Keyword arguments of :func:`with_member`: any :class:`MemberState` field but
    ``host`` (which names the member to change)."""

    role: Role
    priority: int
    host_liveness: Liveness
    service_liveness: Liveness
    confirmed: bool
    failures: int
    vantages: int
    lag_s: float | None
    up_rounds: int
    observer_cut_off: bool
    via_shared_ip: Liveness
    via_shared_ip_failures: int
    record: HostRecord | None


@dataclass(frozen=True)
class ClusterSnapshot:
    """Everything ``decide`` may look at, frozen at one instant (``now``)."""

    cluster: str
    members: tuple[MemberState, ...]
    primary: str | None  # the live primary (Redis), not the configured one
    epoch: int
    now: float
    paused: bool = False
    observer_isolated: bool = False
    replicated: bool = True  # the cluster has replica sets, so freshness matters
    restart_attempts: int = 0  # restarts already made for the current incident
    recent_failovers: tuple[float, ...] = ()  # unix times of past failovers
    # configured primary healthy and in sync since (as recorded; decide restarts the clock)
    failback_in_sync_since: float | None = None
    shared_ip: str | None = None  # clients' address, when the cluster switches by shared IP
    seeded: bool = False  # Redis's state is the inventory's word, not checked against hosts
    interrupted: Interrupted | None = None  # a journaled change nobody is running
    # this orchestrator's Redis master holds the replicas its quorum requires (Sentinel);
    # None: a plain Redis, where no majority can be known
    quorum: bool | None = None
    lease: LeaseGrant | None = None  # the newest renewal granted; None: none known

    @classmethod
    def empty(cls, cluster: str = "", *, now: float = 0.0) -> ClusterSnapshot:
        """The null snapshot: nothing known yet (decides HOLD, never acts)."""
        return cls(cluster=cluster, members=(), primary=None, epoch=0, now=now)

    def member(self, host: str) -> MemberState | None:
        return next((m for m in self.members if m.host == host), None)

    @property
    def configured_primary(self) -> str | None:
        return next((m.host for m in self.members if m.role is Role.PRIMARY), None)


def decide(snapshot: ClusterSnapshot, policy: Policy) -> Decision:
    """Return the one thing to do for this cluster now, with its reason and effects."""
    snapshot = replace(snapshot, failback_in_sync_since=_home_in_sync_since(snapshot, policy))
    decision = _paused(snapshot, policy) if snapshot.paused else \
        _decide_unpaused(snapshot, policy)
    primary = snapshot.member(snapshot.primary) if snapshot.primary else None
    serving = primary is not None and primary.service_liveness is Liveness.UP
    return replace(decision, in_sync_since=snapshot.failback_in_sync_since,
                   reset_restarts=serving and snapshot.restart_attempts > 0)


def _home_in_sync_since(snapshot: ClusterSnapshot, policy: Policy) -> float | None:
    """Since when the configured primary (not the live one) is up and in sync: the
    recorded time, or now when it just became so; None when it is not (the failback
    clock starts again)."""
    home = snapshot.member(snapshot.configured_primary) \
        if snapshot.configured_primary else None
    in_sync = (home is not None and home.host != snapshot.primary
               and home.host_liveness is Liveness.UP
               and (not snapshot.replicated
                    or (home.lag_s is not None and home.lag_s <= policy.max_replica_lag_s)))
    if not in_sync:
        return None
    return snapshot.failback_in_sync_since if snapshot.failback_in_sync_since is not None \
        else snapshot.now


def _paused(snapshot: ClusterSnapshot, policy: Policy) -> Decision:
    would = _decide_unpaused(snapshot, policy)
    if would.action is Action.ADOPT:
        return replace(would, paused=True,
                       reason=f"{would.reason} (paused; adopting changes no host)")
    if would.action in (Action.NONE, Action.HOLD):
        return replace(would, action=Action.HOLD, target=None, paused=True,
                       reason=f"cluster {snapshot.cluster} is paused; {would.reason}")
    return replace(would, action=Action.HOLD, target=None, epoch=None, paused=True, reason=(
        f"cluster {snapshot.cluster} is paused by an operator: not acting; "
        f"would otherwise do {would.action.value}: {would.reason}"))


def _decide_unpaused(snapshot: ClusterSnapshot, policy: Policy) -> Decision:
    if snapshot.observer_isolated:
        return _decision(Situation.OBSERVER_ISOLATED,
            Action.HOLD,
            None,
            f"the orchestrator sees no member of {snapshot.cluster} (observer isolated): "
            "not acting on its own view alone",
        )
    hosts_say = _hosts_first(snapshot)
    if hosts_say is not None:
        return hosts_say
    primary = snapshot.member(snapshot.primary) if snapshot.primary else None
    if primary is None:
        what = (
            f"live primary {snapshot.primary} is not a member of {snapshot.cluster}"
            if snapshot.primary
            else f"no live primary is recorded for {snapshot.cluster}"
        )
        return _decision(Situation.NO_PRIMARY, Action.HOLD, None, f"{what}: an operator must choose one")
    change = snapshot.interrupted
    if change is not None and change.epoch == snapshot.epoch \
            and change.new_primary == primary.host:
        return _decision(Situation.INTERRUPTED_CHANGE,
            Action.RESUME,
            primary.host,
            f"resuming the {change.kind} to {primary.host} at epoch {snapshot.epoch}: it "
            f"started {max(0.0, snapshot.now - change.at):.0f} s ago and never finished "
            "(the worker running it stopped"
            + (f" after: {change.step.replace('_', ' ')}" if change.step else "")
            + "); running its playbook again at the same epoch",
        )
    rejoined = _serving_non_primaries(snapshot)
    if rejoined:
        host = rejoined[0]
        return _decision(Situation.OTHER_MEMBER_SERVES,
            Action.DEMOTE_REJOINED,
            host,
            f"demoting {host}: it is serving but {primary.host} is the live primary "
            f"(epoch {snapshot.epoch}); two serving copies would diverge",
        )
    if _is_up(primary):
        return _healthy_primary(snapshot, policy, primary)
    if primary.failures == 0 and Liveness.DOWN in (primary.host_liveness,
                                                   primary.service_liveness):
        # DOWN with no failure at the end: its last probe answered, it is coming back
        # (e.g. just promoted); acting on the old verdict would restart a good service.
        return _decision(Situation.PRIMARY_COMING_BACK,
            Action.NONE,
            None,
            f"waiting: primary {primary.host} answered its last probe after being "
            f"{_state(primary)}; {policy.successes_before_up} good probes in a row call it up",
        )
    if primary.host_liveness is Liveness.UP and primary.service_liveness is Liveness.DOWN:
        if snapshot.restart_attempts < policy.restart_attempts:
            return _decision(Situation.SERVICE_DOWN_RESTART,
                Action.RESTART_SERVICE,
                primary.host,
                f"restarting the service on {primary.host} in place "
                f"(attempt {snapshot.restart_attempts + 1} of {policy.restart_attempts}): "
                f"host answers but the service is down for {_probes(primary)}",
            )
        return _failover(snapshot, policy, primary)
    if primary.host_liveness is Liveness.DOWN:
        return _failover(snapshot, policy, primary)
    return _decision(Situation.PRIMARY_SUSPECT,
        Action.NONE,
        None,
        f"waiting: primary {primary.host} is {_state(primary)}, not yet down "
        f"(needs {policy.failures_before_down} failed probes)",
    )


def _hosts_first(snapshot: ClusterSnapshot) -> Decision | None:
    """Rule 3: the hosts' own records overrule Redis when it is behind or was re-seeded."""
    records = {m.host: m.record for m in snapshot.members if m.record is not None}
    problems = sorted(r.problem for r in records.values() if r.problem)
    if problems:
        return _decision(Situation.BAD_HOST_RECORD, Action.HOLD, None, f"not acting: {problems[0]}; an operator must "
                                           "repair the record (it is never guessed at)")
    top = max((max(r.epoch or 0, r.role_epoch or 0) for r in records.values()), default=0)
    if top > snapshot.epoch:
        ahead = sorted(h for h, r in records.items() if (r.epoch or 0) == top)
        said = (f"Redis had no state for {snapshot.cluster} (lost or flushed) and was seeded "
                "from the inventory; the hosts are ahead of Redis" if snapshot.seeded
                else f"the hosts are ahead of Redis (Redis says {snapshot.primary or 'nobody'} "
                     f"at epoch {snapshot.epoch})")
        return _adopt_from_hosts(snapshot, records, top, why=(
            f"{said}: {', '.join(ahead) or 'a member'} recorded epoch {top}"))
    if snapshot.seeded:
        return _confirm_seed(snapshot, records)
    return None


def from_the_hosts(snapshot: ClusterSnapshot) -> Decision | None:
    """What the hosts' records say of the primary and epoch, when they overrule Redis
    (``crctl recover``): ADOPT, HOLD saying why not, or None when Redis is not behind."""
    return _hosts_first(snapshot)


def _adopt_from_hosts(snapshot: ClusterSnapshot, records: dict[str, HostRecord], top: int, *,
                      why: str) -> Decision:
    claimants = sorted(h for h, r in records.items() if r.claims_primary_at == top)
    adopting = "re-seeding Redis from the hosts: adopting" if snapshot.seeded else "adopting"
    if len(claimants) == 1:
        host = claimants[0]
        return _decision(Situation.HOSTS_AHEAD, Action.ADOPT, host, f"{why}; {host} recorded that it took the primary "
                                            f"role at epoch {top}: {adopting} {host} as primary "
                                            f"at epoch {top}", epoch=top)
    serving = sorted(m.host for m in snapshot.members if m.service_liveness is Liveness.UP
                     and m.host in records and (records[m.host].epoch or 0) == top)
    if not claimants and len(serving) == 1:
        host = serving[0]
        return _decision(Situation.HOSTS_AHEAD, Action.ADOPT, host, f"{why}; no host recorded the primary role at it, "
                                            f"but {host} serves and recorded it: {adopting} "
                                            f"{host} as primary at epoch {top}", epoch=top)
    who = (f"{' and '.join(claimants)} both claim the primary role at it" if claimants else
           "no host recorded the primary role at it and "
           + (f"{' and '.join(serving)} serve" if serving else "none of them serves"))
    return _decision(Situation.HOSTS_AHEAD_UNCLEAR, Action.HOLD, None, f"{why}; {who}: not acting on Redis's word; an "
                                       f"operator must choose (crctl adopt {snapshot.cluster} "
                                       "HOST)")


def _confirm_seed(snapshot: ClusterSnapshot, records: dict[str, HostRecord]) -> Decision:
    primary = snapshot.primary
    base = (f"Redis had no state for {snapshot.cluster} and was seeded from the inventory "
            f"({primary} at epoch {snapshot.epoch})")
    unread = sorted(m.host for m in snapshot.members if m.host not in records)
    if unread:
        return _decision(Situation.SEEDED_WAITING_FOR_RECORDS, Action.HOLD, None,
                         f"{base}; waiting to read the epoch records of {', '.join(unread)} "
                         "before acting (a host promoted since would say so)")
    unsure = sorted(m.host for m in snapshot.members
                    if m.service_liveness not in (Liveness.UP, Liveness.DOWN))
    if unsure:
        return _decision(Situation.SEEDED_WAITING_FOR_SERVICE, Action.HOLD, None,
                         f"{base}; waiting to see whether {', '.join(unsure)} serve(s) "
                         "before acting")
    others = sorted(m.host for m in snapshot.members
                    if m.host != primary and (m.service_liveness is Liveness.UP
                                              or records[m.host].claims_primary_at
                                              == snapshot.epoch))
    if others:
        return _decision(Situation.SEEDED_OTHER_SERVES, Action.HOLD, None,
                         f"{base}, but {', '.join(others)} serve(s) or claim(s) the primary "
                         "role and no host recorded a newer epoch: not demoting a serving "
                         "host on the inventory's word; an operator must choose (crctl "
                         f"adopt {snapshot.cluster} HOST)")
    return _decision(Situation.SEEDED_CONFIRMED, Action.ADOPT, primary,
                     f"{base}; every member's records were read, none is newer, and no "
                     f"other member serves: confirming {primary} at epoch {snapshot.epoch}",
                    epoch=snapshot.epoch)


def _is_up(m: MemberState) -> bool:
    return m.host_liveness is Liveness.UP and m.service_liveness is Liveness.UP


def _serving_non_primaries(snapshot: ClusterSnapshot) -> list[str]:
    return sorted(
        m.host
        for m in snapshot.members
        if m.host != snapshot.primary and m.service_liveness is Liveness.UP
    )


def _state(m: MemberState) -> str:
    if m.host_liveness is not Liveness.UP:
        return f"{m.host_liveness.value} (host)"
    return f"{m.service_liveness.value} (service)"


def _probes(m: MemberState) -> str:
    vantages = "vantage" if m.vantages == 1 else "vantages"
    return f"{m.failures} probes from {m.vantages} {vantages}"


def _lag(m: MemberState) -> str:
    return "never synced" if m.lag_s is None else f"replica {m.lag_s:.0f} s behind"


def _behind(snapshot: ClusterSnapshot, policy: Policy, primary: MemberState) -> list[MemberState]:
    """Reachable members (not the primary) that miss data or were never synced."""
    return [m for m in sorted(snapshot.members, key=lambda m: m.host)
            if snapshot.replicated and m.host != primary.host
            and m.host_liveness is Liveness.UP
            and (m.lag_s is None or m.lag_s > policy.max_replica_lag_s)]


def _healthy_primary(snapshot: ClusterSnapshot, policy: Policy, primary: MemberState) -> Decision:
    # DOWN with failures at the end (not a DOWN that is answering again): clients have not
    # reached the service for a few rounds while it serves on the host's own address. Only
    # when the orchestrator itself reaches the primary: cut off from it, its failing
    # checks through the shared IP say nothing about what clients see.
    if (primary.via_shared_ip is Liveness.DOWN and primary.via_shared_ip_failures > 0
            and not primary.observer_cut_off):
        address = f"the shared IP {snapshot.shared_ip}" if snapshot.shared_ip else "the shared IP"
        return _decision(Situation.CLIENTS_CANNOT_REACH_PRIMARY,
            Action.REASSERT,
            primary.host,
            f"re-asserting {primary.host} as primary (epoch {snapshot.epoch}): it serves on "
            f"its own address but {address} failed {primary.via_shared_ip_failures} probes "
            f"in a row; taking the shared IP again on {primary.host}",
        )
    behind = _behind(snapshot, policy, primary)
    # Copy only into a member whose service is known to be stopped: one that just came
    # back may be serving (autostart) and must be demoted first, not overwritten live.
    # Its service verdict counts once it has been watched for a few rounds since it
    # returned (a DOWN from while the host was away says nothing about now).
    watched = policy.successes_before_up + 2
    ready = [m for m in behind
             if m.service_liveness is Liveness.DOWN and m.up_rounds >= watched]
    if ready:
        m = ready[0]
        return _decision(Situation.MEMBER_BEHIND,
            Action.RESYNC,
            m.host,
            f"resyncing {m.host} from {primary.host}: {_lag(m)} "
            f"(max {policy.max_replica_lag_s:.0f} s)",
        )
    if behind:
        m = behind[0]
        seen = (f"its service is {m.service_liveness.value}" if m.up_rounds >= watched else
                f"it has answered for {m.up_rounds} of {watched} rounds")
        return _decision(Situation.WATCHING_RETURNED_MEMBER,
            Action.NONE,
            None,
            f"{primary.host} is primary (epoch {snapshot.epoch}); {m.host} is back and "
            f"{_lag(m)}, but {seen}: watching it before resyncing it",
        )
    failback = _failback(snapshot, policy, primary)
    if failback is not None:
        return failback
    others = "; ".join(
        f"{m.host} {_lag(m)}" if m.host_liveness is Liveness.UP else f"{m.host} {_state(m)}"
        for m in snapshot.members
        if m.host != primary.host
    )
    tail = f"; {others}" if others and snapshot.replicated else ""
    if primary.observer_cut_off:
        # Up only by its peers' word: say so, this is why nothing moves (rule 8 never
        # applies while a second vantage sees it serving).
        tail = (" as its peers see it serving; the orchestrator cannot reach it itself: "
                "cut off from it, not failing over on its own view alone" + tail)
    situation = Situation.OBSERVER_CUT_OFF if primary.observer_cut_off else Situation.PRIMARY_UP
    return _decision(situation, Action.NONE, None,
                     f"{primary.host} is primary (epoch {snapshot.epoch}) and up{tail}")


def _failback(snapshot: ClusterSnapshot, policy: Policy, primary: MemberState) -> Decision | None:
    home = snapshot.configured_primary
    if policy.failback is not FailbackMode.AUTO or home is None or home == primary.host:
        return None
    member = snapshot.member(home)
    since = snapshot.failback_in_sync_since
    if member is None or member.host_liveness is not Liveness.UP or since is None:
        return None
    if snapshot.replicated and (member.lag_s is None or member.lag_s > policy.max_replica_lag_s):
        return None
    healthy_for = snapshot.now - since
    if healthy_for < policy.failback_min_healthy_s:
        return _decision(Situation.FAILBACK_PENDING,
            Action.NONE,
            None,
            f"{primary.host} is primary (epoch {snapshot.epoch}); failback to {home} in "
            f"{policy.failback_min_healthy_s - healthy_for:.0f} s (healthy and in sync for "
            f"{healthy_for:.0f} of {policy.failback_min_healthy_s:.0f} s)",
        )
    return _decision(Situation.FAILBACK_DUE,
        Action.FAILBACK,
        home,
        f"failing back from {primary.host} to {home}: {home} healthy and in sync for "
        f"{healthy_for:.0f} s (min {policy.failback_min_healthy_s:.0f} s), {_lag(member)}",
    )


def ineligibility(
    snapshot: ClusterSnapshot, policy: Policy, m: MemberState, *, allow_replica: bool = False
) -> str | None:
    """Why ``m`` cannot become primary now, or None when it can (Patroni style)."""
    if m.host == snapshot.primary:
        return f"{m.host} is the current primary"
    if m.role is Role.REPLICA and not allow_replica:
        return f"{m.host} is a replica (promoted only by an operator)"
    if m.host_liveness is not Liveness.UP:
        return f"{m.host} is {m.host_liveness.value}"
    if snapshot.replicated:
        if m.lag_s is None:
            return f"{m.host} has never been synced"
        if m.lag_s > policy.max_replica_lag_s:
            return f"{m.host} replica {m.lag_s:.0f} s behind (max {policy.max_replica_lag_s:.0f} s)"
    return None


def rank_targets(
    snapshot: ClusterSnapshot, policy: Policy, *, allow_replica: bool = False
) -> tuple[list[MemberState], list[str]]:
    """Eligible members best first (health, freshness, priority, name) and why others are not."""
    eligible, refused = [], []
    for m in snapshot.members:
        why = ineligibility(snapshot, policy, m, allow_replica=allow_replica)
        if why is None:
            eligible.append(m)
        elif m.host != snapshot.primary:
            refused.append(why)
    eligible.sort(key=lambda m: (
        m.failures,  # health: a member that failed probes lately ranks last
        m.lag_s if m.lag_s is not None else 0.0,
        -m.priority,
        m.host,
    ))
    return eligible, refused


def _failover(snapshot: ClusterSnapshot, policy: Policy, primary: MemberState) -> Decision:
    down = f"{primary.host} down for {_probes(primary)}"
    if snapshot.restart_attempts and primary.host_liveness is Liveness.UP:
        down += f", still down after {snapshot.restart_attempts} restart attempt(s)"
    if policy.required_vantages > 1 and not primary.confirmed:
        return _decision(Situation.DOWN_UNCONFIRMED,
            Action.HOLD,
            None,
            f"not failing over: {down}, but no second vantage confirms it "
            f"(needs {policy.required_vantages})",
        )
    window_start = snapshot.now - policy.failover_period_s
    recent = [t for t in snapshot.recent_failovers if t > window_start]
    if len(recent) >= policy.max_failovers:
        return _decision(Situation.FAILOVER_BUDGET_SPENT,
            Action.HOLD,
            None,
            f"not failing over: {down}, but the failover budget is spent: {len(recent)} "
            f"failovers in the last {policy.failover_period_s:.0f} s (max {policy.max_failovers})",
        )
    lease_wait = _lease_wait(snapshot, policy, primary)
    if lease_wait is not None:
        remaining, said = lease_wait
        if remaining == math.inf:
            return _decision(Situation.LEASE_WAIT, Action.HOLD, None,
                             f"not failing over: {down}; {said}. If {primary.host} is "
                             f"known to be off: crctl failover {snapshot.cluster}")
        if remaining > 0:
            return _decision(Situation.LEASE_WAIT, Action.HOLD, None,
                             f"not failing over yet: {down}; {said}: waiting "
                             f"{remaining:.1f} s more, so that it has stopped serving "
                             "before another host serves")
        down += f"; {said}"
    eligible, refused = rank_targets(snapshot, policy)
    if not eligible:
        why = "; ".join(refused) or "no other member"
        dr = _disaster_recovery(snapshot, policy, down=down, why=why)
        if dr is not None:
            return dr
        if policy.dr is DrMode.AUTO:  # say why no DR replica qualifies either
            why = "; ".join(rank_targets(snapshot, policy, allow_replica=True)[1]) or why
        return _decision(Situation.NO_ELIGIBLE_TARGET,
            Action.HOLD, None, f"not failing over: {down}, but no eligible target: {why}"
        )
    best = eligible[0]
    detail = f"{best.host} {_lag(best)}" if snapshot.replicated else f"{best.host} up"
    return _decision(Situation.PRIMARY_DOWN,
        Action.FAILOVER,
        best.host,
        f"failing over from {primary.host} to {best.host}: {down}; {detail}",
    )


def _lease_wait(snapshot: ClusterSnapshot, policy: Policy,
                primary: MemberState) -> tuple[float, str] | None:
    """How long the old primary's lease may still hold (<= 0: it ran out), with the
    sentence saying so; None when no wait applies: no renewal was granted to it, or the
    orchestrator reaches its host (a service-only failure: the failover stops it).

    Unreachable is not "not serving": cut off from the orchestrator and its peers, a
    host may still serve the clients that reach it. Only its own agent stops it, once
    no renewal came for ``lease_ttl``; the margin covers its check and the stop."""
    lease = snapshot.lease
    if lease is None or lease.host != primary.host or primary.host_liveness is Liveness.UP:
        return None
    if lease.held_paused:
        return math.inf, (f"{primary.host} may still hold the lease it was given while the "
                          "cluster was paused, which its agent keeps without end: no "
                          "ordinary renewal has reached it since the resume")
    since = snapshot.now - lease.at
    wait = policy.promotion_wait
    remaining = wait - since
    state = "may still hold" if remaining > 0 else "has run out"
    return remaining, (f"{primary.host}'s lease {state}: last renewal granted {since:.1f} s "
                       f"ago, lease_ttl {policy.lease_ttl:g} s + margin "
                       f"{policy.lease_margin:g} s = {wait:g} s")


def _disaster_recovery(snapshot: ClusterSnapshot, policy: Policy, *, down: str,
                       why: str) -> Decision | None:
    """No secondary can take over: may a DR replica (``cr_dr``)? None when none could."""
    replicas = [m for m in rank_targets(snapshot, policy, allow_replica=True)[0]
                if m.role is Role.REPLICA]
    if not replicas:
        return None
    best = replicas[0]
    command = f"crctl failover {snapshot.cluster} --to {best.host}"
    detail = f"{best.host} {_lag(best)}" if snapshot.replicated else f"{best.host} up"
    if policy.dr is not DrMode.AUTO:
        return _decision(Situation.DR_NEEDS_OPERATOR, Action.HOLD, None,
                         f"not failing over: {down}, but no eligible target: {why}; "
                         f"DR replica {detail} could (max {policy.max_replica_lag_s:.0f} s): "
                         f"cr_dr is manual, so an operator decides: run `{command}`")
    if snapshot.quorum is not True:
        side = ("this orchestrator's Redis is a single server, not a Sentinel quorum"
                if snapshot.quorum is None else
                "this orchestrator's Redis master lacks the replicas its quorum requires "
                "(it may be on the minority side of a partition)")
        return _decision(Situation.DR_NEEDS_QUORUM, Action.HOLD, None,
                         f"not failing over: {down}, but no eligible target: {why}; "
                         f"cr_dr is auto, but {side}: a DR promotion across sites is made "
                         f"only by the majority side; an operator who knows may run "
                         f"`{command}`")
    return _decision(Situation.DR_FAILOVER, Action.FAILOVER, best.host,
                     f"failing over from {snapshot.primary} to DR replica {best.host}: {down}; "
                     f"no secondary is eligible ({why}); {detail} (max "
                     f"{policy.max_replica_lag_s:.0f} s); cr_dr is auto and this "
                     "orchestrator is on the Redis quorum's majority side")


def with_member(snapshot: ClusterSnapshot, host: str,
                **changes: Unpack[MemberChanges]) -> ClusterSnapshot:
    """A copy of ``snapshot`` with one member's fields changed (handy for tests and flows)."""
    members = tuple(replace(m, **changes) if m.host == host else m for m in snapshot.members)
    return replace(snapshot, members=members)


__all__ = [
    "Action", "ClusterSnapshot", "Decision", "Interrupted", "LeaseGrant", "MemberChanges",
    "MemberState",
    "decide", "from_the_hosts", "ineligibility",
    "rank_targets", "with_member",
]
