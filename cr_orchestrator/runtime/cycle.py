"""Observe → decide → act for one cluster, and the topology-change flows.

The Celery tasks (:mod:`cr_orchestrator.runtime.tasks`) and the operator commands call these
functions with an :class:`Env` that carries the real parts (Redis state, the playbook
runner, the sync engine, the probes). Every flow holds the cluster lock while it changes
the topology, re-checks the epoch it decided on, takes a new epoch by compare-and-set
*before* any playbook promotes anything (the fencing token), and appends what it did,
with its reason, to the cluster's event stream.

Flows:

- failover (unplanned): promote the best secondary with a new epoch; the playbook demotes
  or fences the old primary if it is reachable and moves the clients;
- switchover (planned, and failback): demote the primary, final sync from it, then
  promote the target with a new epoch: no write is lost; if the final sync fails the old
  primary is started again and nothing changes;
- rejoin: an old primary that came back serving is demoted (its epoch is older), then
  resynced from the live primary as a secondary (the RESYNC rule of the next round).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis as redis_lib

from cr_orchestrator.act.changes import (  # noqa: F401 - re-exported: the flows' public API
    LOCK_TTL_S, Env, Outcome, adopt, demote_rejoined, failover, flow_budget_s, reassert,
    restart_service, resume, resync, switchover, sync_sets,
)
from cr_orchestrator.decide.rules import Action, ClusterSnapshot, Decision, LeaseGrant, decide
from cr_orchestrator.errors import CrError
from cr_orchestrator.observe.health import Liveness
from cr_orchestrator.model import Cluster, Platform
from cr_orchestrator.decide.snapshot import build_snapshot, interrupted_change, latest_records, member_lags
from cr_orchestrator.state.batch import Batch
from cr_orchestrator.state.cluster import UNREAD, EventKind, LockBusy, LockKind, RoundRecord

if TYPE_CHECKING:
    from cr_orchestrator.act.lease import RenewalBatch
    from cr_orchestrator.observe.shared import SharedProbes

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- observe and decide
@dataclass(frozen=True)
class Observed:
    """What one observation of a cluster gave: the snapshot ``decide`` reads, and this
    round's probe results (stored by :func:`record`, not by :func:`observe`)."""

    snapshot: ClusterSnapshot
    observations: tuple
    # The state as read after probing (epoch then, last decision, ...; parsed when
    # used), and who held the cluster lock before or after probing (None: nobody).
    state: RoundRecord | None = None
    lock_holder: str | None = None


def observe(env: Env, cluster: Cluster, shared: SharedProbes | None = None) -> Observed:
    """Probe once and build the snapshot ``decide`` reads. Only reads: the state in
    Redis (a cluster without any is the inventory's word, ``seeded``), the stored
    window of observations plus this round's, and the replicas' freshness. Two round
    trips to Redis: one before probing, one after (each a pipeline of reads)."""
    from cr_orchestrator.decide.detector import assess, default_stale_after
    from cr_orchestrator.observe.store import ObservationStore
    from cr_orchestrator.state.freshness import FreshnessStore
    from cr_orchestrator.state.lease import LeaseStore

    state = env.state
    # read before probing: a change that lands while we probe shows as a newer epoch
    before = Batch(env.redis)
    first = state.read_record(before, cluster.name)
    before.run()
    recorded, epoch = first.value.primary, first.value.epoch
    primary = recorded or cluster.configured_primary
    policy = cluster.policy
    sharing = {} if shared is None else {"shared": shared}
    observations = tuple(env.probe(topology=env.topology, cluster=cluster, primary=primary,
                                   timeout_s=policy.probe_timeout_s, **sharing))
    now = env.clock()
    # The window must hold enough rounds to call a host down or up again even when rounds
    # run late (a round probing a dead host lasts up to the probe timeout and more).
    rounds = policy.failures_before_down + policy.successes_before_up + 2
    since = now - max(default_stale_after(policy),
                      rounds * (policy.probe_interval_s + policy.probe_timeout_s))
    hosts = list(cluster.hosts())
    after = Batch(env.redis)
    stored = ObservationStore(client=env.redis, prefix=env.prefix).read_recent(
        after, hosts=hosts, since=since)
    freshness = FreshnessStore(env.redis, env.prefix)
    records = {rs.name: freshness.read_records(after, cluster.name, rs.name, hosts=hosts, now=now)
               for rs in cluster.replica_sets}
    current = state.read_round(after, cluster.name, home=cluster.configured_primary)
    grant = LeaseStore(env.redis, env.prefix).read_grant(after, cluster.name)
    quorum = state.read_quorum(after)
    after.run()
    window = stored.value + list(observations)
    assessment = assess(cluster=cluster, observations=window, now=now)
    lags = member_lags(cluster=cluster, per_set={n: r.value for n, r in records.items()},
                       primary=primary)
    windows = frozenset(h for h in hosts if env.topology.hosts[h].platform is Platform.WINDOWS)
    read = current.value
    snapshot = build_snapshot(
        cluster=cluster, assessment=assessment, primary=primary, epoch=epoch,
        paused=read.record.paused, lags=lags,
        restart_attempts=read.restarts,
        recent_failovers=read.failovers,
        failback_in_sync_since=read.in_sync_since,
        now=now,
        records=latest_records(cluster=cluster.name, observations=window,
                               windows_hosts=windows),
        seeded=recorded is None or read.record.seeded,
        interrupted=interrupted_change(read.record.change),
        quorum=quorum.value,
        lease=LeaseGrant(*grant.value) if grant.value is not None else None)
    return Observed(snapshot, observations, read,
                    first.value.lock_holder or read.record.lock_holder)


