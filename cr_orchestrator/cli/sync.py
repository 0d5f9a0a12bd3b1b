"""``crctl sync``: run one replication of a cluster's replica set(s) now, with progress."""

from __future__ import annotations

import argparse
import sys
import threading
import time

from cr_orchestrator.cli.control import add_redis_options, prefix_of, redis_of
from cr_orchestrator.cli.validate import add_inventory_options, inventory_of
from cr_orchestrator.errors import ConfigError, SyncError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sync", help="replicate a cluster's data from the current primary now",
        description="Copy one replica set (or all of a cluster's) from the current primary "
                    "(from Redis cluster state, else the configured primary or --from) to "
                    "every other member, printing each target's start and result.")
    parser.add_argument("cluster", metavar="CLUSTER")
    parser.add_argument("replica_set", metavar="SET", nargs="?", help="default: every set")
    parser.add_argument("--from", dest="source", metavar="HOST",
                        help="the source; must be the live primary when Redis knows one")
    parser.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                        help="hard deadline per target (default: 4 intervals, 2 min .. 1 h)")
    add_inventory_options(parser)
    add_redis_options(parser)
    parser.set_defaults(handler=run)


def choose_source(*, live_primary: str | None, live_epoch: int, requested: str | None,
                  configured: str) -> tuple[str, int, str]:
    """(source, epoch, why) — pure; refuses a --from that is not the live primary."""
    if live_primary:
        if requested and requested != live_primary:
            raise SyncError(f"refusing to sync from {requested}: the current primary is "
                            f"{live_primary} (epoch {live_epoch}) according to cluster state")
        return live_primary, live_epoch, f"current primary from cluster state (epoch {live_epoch})"
    if requested:
        return requested, 0, "no cluster state in Redis: source given with --from (epoch 0)"
    return configured, 0, "no cluster state in Redis: the configured primary (epoch 0)"


def _result_line(result) -> str:
    if result.ok:
        saved = (f"; {len(result.quarantined)} unreplicated file(s) moved to "
                 f"{result.quarantine_dir}" if result.quarantined else "")
        if result.merged is not None:
            saved += (f"; {result.merged} message(s) merged into the primary, "
                      f"{len(result.merge_left)} left in quarantine")
        return (f"ok, {result.files if result.files is not None else '?'} file(s), "
                f"{result.bytes if result.bytes is not None else '?'} bytes sent, "
                f"{result.deleted or 0} deleted in {result.duration_s:.1f} s{saved}")
    return f"FAILED after {result.duration_s:.1f} s: {result.error}"


_SAY = threading.Lock()


def _say(line: str) -> None:
    """One whole line at a time: targets report from their own threads, and print()
    writes the text and its newline separately (two lines once came out as one)."""
    with _SAY:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    from cr_orchestrator.inventory import load_topology
    from cr_orchestrator.state.cluster import ClusterState
    from cr_orchestrator.act.sync import FreshnessStore, sync_replica_set

    topology = load_topology(inventory_of(args), vault_password_file=args.vault_password_file)
    try:
        cluster = topology.cluster(args.cluster)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None
    if args.replica_set:
        names = [args.replica_set]
    else:
        names = [rs.name for rs in cluster.replica_sets]
        if not names:
            raise ConfigError(f"cluster {cluster.name} has no cr_replica_sets in {topology.source}")
    client, prefix = redis_of(args), prefix_of(args)
    state = ClusterState(client, prefix)
    live = state.primary(cluster.name)
    source, epoch, why = choose_source(live_primary=live, live_epoch=state.epoch(cluster.name) if live else 0,
                                       requested=args.source, configured=cluster.configured_primary)
    store = FreshnessStore(client, prefix)
    all_ok = True
    for name in names:
        print(f"sync {cluster.name}/{name} from {source}: {why}", flush=True)
        report = sync_replica_set(
            topology=topology, cluster=cluster.name, replica_set=name, source=source, epoch=epoch,
            store=store, deadline_s=args.deadline,
            on_progress=lambda host, phase, result: _say(
                f"  {host}: {'started' if result is None else _result_line(result)}"))
        for problem in report.problems:
            print(f"  problem: {problem}", flush=True)
        for event in report.events():
            state.append_event(cluster=cluster.name, kind=event["kind"], data=event, at=time.time())
        all_ok = all_ok and report.ok
    return 0 if all_ok else 1
