"""The RedBeat schedule, generated from the inventory.

One probe-rounds entry per group of up to :data:`ROUND_BATCH` clusters that share a site
queue and a probe interval (one task runs the group's rounds together, sharing what their
probes can share: ``runtime/rounds.py``), and one sync entry per replica set (every
``every``), each routed to the queue of the site of the cluster's live primary (the
configured one until a promotion). Entry names start with
:data:`ENTRY_PREFIX`, so entries the inventory no longer describes are found and deleted;
entries of other origins are left alone.
"""

from __future__ import annotations

import contextlib

import logging
from dataclasses import dataclass
from datetime import timedelta

import redis as redis_lib
from celery import Celery
from celery.schedules import schedule as every
from redbeat import RedBeatSchedulerEntry
from redbeat.schedulers import RedBeatScheduler, get_redis

from cr_orchestrator.state.redis_address import master_changing
from cr_orchestrator.runtime.celery_app import site_queue
from cr_orchestrator.model import Cluster, Topology
from cr_orchestrator.state.cluster import ClusterState

ENTRY_PREFIX = "cr."
PROBE_TASK = "cr.probe_rounds"
# Clusters per probe-rounds task. A task per cluster cost beat ~1.7 ms and the worker's
# main process ~2.5 ms of CPU per round, and a worker process per round in flight made
# rounds wait for a free process from ~45 clusters on (bench/scale.py). A group's rounds
# run in threads of one task and share its probes (observe/shared.py); its CPU (~4-6 ms
# a round) must stay well inside the interval: 50 rounds took ~0.2 s of CPU, ~0.4 s of
# wall time in the lab (docs/benchmarks.md).
ROUND_BATCH = 50
SYNC_TASK = "cr.sync_set"


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wanted:
    name: str
    task: str
    interval_s: float
    args: tuple
    queue: str

    def options(self) -> dict:
        # A round that waited longer than two intervals is stale: drop it, a newer one comes.
        return {"queue": self.queue, "expires": max(2 * self.interval_s, 5.0)}


@dataclass(frozen=True)
class ScheduleChange:
    added: tuple[str, ...]
    updated: tuple[str, ...]
    removed: tuple[str, ...]
    kept: tuple[str, ...]

    def __str__(self) -> str:
        return (f"schedule: {len(self.added)} added, {len(self.updated)} updated, "
                f"{len(self.removed)} removed, {len(self.kept)} unchanged")


def probe_entry_name(site: str, interval_s: float, index: int) -> str:
    """The entry of the ``index``-th group of clusters probed every ``interval_s`` whose
    rounds run on ``site``'s queue."""
    return f"{ENTRY_PREFIX}probe.{site}.every-{interval_s:g}s.{index}"


def probe_entry_of(entries: dict, cluster: str) -> str | None:
    """The name of the probe entry (among ``entries``: name -> entry or :class:`Wanted`)
    whose group holds ``cluster``, or None."""
    for name, entry in entries.items():
        if name.startswith(f"{ENTRY_PREFIX}probe.") and cluster in (entry.args or [[]])[0]:
            return name
    return None


def sync_entry_name(cluster: str, replica_set: str) -> str:
    return f"{ENTRY_PREFIX}sync.{cluster}.{replica_set}"