def record(env: Env, cluster: Cluster, observed: Observed, decision: Decision | None) -> bool:
    """Write what a round saw and decided, in one transaction: its observations (the
    detector's window), the decision (history keys on its situation), and the
    decision's state effects. True when the decision went to history (it changed)."""
    from cr_orchestrator.observe.store import ObservationStore

    pipe, changed = env.redis.pipeline(transaction=True), False
    ObservationStore(client=env.redis, prefix=env.prefix).add(
        observations=observed.observations, pipe=pipe)
    if decision is not None:
        snapshot, state = observed.snapshot, env.state
        # a cluster Redis knew nothing of: the inventory's word, marked seeded until the
        # hosts' records confirm it (rule "hosts first")
        if snapshot.seeded:  # a no-op where Redis holds the state already: skip the call
            state.queue_ensure(pipe, cluster=cluster.name,
                               configured_primary=cluster.configured_primary)
        # the last decision as this round read it, under the round lock: nobody else
        # writes it (rounds of a cluster do not overlap)
        last = observed.state.last_decision if observed.state is not None else UNREAD
        changed = state.record_decision(
            cluster=cluster.name, action=decision.action.value, target=decision.target,
            reason=decision.reason, situation=decision.situation_key, epoch=snapshot.epoch,
            now=snapshot.now, members={m.host: _health_word(m) for m in snapshot.members},
            pipe=pipe, last=last)
        if decision.reset_restarts:
            state.reset_restarts(cluster.name, pipe=pipe)  # the incident is over
        state.set_in_sync_since(cluster=cluster.name, host=cluster.configured_primary,
                                since=decision.in_sync_since, pipe=pipe)
    if len(pipe):
        pipe.execute()
    return changed


