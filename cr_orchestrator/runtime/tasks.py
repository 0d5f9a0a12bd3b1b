"""The Celery tasks: thin wrappers that build an :class:`~cr_orchestrator.runtime.cycle.Env` and
call a flow. Idempotent by construction (``task_acks_late`` may deliver twice): a round
only observes and decides, and every topology change re-checks the epoch under the
cluster lock before it acts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from cr_orchestrator.runtime.config import runtime
from cr_orchestrator.runtime import cycle
from cr_orchestrator.runtime.celery_app import app
from cr_orchestrator.errors import CrError, StateError
from cr_orchestrator.metrics import record_round, record_rounds
from cr_orchestrator.model import Topology
from cr_orchestrator.state.cluster import EventKind, connect

log = logging.getLogger(__name__)

_CACHE_LOCK = threading.Lock()
_TOPOLOGIES: dict[str, tuple[tuple, Topology]] = {}


def inventory_signature(path: str | Path) -> tuple:
    """Names, sizes and mtimes of every file of an inventory (file or directory)."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    out = []
    for f in files:
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        out.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(out)


def topology_for(inventory_path: str) -> Topology:
    """The validated topology, reloaded only when a file of the inventory changed."""
    from cr_orchestrator.inventory import load_topology

    signature = inventory_signature(inventory_path)
    with _CACHE_LOCK:
        cached = _TOPOLOGIES.get(inventory_path)
        if cached and cached[0] == signature:
            return cached[1]
    topology = load_topology(inventory_path,
                             vault_password_file=runtime().vault_password_file)
    with _CACHE_LOCK:
        _TOPOLOGIES[inventory_path] = (signature, topology)
    return topology


_CLIENTS: dict[tuple[int, str], object] = {}


def _redis_client(url: str):
    """One client (and connection pool) per worker process: a new one per round cost a
    TCP connection per round (bench/scale.py)."""
    key = (os.getpid(), url)
    with _CACHE_LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = connect(url)
        return _CLIENTS[key]


def make_env(inventory_path: str) -> cycle.Env:
    return cycle.Env(topology=topology_for(inventory_path), redis=_redis_client(app.conf.cr_redis_url),
                     prefix=app.conf.cr_prefix,
                     vault_password_file=runtime().vault_password_file)


# ignore_result: nobody waits for a round; each stored result cost Redis writes and an hour
# of memory (360 000 keys an hour at 100 clusters, bench/scale.py).
@app.task(name="cr.probe_round", ignore_result=True)
def probe_round(cluster: str, inventory_path: str) -> dict:
    """Observe → decide → act for one cluster, alone (beat sends :func:`probe_rounds`
    for groups; this one is for a round asked for by hand or by a test)."""
    env = make_env(inventory_path)
    started = time.time()
    outcome = cycle.probe_round(env, cluster)
    record_round(env.redis, env.prefix, cluster=cluster, started=started, outcome=outcome)
    if outcome.decision is not None and outcome.epoch is not None:
        _follow_primary(env, inventory_path, cluster, outcome)
    return _result(outcome)


@app.task(name="cr.probe_rounds", ignore_result=True)
def probe_rounds(clusters: list[str], inventory_path: str) -> dict:
    """Observe → decide → act for a group of clusters at once, sharing the tick's probes
    (what beat runs: one entry per group, runtime/schedule.py)."""
    env = make_env(inventory_path)
    runs = cycle.probe_rounds(env, clusters)
    record_rounds(env.redis, env.prefix,
                  [(r.cluster, r.started, r.seconds, r.outcome) for r in runs])
    moved = [r for r in runs if r.outcome.decision is not None and r.outcome.epoch is not None]
    if moved:
        _follow_primary(env, inventory_path, ", ".join(r.cluster for r in moved),
                        *(r.outcome for r in moved))
    # what the worker logs of each task: short, a group of up to 50 rounds runs every tick
    failed = [r.cluster for r in runs if not r.outcome.ok]
    skipped = sum(r.outcome.summary.startswith("skipped:") for r in runs)
    return {"rounds": len(runs), "failed": failed, "skipped": skipped,
            "slowest_s": round(max((r.seconds for r in runs), default=0.0), 3)}


