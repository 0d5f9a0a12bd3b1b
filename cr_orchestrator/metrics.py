"""``/metrics``: the orchestrator's state in the Prometheus text format.

Everything is read from Redis at scrape time (a custom collector), so the numbers are
right whichever worker did the work and however many ``crctl serve`` answer scrapes.
What only a probe round knows (how long it took, when beat last started one, what it
decided, how failovers ended) is counted into Redis by :func:`record_round`, a one-line
hook in the round task; those counters live under ``{prefix}:metrics:*``.

Names follow Patroni's and ha_cluster_exporter's habits: one prefix (``cr_``), base
units (seconds, unix timestamps), ``_total`` counters, labels for cluster, host, set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry

from cr_orchestrator.model import Topology

log = logging.getLogger(__name__)

# Bounds of cr_probe_round_seconds: a round is ~0.1-1 s, one probing a dead host lasts up
# to its probe timeout, one that carries out a failover or a switchover up to minutes.
ROUND_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def _key(prefix: str, part: str) -> str:
    return f"{prefix}:metrics:{part}"


def record_round(client: redis.Redis, prefix: str, *, cluster: str, started: float,
                 outcome: object) -> None:
    """Count one finished probe round (called by the round task; never raises: a metric
    must not fail a round). ``outcome``: the round's :class:`~cr_orchestrator.act.changes.Outcome`."""
    record_rounds(client, prefix, [(cluster, started, max(0.0, time.time() - started), outcome)])


def record_rounds(client: redis.Redis, prefix: str,
                  rounds: list[tuple[str, float, float, object]]) -> None:
    """Count finished probe rounds, each ``(cluster, started, seconds, outcome)``, in one
    round trip (a probe-rounds task's group); never raises."""
    if not rounds:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for cluster, _, seconds, outcome in rounds:
            decision = getattr(outcome, "decision", None)
            hist = _key(prefix, f"round:{cluster}")
            for bound in ROUND_BUCKETS:
                if seconds <= bound:
                    pipe.hincrby(hist, f"le:{bound}", 1)
            pipe.hincrby(hist, "count", 1)
            pipe.hincrbyfloat(hist, "sum", seconds)
            if decision is not None:
                action = str(getattr(decision.action, "value", decision.action))
                pipe.hincrby(_key(prefix, "decisions"), f"{cluster}|{action}", 1)
                if action == "failover":
                    result = "ok" if getattr(outcome, "ok", False) else "failed"
                    pipe.hincrby(_key(prefix, "failovers"), f"{cluster}|{result}", 1)
        pipe.set(_key(prefix, "beat_last_tick"), repr(max(r[1] for r in rounds)))
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not record the rounds' metrics of %s: %s",
                    ", ".join(r[0] for r in rounds), exc)


def _pairs(raw: dict) -> Iterator[tuple[str, str, float]]:
    for field, value in raw.items():
        name = field.decode() if isinstance(field, bytes) else field
        left, _, right = name.partition("|")
        yield left, right, float(value)