def probe_round(env: Env, cluster_name: str, shared: SharedProbes | None = None,
                renewals: RenewalBatch | None = None) -> Outcome:
    """One observe → decide → act cycle for ``cluster_name`` (``shared``, ``renewals``:
    the tick's probes and lease renewals of the group it runs with, :func:`probe_rounds`)."""
    cluster = env.topology.cluster(cluster_name)
    policy = cluster.policy
    # One round of a cluster at a time: rounds that pile up on a busy machine would only
    # add load. The round lock covers observe + decide, not the action, so rounds keep
    # observing while a change runs (the detector needs an unbroken window). A round that
    # finds the previous one still running waits for it up to one interval instead of
    # giving up at once: a round a little longer than the interval (a dead host costs the
    # whole probe timeout) would otherwise skip every other tick and double detection.
    try:
        with env.state.lock(cluster=cluster.name, kind=LockKind.ROUND, wait_s=policy.probe_interval_s,
                            ttl_s=max(10.0, 3 * (policy.probe_interval_s + policy.probe_timeout_s))):
            observed = observe(env, cluster, shared)  # reads the cluster lock before and after probing
            snapshot = observed.snapshot
            holder = observed.lock_holder
            if holder is not None:
                record(env, cluster, observed, None)
                keep_lease(env, cluster, snapshot, renewals)
                return Outcome(True, f"observed {cluster.name}; a topology change holds the "
                                     f"lock ({holder}): not deciding now")
            assert observed.state is not None  # observe() always reads it
            moved_to = observed.state.record.epoch
            if moved_to != snapshot.epoch:
                # A change finished while we probed: what we saw may predate it.
                record(env, cluster, observed, None)
                keep_lease(env, cluster, snapshot, renewals)
                return Outcome(True, f"observed {cluster.name}; it moved to epoch "
                                     f"{moved_to} meanwhile: not deciding")
            decision = decide(snapshot, policy)
            changed = record(env, cluster, observed, decision)
    except LockBusy:
        return Outcome(True, f"skipped: the previous round of {cluster.name} is still running")
    # Logged as history keeps it: a decision that changed (or acts), at INFO; the same
    # decision again, every round of every cluster, only at DEBUG (formatting and
    # writing a line per round was a visible part of a round's CPU).
    log.log(logging.INFO if changed else logging.DEBUG, "%s: %s", cluster.name, decision.reason)
    renewal = keep_lease(env, cluster, snapshot, renewals)
    outcome = act(env, cluster, decision, snapshot)
    if renewal is not None and renewal.agent_up is False:
        from cr_orchestrator.act.lease import restart_agent

        log.info("%s: %s", cluster.name, restart_agent(env, cluster, renewal.host))
    return Outcome(outcome.ok, outcome.summary, decision, outcome.epoch)


@dataclass(frozen=True)
class RoundRun:
    """One cluster's round in a probe-rounds task: what it did, when, for how long."""

    cluster: str
    outcome: Outcome
    started: float
    seconds: float


_ROUNDS_LOCK = threading.Lock()
_ROUNDS: tuple[int, ThreadPoolExecutor] | None = None


def _rounds_pool() -> ThreadPoolExecutor:
    """The process's threads for rounds (a forked child makes its own). A round waits on
    sockets most of its time, and one acting (a playbook) may last minutes: threads, not
    processes, so a group's other rounds do not wait for it."""
    global _ROUNDS
    with _ROUNDS_LOCK:
        if _ROUNDS is None or _ROUNDS[0] != os.getpid():
            _ROUNDS = (os.getpid(), ThreadPoolExecutor(max_workers=128,
                                                       thread_name_prefix="cr-round"))
        return _ROUNDS[1]


def probe_rounds(env: Env, names: Sequence[str]) -> list[RoundRun]:
    """The rounds of a group of clusters at once, each :func:`probe_round` as alone
    (its own lock, state, decision and action), sharing one tick of probes
    (``observe/shared.py``): one probe per Linux host and one session per peer for the
    whole group. A round that fails is reported in its outcome, never raised."""
    from cr_orchestrator.act.changes import _probe_cluster
    from cr_orchestrator.act.lease import RenewalBatch
    from cr_orchestrator.observe.shared import SharedProbes

    clusters, runs = [], []
    for name in dict.fromkeys(names):  # once each, in order
        try:
            clusters.append(env.topology.cluster(name))
        except KeyError as exc:  # a schedule older than the inventory
            runs.append(RoundRun(name, Outcome(False, f"no round for {name}: {exc.args[0]}"),
                                 env.clock(), 0.0))
    shared = renewals = None
    try:
        read = env.state.primaries([c.name for c in clusters]) if len(clusters) > 1 else None
    except redis_lib.RedisError as exc:  # each round meets it too, and says so
        log.warning("rounds of %s share nothing this tick: %s", ", ".join(names), exc)
        read = None
    if read is not None:
        primaries = {c.name: read.get(c.name) or c.configured_primary for c in clusters}
        expected: dict[str, set[str]] = {}
        for name, host in primaries.items():
            expected.setdefault(host, set()).add(name)
        renewals = RenewalBatch(expected)
        if env.probe is _probe_cluster:  # a test's own probe shares nothing
            shared = SharedProbes(topology=env.topology, clusters=clusters,
                                  primaries=primaries, at=env.clock(),
                                  timeout_s=clusters[0].policy.probe_timeout_s)

    def one(cluster: Cluster) -> RoundRun:
        started, t0 = env.clock(), time.monotonic()
        try:
            outcome = probe_round(env, cluster.name, shared, renewals)
        except Exception as exc:  # noqa: BLE001 - one cluster's failure is not the group's
            log.exception("round of %s failed", cluster.name)
            outcome = Outcome(False, f"round of {cluster.name} failed: "
                                     f"{type(exc).__name__}: {exc}"[:300])
        finally:
            if renewals is not None:  # a round that never reached its renewal (skipped)
                renewals.over(cluster.name)
        return RoundRun(cluster.name, outcome, started, time.monotonic() - t0)

    if len(clusters) == 1:
        return runs + [one(clusters[0])]
    return runs + list(_rounds_pool().map(one, clusters))


