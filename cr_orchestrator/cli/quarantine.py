"""``crctl quarantine list|restore``: what a cluster's hosts keep aside, and putting it back."""

from __future__ import annotations

import argparse
import time

from cr_orchestrator.cli.control import add_redis_options, prefix_of, redis_of
from cr_orchestrator.cli.validate import add_inventory_options, inventory_of
from cr_orchestrator.errors import ConfigError, SyncError

LOCK_WAIT_S = 60.0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "quarantine", help="list or restore what replication kept aside on a cluster's hosts",
        description="Quarantine directories (<path>.cr-quarantine/<name>/) hold what a sync "
                    "would have overwritten or deleted. 'list' shows them per host and set; "
                    "'restore' copies one into the live primary's path (Maildir sets: only "
                    "messages the primary lacks; other sets: only with --force, never over "
                    "an existing file).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="quarantine directories per host and set")
    listing.add_argument("cluster", metavar="CLUSTER")
    listing.add_argument("replica_set", metavar="SET", nargs="?", help="default: every set")
    add_inventory_options(listing)
    listing.set_defaults(handler=run_list)
    restore = actions.add_parser("restore", help="copy a quarantine directory into the primary")
    restore.add_argument("cluster", metavar="CLUSTER")
    restore.add_argument("replica_set", metavar="SET")
    restore.add_argument("host", metavar="HOST", help="the host holding the quarantine")
    restore.add_argument("directory", metavar="DIR", help="its name (or full path) as listed")
    restore.add_argument("--force", action="store_true",
                         help="restore a set that is not a Maildir (never overwrites a file)")
    add_inventory_options(restore)
    add_redis_options(restore)
    restore.set_defaults(handler=run_restore)


def _topology_and_cluster(args: argparse.Namespace):
    from cr_orchestrator.inventory import load_topology

    topology = load_topology(inventory_of(args), vault_password_file=args.vault_password_file)
    try:
        return topology, topology.cluster(args.cluster)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None


def run_list(args: argparse.Namespace) -> int:
    from cr_orchestrator.act.sync.restore import list_quarantine

    topology, cluster = _topology_and_cluster(args)
    names = [args.replica_set] if args.replica_set else [rs.name for rs in cluster.replica_sets]
    print(f"{'HOST':<10} {'SET':<12} {'FILES':>6}  {'WHEN (UTC)':<20} DIRECTORY")
    failed = False
    for name in names:
        found, errors = list_quarantine(topology=topology, cluster=cluster.name, replica_set=name)
        for q in found:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(q.modified_at))
            note = "  (merge pending)" if q.pending_merge else ""
            print(f"{q.host:<10} {q.replica_set:<12} {q.files:>6}  {when:<20} {q.directory}{note}")
        for error in errors:
            print(f"  could not list: {error}")
        failed = failed or bool(errors)
    return 1 if failed else 0


def run_restore(args: argparse.Namespace) -> int:
    from cr_orchestrator.act.sync.restore import restore_quarantine
    from cr_orchestrator.state.cluster import ClusterState

    topology, cluster = _topology_and_cluster(args)
    state = ClusterState(redis_of(args), prefix_of(args))
    primary = state.primary(cluster.name)
    if not primary:
        raise SyncError(f"no cluster state for {cluster.name} in Redis: the live primary is "
                        "unknown, not restoring")
    epoch = state.epoch(cluster.name)
    # the set lock: no sync (and no change of primary) while files go into the primary
    with state.lock(cluster=cluster.name, replica_set=args.replica_set, wait_s=LOCK_WAIT_S):
        outcome = restore_quarantine(topology=topology, cluster=cluster.name,
                                     replica_set=args.replica_set, host=args.host,
                                     directory=args.directory, primary=primary, epoch=epoch,
                                     force=args.force)
    print(f"restored {outcome.copied} file(s) from {args.host}:{args.directory} into {primary} "
          f"(epoch {epoch}); {outcome.skipped} not copied")
    for path, reason in outcome.left:
        print(f"  kept in quarantine: {path}: {reason}")
    state.append_event(cluster=cluster.name, kind="operator", at=time.time(), data={
        "action": "quarantine.restore", "host": args.host, "directory": args.directory,
        "replica_set": args.replica_set, "into": primary, "epoch": epoch,
        "copied": outcome.copied, "skipped": outcome.skipped,
        "reason": f"restored {outcome.copied} file(s) from {args.host}:{args.directory} "
                  f"into {primary}; {outcome.skipped} not copied"})
    return 0