class StateCollector:
    """A prometheus_client collector reading the orchestrator's Redis state."""

    def __init__(self, *, topology_of, client: redis.Redis, prefix: str) -> None:
        self.topology_of = topology_of  # () -> Topology: reloaded when the inventory changes
        self.client, self.prefix = client, prefix

    def describe(self) -> list:
        return []  # collected at scrape time: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("cr_state_up", "1 when the orchestrator's Redis answered this scrape")
        try:
            families = list(self._families(self.topology_of()))
        except redis.RedisError as exc:
            log.warning("metrics: Redis unreachable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, topology: Topology) -> Iterator[Metric]:
        from cr_orchestrator.observe.health import ORCHESTRATOR, Health
        from cr_orchestrator.observe.store import ObservationStore
        from cr_orchestrator.state.cluster import ClusterState
        from cr_orchestrator.state.freshness import FreshnessStore

        state = ClusterState(self.client, self.prefix)
        fresh = FreshnessStore(self.client, self.prefix)
        store = ObservationStore(client=self.client, prefix=self.prefix)
        now = time.time()
        primary = GaugeMetricFamily("cr_cluster_primary", "1 for the member that is the live "
                                    "primary (as recorded in Redis), 0 for the others",
                                    labels=["cluster", "host"])
        serving = GaugeMetricFamily("cr_cluster_primary_serving", "1 when the live primary's "
                                    "host and service were up in the last round",
                                    labels=["cluster"])
        member_up = GaugeMetricFamily("cr_member_up", "1 when the last round found the member "
                                      "up (host and service)", labels=["cluster", "host"])
        epoch = GaugeMetricFamily("cr_cluster_epoch", "fencing epoch (+1 on every promotion)",
                                  labels=["cluster"])
        paused = GaugeMetricFamily("cr_cluster_paused", "1 while an operator paused the cluster",
                                   labels=["cluster"])
        probe_up = GaugeMetricFamily("cr_probe_up", "1 when the orchestrator's latest probe of "
                                     "this check answered (ok or degraded)",
                                     labels=["cluster", "host", "check"])
        lag = GaugeMetricFamily("cr_replication_lag_seconds", "seconds of writes a target may "
                                "miss (now - start of its last good sync)",
                                labels=["cluster", "set", "target"])
        max_lag = GaugeMetricFamily("cr_replication_max_lag_seconds", "the policy's "
                                    "max_replica_lag", labels=["cluster"])
        recent = GaugeMetricFamily("cr_failovers_in_period", "failovers inside the policy's "
                                   "failover_period", labels=["cluster"])
        budget = GaugeMetricFamily("cr_failovers_max", "the policy's max_failovers per period",
                                   labels=["cluster"])
        for name, cluster in sorted(topology.clusters.items()):
            live = state.primary(name) or cluster.configured_primary
            words = dict((state.last_decision(name) or {}).get("members") or {})
            for host in cluster.hosts():
                primary.add_metric([name, host], 1 if host == live else 0)
                member_up.add_metric([name, host], 1 if words.get(host) == "up" else 0)
            serving.add_metric([name], 1 if words.get(live) == "up" else 0)
            epoch.add_metric([name], state.epoch(name))
            paused.add_metric([name], 1 if state.paused(name) else 0)
            latest: dict[tuple[str, str], bool] = {}
            for obs in store.recent_for(hosts=cluster.hosts(), since=now - 600):
                if obs.vantage == ORCHESTRATOR:
                    latest[(obs.host, obs.subject)] = obs.health in (Health.OK, Health.DEGRADED)
            for (host, check), ok in sorted(latest.items()):
                probe_up.add_metric([name, host, check], 1 if ok else 0)
            for rs in cluster.replica_sets:
                for host, record in sorted(fresh.freshness(name, rs.name, now=now).items()):
                    # the live primary's own record is from when it was a target: not a lag
                    if record.lag_s is not None and host != live:
                        lag.add_metric([name, rs.name, host], record.lag_s)
            max_lag.add_metric([name], cluster.policy.max_replica_lag_s)
            period = cluster.policy.failover_period_s
            recent.add_metric([name], sum(1 for t in state.failovers(name) if t > now - period))
            budget.add_metric([name], cluster.policy.max_failovers)
        yield from (primary, serving, member_up, epoch, paused, probe_up, lag, max_lag,
                    recent, budget)
        yield from self._counted(topology)

    def _counted(self, topology: Topology) -> Iterator[Metric]:
        failovers = CounterMetricFamily("cr_failovers", "failovers the rounds carried out, "
                                        "by result", labels=["cluster", "result"])
        for cluster, result, value in sorted(_pairs(self.client.hgetall(_key(self.prefix, "failovers")))):
            failovers.add_metric([cluster, result], value)
        decisions = CounterMetricFamily("cr_decision", "decisions of the probe rounds, by action",
                                        labels=["cluster", "action"])
        for cluster, action, value in sorted(_pairs(self.client.hgetall(_key(self.prefix, "decisions")))):
            decisions.add_metric([cluster, action], value)
        rounds = HistogramMetricFamily("cr_probe_round_seconds", "duration of one probe round "
                                       "(observe, decide and the action it started)",
                                       labels=["cluster"])
        for name in sorted(topology.clusters):
            raw = {k.decode(): float(v) for k, v in
                   self.client.hgetall(_key(self.prefix, f"round:{name}")).items()}
            if not raw:
                continue
            buckets = [(str(b), raw.get(f"le:{b}", 0.0)) for b in ROUND_BUCKETS]
            buckets.append(("+Inf", raw.get("count", 0.0)))
            rounds.add_metric([name], buckets, raw.get("sum", 0.0))
        tick = GaugeMetricFamily("cr_beat_last_tick_timestamp", "unix time the last scheduled "
                                 "probe round started (beat sends one per interval)")
        raw_tick = self.client.get(_key(self.prefix, "beat_last_tick"))
        if raw_tick is not None:
            tick.add_metric([], float(raw_tick))
        yield from (failovers, decisions, rounds, tick)


def registry_for(*, topology_of, client: redis.Redis, prefix: str) -> CollectorRegistry:
    """A registry holding only the state collector (no process metrics of the server
    itself: they would differ between two consoles scraped for the same state)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(topology_of=topology_of, client=client, prefix=prefix))
    return registry