def keep_lease(env: Env, cluster: Cluster, snapshot: ClusterSnapshot,
               renewals: RenewalBatch | None = None):
    """Renew the live primary's lease once this round's state write succeeded
    (``act/lease.py``); a failed renewal is logged, and the lease runs out on the host."""
    from cr_orchestrator.act.lease import renew

    try:
        return renew(env, cluster, snapshot, renewals)
    except CrError as exc:  # e.g. NotReplicated: this orchestrator renews nothing
        log.warning("%s: lease not renewed: %s", cluster.name, exc)
    except Exception as exc:  # noqa: BLE001 - Redis down: no renewal, the lease runs out
        log.warning("%s: lease not renewed: %s: %s", cluster.name, type(exc).__name__, exc)
    return None


def _health_word(m) -> str:
    if m.host_liveness is not Liveness.UP:
        return f"host {m.host_liveness.value}"
    return "up" if m.service_liveness is Liveness.UP else f"service {m.service_liveness.value}"


# Actions that a failure would otherwise repeat every round: they back off instead.
# (A failed restart counts as an attempt and leads to failover; a failover changes the
# primary, so the next decision differs.)
BACKOFF_ACTIONS = (Action.DEMOTE_REJOINED, Action.RESYNC, Action.FAILBACK, Action.REASSERT)


def act(env: Env, cluster: Cluster, decision: Decision, snapshot: ClusterSnapshot) -> Outcome:
    """Carry out ``decision``, backing off an action that keeps failing."""
    if decision.action not in BACKOFF_ACTIONS:
        return _dispatch(env, cluster, decision, snapshot)
    key = dict(cluster=cluster.name, action=decision.action.value, target=decision.target)
    failures, retry_at = env.state.backoff(**key)
    now = env.clock()
    if retry_at > now:
        return Outcome(True, f"not retrying {decision.action.value} of {decision.target} yet: "
                             f"it failed {failures} time(s); next try in {retry_at - now:.0f} s",
                       decision, snapshot.epoch)
    outcome = _dispatch(env, cluster, decision, snapshot)
    retry = env.state.record_action(**key, ok=outcome.ok, now=env.clock(),
                                    base_s=2 * cluster.policy.probe_interval_s)
    if retry is not None:
        return Outcome(False, f"{outcome.summary} (next try in {retry - env.clock():.0f} s)",
                       decision, outcome.epoch)
    return outcome


Change = Callable[[Env, Cluster, Decision, ClusterSnapshot], Outcome]

# Each action's change. NONE and HOLD change nothing. Every change re-checks, under the
# cluster lock, the epoch the decision was made at.
CHANGES: dict[Action, Change] = {
    Action.RESTART_SERVICE: lambda env, c, d, s: restart_service(
        env, c, host=d.target, expected_epoch=s.epoch, reason=d.reason),
    Action.FAILOVER: lambda env, c, d, s: failover(
        env, c, to=d.target, expected_epoch=s.epoch, reason=d.reason,
        old_primary_down=old_primary_host_down(s)),
    Action.DEMOTE_REJOINED: lambda env, c, d, s: demote_rejoined(
        env, c, host=d.target, expected_epoch=s.epoch, reason=d.reason),
    Action.REASSERT: lambda env, c, d, s: reassert(
        env, c, host=d.target, expected_epoch=s.epoch, reason=d.reason),
    Action.ADOPT: lambda env, c, d, s: adopt(
        env, c, host=d.target, epoch=d.epoch, expected_epoch=s.epoch, reason=d.reason),
    Action.RESUME: lambda env, c, d, s: resume(env, c, expected_epoch=s.epoch, reason=d.reason),
    Action.RESYNC: lambda env, c, d, s: resync(env, c, host=d.target, reason=d.reason),
    Action.FAILBACK: lambda env, c, d, s: switchover(
        env, c, to=d.target, expected_epoch=s.epoch, reason=d.reason, kind="failback"),
}