def _follow_primary(env: cycle.Env, inventory_path: str, cluster: str,
                    *outcomes: cycle.Outcome) -> None:
    # After a promotion the cluster's entries move to the new primary's site queue.
    from cr_orchestrator.decide.rules import Action
    from cr_orchestrator.runtime.schedule import follow_primaries

    if any(o.decision is not None
           and o.decision.action in (Action.FAILOVER, Action.FAILBACK, Action.ADOPT)
           for o in outcomes):
        change = follow_primaries(app, env.topology, inventory_path, redis_client=env.redis,
                                  prefix=env.prefix)
        log.info("%s: %s", cluster, change)


@app.task(name="cr.sync_set")
def sync_set(cluster: str, replica_set: str, inventory_path: str) -> dict:
    """Copy one replica set from the live primary to its targets (scheduled per set)."""
    env = make_env(inventory_path)
    c = env.topology.cluster(cluster)
    # Syncs go on while a cluster is paused: pausing stops topology changes, not the
    # copies that keep the secondaries ready for the operator's own decision.
    unreachable = cycle.source_unreachable(env, c)
    if unreachable:
        return {"ok": True, "summary": f"not syncing {replica_set} of {cluster} now: its "
                                        f"source, the primary, is {unreachable} (last round)"}
    serving = cycle.serving_elsewhere(env, c) or cycle.answering_now(env, c)
    if serving:
        return {"ok": True, "summary": f"not syncing {replica_set} of {cluster} now: "
                                        f"{', '.join(serving)} serve(s) without being primary "
                                        "(waiting for the demotion)"}
    try:
        reports = cycle.sync_sets(env, c, sets=[replica_set])
    except StateError as exc:  # the set (or a change) holds the lock: next run catches up
        return {"ok": True, "summary": str(exc)}
    except CrError as exc:  # refused (stale epoch, unknown set): nothing was copied
        env.state.append_event(cluster=cluster, kind=EventKind.ERROR,
                               data={"action": "sync", "reason": str(exc)})
        return {"ok": False, "summary": str(exc)}
    ok = all(r.ok for r in reports)
    return {"ok": ok, "summary": f"{replica_set} of {cluster}: "
                                 + ("; ".join(_report_line(r) for r in reports) or "nothing")}


def _report_line(report) -> str:
    parts = [f"{t.host} {'ok' if t.ok else 'FAILED: ' + str(t.error)}" for t in report.targets]
    return f"from {report.source} (epoch {report.epoch}): " + ", ".join(parts)


@app.task(name="cr.operator")
def operator(command: str, cluster: str, inventory_path: str, to: str | None = None, *,
             seen_primary: str | None = None, seen_epoch: int | None = None,
             force: bool = False) -> dict:
    """An operator command run by a worker of the cluster's site (``crctl ... --queue``),
    refused if the cluster moved since the operator saw it (``seen_*``)."""
    from cr_orchestrator.runtime.commands import Seen, run_command

    from cr_orchestrator.runtime.schedule import follow_primaries

    env = make_env(inventory_path)
    try:
        seen = None if seen_epoch is None else Seen(seen_primary, int(seen_epoch))
        outcome = run_command(env, command=command, cluster=cluster, to=to, seen=seen,
                              force=force)
    except CrError as exc:
        return {"ok": False, "summary": str(exc)}
    follow_primaries(app, env.topology, inventory_path, redis_client=env.redis,
                     prefix=env.prefix)
    return _result(outcome)


def _result(outcome: cycle.Outcome) -> dict:
    d = outcome.decision
    return {"ok": outcome.ok, "summary": outcome.summary, "epoch": outcome.epoch,
            "action": d.action.value if d else None, "target": d.target if d else None,
            "reason": d.reason if d else None}