def wanted_entries(*, topology: Topology, inventory_path: str,
                   primaries: dict[str, str] | None = None,
                   alive_sites: frozenset[str] | None = None,
                   batch: int = ROUND_BATCH) -> list[Wanted]:
    """Pure: the entries the inventory calls for (``primaries``: live primary per cluster;
    ``alive_sites``: the sites whose orchestrator nodes are alive, None: not known;
    ``batch``: clusters per probe-rounds entry at most)."""
    if batch < 1:
        raise ValueError(f"clusters per probe-rounds task must be at least 1, not {batch}")
    out, groups = [], {}
    for name, cluster in sorted(topology.clusters.items()):
        primary = (primaries or {}).get(name) or cluster.configured_primary
        site = route_site(topology, cluster, primary, alive_sites)
        groups.setdefault((site, cluster.policy.probe_interval_s), []).append(name)
        for rs in cluster.replica_sets:
            out.append(Wanted(sync_entry_name(name, rs.name), SYNC_TASK, rs.every_s,
                              (name, rs.name, inventory_path), site_queue(site)))
    for (site, interval), names in sorted(groups.items()):
        # groups of even size: 30 clusters make 15 + 15, not 25 + 5
        count = -(-len(names) // batch)
        size = -(-len(names) // count)
        for index in range(count):
            out.append(Wanted(probe_entry_name(site, interval, index), PROBE_TASK, interval,
                              (tuple(names[index * size:(index + 1) * size]), inventory_path),
                              site_queue(site)))
    return sorted(out, key=lambda w: w.name)


def _site_of(topology: Topology, cluster: Cluster, primary: str) -> str:
    if primary in topology.hosts and primary in cluster.hosts():
        return topology.hosts[primary].site
    return topology.hosts[cluster.configured_primary].site


def route_site(topology: Topology, cluster: Cluster, primary: str,
               alive_sites: frozenset[str] | None) -> str:
    """The site whose workers run the cluster's rounds: the live primary's, while an
    orchestrator node of that site is alive; else another site of the cluster's members
    that has one (the site that lost its primary's whole site must still decide: its
    node died with it). Unknown liveness, or no live node at all: the primary's site."""
    home = _site_of(topology, cluster, primary)
    if alive_sites is None or home in alive_sites:
        return home
    others = sorted({topology.hosts[h].site for h in cluster.hosts() if h in topology.hosts}
                    & alive_sites)
    return others[0] if others else home


def site_alive_key(prefix: str, site: str) -> str:
    return f"{prefix}:site-alive:{site}"


SITE_ALIVE_TTL_S = 5.0


def mark_sites_alive(redis_client: redis_lib.Redis, prefix: str, sites: list[str],
                     node: str) -> None:
    """This node's worker serves ``sites``: say so for a few seconds (renewed every loop
    of ``crctl run``; a node that dies, or is cut off from the Redis majority and can no
    longer write, drops out within :data:`SITE_ALIVE_TTL_S`)."""
    pipe = redis_client.pipeline(transaction=False)
    for site in sites:
        pipe.set(site_alive_key(prefix, site), node, px=int(SITE_ALIVE_TTL_S * 1000))
    pipe.execute()


def alive_sites(topology: Topology, redis_client: redis_lib.Redis,
                prefix: str) -> frozenset[str] | None:
    """Sites with a live orchestrator node; None when no node ever said (a setup without
    site nodes, e.g. one ``crctl run`` for every site, which marks them all)."""
    sites = sorted(topology.sites)
    values = redis_client.mget([site_alive_key(prefix, s) for s in sites])
    alive = frozenset(s for s, v in zip(sites, values, strict=True) if v is not None)
    return alive or None


def existing_entries(app: Celery) -> dict[str, RedBeatSchedulerEntry]:
    """Our entries now in RedBeat, by name."""
    client = get_redis(app)  # also attaches app.redbeat_conf
    conf_prefix = app.redbeat_conf.key_prefix
    out = {}
    for raw in client.zrange(app.redbeat_conf.schedule_key, 0, -1):
        key = raw.decode() if isinstance(raw, bytes) else raw
        name = key[len(conf_prefix):] if key.startswith(conf_prefix) else key
        if not name.startswith(ENTRY_PREFIX):
            continue
        try:
            out[name] = RedBeatSchedulerEntry.from_key(key, app=app)
        except KeyError:  # listed but its hash is gone: drop the dangling member
            client.zrem(app.redbeat_conf.schedule_key, key)
    return out


def missing_entries(app: Celery, topology: Topology, inventory_path: str) -> list[str]:
    """Entries the inventory calls for that RedBeat does not hold (its keys were lost)."""
    client = get_redis(app)
    have = {raw.decode() if isinstance(raw, bytes) else raw
            for raw in client.zrange(app.redbeat_conf.schedule_key, 0, -1)}
    prefix = app.redbeat_conf.key_prefix
    return [w.name for w in wanted_entries(topology=topology, inventory_path=inventory_path)
            if prefix + w.name not in have]


def _same(entry: RedBeatSchedulerEntry, want: Wanted) -> bool:
    run_every = getattr(entry.schedule, "run_every", None)
    return (entry.task == want.task and _args(entry.args) == want.args
            and run_every == timedelta(seconds=want.interval_s)
            and (entry.options or {}) == want.options())


def _args(args) -> tuple:
    # RedBeat stores args as JSON: a group's tuple of clusters comes back as a list
    return tuple(tuple(a) if isinstance(a, list) else a for a in (args or ()))


def sync_schedule(app: Celery, topology: Topology, inventory_path: str, *,
                  primaries: dict[str, str] | None = None,
                  alive: frozenset[str] | None = None) -> ScheduleChange:
    """Make RedBeat hold exactly the entries the inventory calls for.

    New entries are added, changed ones rewritten (keeping their last run time), and
    ``cr.*`` entries the inventory no longer describes are deleted.
    """
    have = existing_entries(app)
    added, updated, kept = [], [], []
    for want in wanted_entries(topology=topology, inventory_path=inventory_path,
                               primaries=primaries, alive_sites=alive):
        current = have.pop(want.name, None)
        if current is not None and _same(current, want):
            kept.append(want.name)
            continue
        RedBeatSchedulerEntry(
            name=want.name, task=want.task, schedule=every(timedelta(seconds=want.interval_s)),
            args=[list(a) if isinstance(a, tuple) else a for a in want.args], options=want.options(), app=app,
        ).save()
        (updated if current is not None else added).append(want.name)
    for entry in have.values():
        entry.delete()
    return ScheduleChange(tuple(added), tuple(updated), tuple(sorted(have)), tuple(kept))


def live_primaries(*, topology: Topology, redis_client: redis_lib.Redis,
                   prefix: str) -> dict[str, str]:
    """Who Redis says is primary, per cluster (clusters never started are left out)."""
    state = ClusterState(redis_client, prefix)
    return {name: p for name in topology.clusters if (p := state.primary(name))}


def follow_primaries(app: Celery, topology: Topology, inventory_path: str, *,
                     redis_client: redis_lib.Redis, prefix: str) -> ScheduleChange:
    """Re-route every cluster's entries to the site of its live primary (after a move),
    or to a site with a live orchestrator node when the primary's has none."""
    return sync_schedule(app, topology, inventory_path, primaries=live_primaries(
        topology=topology, redis_client=redis_client, prefix=prefix),
        alive=alive_sites(topology, redis_client, prefix))


def routing(topology: Topology, inventory_path: str, *, redis_client: redis_lib.Redis,
            prefix: str) -> dict[str, str]:
    """Entry name -> queue, as :func:`follow_primaries` would route now (cheap to compare)."""
    return {w.name: w.queue for w in wanted_entries(
        topology=topology, inventory_path=inventory_path,
        primaries=live_primaries(topology=topology, redis_client=redis_client, prefix=prefix),
        alive_sites=alive_sites(topology, redis_client, prefix))}


class RedisTolerantScheduler(RedBeatScheduler):
    # The lock is taken by tick (_take_lock), not by RedBeat's blocking beat_init handler
    # (disconnected below): a standby beat then waits tick by tick, each time through the
    # master the sentinels name now, instead of blocking on the one it first asked.

    """RedBeat's scheduler riding out a Redis restart (what `crctl run` starts beat with).

    RedBeat lets a connection error of its tick end beat, and `crctl run` stops with its
    child: one Redis restart would stop the whole orchestrator. While Redis is away no
    task can be sent anyway, so a tick that cannot reach it says so and tries again in a
    second. A lock another beat now owns still ends this one (LockError is not caught).

    With Sentinel, a master being replaced answers for a few seconds with errors that
    are not connection errors: ``NOREPLICAS`` (its replicas left it for the new master,
    so ``min-replicas-to-write`` refuses) and ``READONLY`` (it was demoted under an open
    connection). They pass the same way, and the connections are dropped so that the
    next tick asks the sentinels again; before this, each one ended beat and the
    restarts' back-off kept the cluster without rounds for a minute.
    """

    def tick(self, *args, **kwargs):
        if self.lock_key and self.lock is None and not self._take_lock():
            return 1.0  # standby: another beat holds the lock
        try:
            return super().tick(*args, **kwargs)
        except (redis_lib.ConnectionError, redis_lib.TimeoutError) as exc:
            log.warning("beat: Redis unreachable (%s); trying again in 1 s", exc)
            return 1.0
        except redis_lib.ResponseError as exc:
            if not master_changing(exc):
                raise
            log.warning("beat: the Redis master is being replaced (%s); trying again in 1 s",
                        str(exc).split(".")[0])
            with contextlib.suppress(Exception):
                client = get_redis(self.app)  # with Sentinel: asks the sentinels anew
                client.connection_pool.disconnect()
                if self.lock is not None:
                    # RedBeat's lock keeps the client it was taken with, on the old
                    # master; its key and token were replicated to the new one
                    self.lock.redis = client
            return 1.0

    def _take_lock(self) -> bool:
        """RedBeat takes its lock once, blocking, when beat starts; if that fails (the
        master it asked died or was cut off: a standby beat on the surviving site) beat
        would tick without a lock and end on its first extend, and a beat restarted in
        the middle of a partition blocks on the unreachable master. Here a tick without
        the lock tries to take it, without blocking, through a fresh client (with
        Sentinel: the master the sentinels name now)."""
        from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT

        try:
            client = get_redis(self.app)
            lock = client.lock(self.lock_key, timeout=self.lock_timeout,
                               sleep=self.max_interval)
            lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
            if not lock.acquire(blocking=False):
                return False
        except (redis_lib.ConnectionError, redis_lib.TimeoutError,
                redis_lib.ResponseError) as exc:
            log.warning("beat: cannot take the beat lock now (%s); trying again in 1 s", exc)
            return False
        log.info("beat: acquired the lock")
        self.lock = lock
        return True


def _lock_on_tick_only() -> None:
    from celery.signals import beat_init
    from redbeat.schedulers import acquire_distributed_beat_lock

    beat_init.disconnect(acquire_distributed_beat_lock)


_lock_on_tick_only()