def _dispatch(env: Env, cluster: Cluster, decision: Decision,
              snapshot: ClusterSnapshot) -> Outcome:
    """Carry out ``decision`` through its entry in :data:`CHANGES`."""
    change = CHANGES.get(decision.action)
    if change is None:  # NONE, HOLD
        return Outcome(True, decision.reason, decision, snapshot.epoch)
    try:
        return change(env, cluster, decision, snapshot)
    except CrError as exc:
        env.state.append_event(cluster=cluster.name, kind=EventKind.ERROR, at=env.clock(),
                               data={"action": decision.action.value, "reason": str(exc)})
        return Outcome(False, f"{decision.action.value} not done: {exc}", decision)


def old_primary_host_down(snapshot: ClusterSnapshot) -> bool:
    """True when the live primary's host (not only its service) is down and a second
    vantage confirmed it: the failover need not try to reach it."""
    primary = snapshot.member(snapshot.primary) if snapshot.primary else None
    return (primary is not None and primary.host_liveness is Liveness.DOWN
            and primary.confirmed)


def serving_elsewhere(env: Env, cluster: Cluster) -> list[str]:
    """Members serving although they are not the live primary (an old primary back with
    its service autostarted): a scheduled sync must not copy into them before they are
    demoted. Two sources: the last round's verdicts, and the raw service probes of the
    last two rounds, since verdicts lag a member that just came back (the detector wants
    a few good probes in a row) while its service may already be serving."""
    decision = env.state.last_decision(cluster.name) or {}
    primary = env.state.primary(cluster.name)
    serving = {h for h, word in (decision.get("members") or {}).items() if word == "up"}
    return sorted((serving | _answered_lately(env, cluster)) - {primary})


def source_unreachable(env: Env, cluster: Cluster) -> str | None:
    """The live primary's host health word from the last round when it is not up
    ("host down", "host suspect"), else None: a sync from it would only wait out its
    ssh connect timeout, holding a worker process that the rounds deciding the failover
    need (and a set lock the promotion then waits for)."""
    decision = env.state.last_decision(cluster.name) or {}
    primary = env.state.primary(cluster.name)
    word = (decision.get("members") or {}).get(primary or "")
    return word if word and word.startswith("host ") else None


def _answered_lately(env: Env, cluster: Cluster) -> set[str]:
    from cr_orchestrator.observe.health import Health
    from cr_orchestrator.observe.store import ObservationStore

    policy = cluster.policy
    since = env.clock() - 2 * (policy.probe_interval_s + policy.probe_timeout_s)
    store = ObservationStore(client=env.redis, prefix=env.prefix)
    return {o.host for o in store.recent_for(hosts=cluster.hosts(), since=since)
            if o.subject.startswith("service:") and o.health in (Health.OK, Health.DEGRADED)}


def answering_now(env: Env, cluster: Cluster, *, timeout_s: float = 0.3) -> list[str]:
    """Members other than the live primary that accept a connection on a service port
    right now. The scheduled sync asks just before copying: a member that came back
    between two rounds (no probe has seen it yet) may already serve."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    primary = env.state.primary(cluster.name)
    ports = sorted({c.port for service in cluster.services for c in service.checks})
    pairs = [(m.host, env.topology.hosts[m.host].service_address, port)
             for m in cluster.members if m.host != primary for port in ports]

    def accepts(pair) -> bool:
        try:
            socket.create_connection(pair[1:], timeout=timeout_s).close()
            return True
        except OSError:
            return False

    if not pairs:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(pairs))) as pool:
        return sorted({p[0] for p, ok in zip(pairs, pool.map(accepts, pairs)) if ok})
