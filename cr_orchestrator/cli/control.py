"""``crctl switchover|failover|failback|pause|resume|adopt|recover CLUSTER``: operator commands.

Run in this process by default (under the cluster lock, like the worker's own changes);
``--queue`` hands the command to a worker of the cluster's site instead and waits for it.
Each prints what happened as one sentence and exits 0 on success, 1 when the change was
refused or failed (the reason is printed and is in ``crctl history``).

Each carries the primary and epoch the operator saw: read from Redis when the command is
issued, or given with ``--seen-primary HOST --seen-epoch N`` (what ``crctl status``
showed). A command that finds the cluster moved since is refused and says what changed;
``--force`` acts on the cluster as it is now, and the history records that it was forced.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cr_orchestrator.runtime.commands import Seen

HELP = {
    "switchover": "planned change of primary: demote, final sync, promote (no data loss)",
    "failover": "forced change of primary now (the primary is gone); --to may name a replica",
    "failback": "planned change back to the configured primary",
    "pause": "stop automatic actions for a cluster (probes and history go on)",
    "resume": "allow automatic actions again",
    "adopt": "record --to HOST as the live primary without touching any host (when Redis "
             "lost its state and the orchestrator holds, asking an operator to choose)",
    "recover": "rebuild the primary and epoch from the members' own epoch and role records "
               "(Redis came back empty or behind): shows what each host recorded, then adopts",
}


def add_redis_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=None,
                        help="Redis URL (default: $CR_REDIS_URL or redis://127.0.0.1:6379/0)")
    parser.add_argument("--prefix", default=None, help="Redis key prefix (default: $CR_PREFIX or cr)")


def redis_of(args: argparse.Namespace):
    from cr_orchestrator.state.cluster import connect

    return connect(args.redis_url)


def prefix_of(args: argparse.Namespace) -> str:
    from cr_orchestrator.runtime.config import runtime

    return args.prefix or runtime().prefix


def register(subparsers) -> None:
    from cr_orchestrator.cli.validate import add_inventory_options

    for command, text in HELP.items():
        parser = subparsers.add_parser(command, help=text, description=text)
        parser.add_argument("cluster", metavar="CLUSTER")
        if command in ("switchover", "failover"):
            parser.add_argument("--to", metavar="HOST", help="the new primary (default: the "
                                "best eligible secondary)")
        if command == "adopt":
            parser.add_argument("--to", metavar="HOST", required=True,
                                help="the member that is (or is to be) the primary")
        add_inventory_options(parser)
        add_redis_options(parser)
        if command not in ("pause", "resume"):
            parser.add_argument("--queue", action="store_true",
                                help="let a worker of the cluster's site run it, and wait")
        if command != "resume":
            parser.add_argument("--seen-primary", metavar="HOST",
                                help="the primary you saw (default: the one now)")
            parser.add_argument("--seen-epoch", metavar="N", type=int,
                                help="the epoch you saw (default: the one now)")
            parser.add_argument("--force", action="store_true",
                                help="act even if the cluster moved since you looked")
        parser.set_defaults(handler=run, command_name=command)


def seen_of(args: argparse.Namespace, state) -> Seen:
    """What the operator saw: the flags, else the cluster as it is when issued."""
    from cr_orchestrator.runtime.commands import Seen

    primary = getattr(args, "seen_primary", None)
    epoch = getattr(args, "seen_epoch", None)
    if (primary is None) != (epoch is None):
        from cr_orchestrator.errors import ConfigError

        raise ConfigError("--seen-primary and --seen-epoch go together (both from "
                          "`crctl status`)")
    if primary is None:
        return Seen(state.primary(args.cluster), state.epoch(args.cluster))
    return Seen(primary, epoch)


def run(args: argparse.Namespace) -> int:
    from cr_orchestrator.runtime.commands import run_command
    from cr_orchestrator.state.cluster import ClusterState, EventKind

    command = args.command_name
    if command in ("pause", "resume") and not args.inventory:
        state = ClusterState(redis_of(args), prefix_of(args))
        paused = command == "pause"
        state.set_paused(args.cluster, paused)
        word = "paused: no automatic action until resumed" if paused else \
            "resumed: automatic actions allowed again"
        state.append_event(cluster=args.cluster, kind=EventKind.OPERATOR,
                           data={"command": command, "reason": f"operator: {args.cluster} {word}"})
        print(f"{args.cluster} {word}")
        return 0
    from cr_orchestrator.cli.validate import inventory_of

    inventory = str(Path(inventory_of(args)).resolve())
    seen = seen_of(args, ClusterState(redis_of(args), prefix_of(args)))
    if getattr(args, "queue", False):
        return _via_queue(args, command, inventory, seen)
    from cr_orchestrator.runtime.cycle import Env
    from cr_orchestrator.inventory import load_topology

    env = Env(topology=load_topology(inventory, vault_password_file=args.vault_password_file),
              redis=redis_of(args), prefix=prefix_of(args),
              vault_password_file=args.vault_password_file)
    outcome = run_command(env, command=command, cluster=args.cluster,
                          to=getattr(args, "to", None), seen=seen,
                          force=getattr(args, "force", False))
    print(outcome.summary, file=sys.stdout if outcome.ok else sys.stderr)
    if outcome.epoch is not None:
        # The schedule follows the primary to its site (a running `crctl run` reads it).
        from cr_orchestrator.runtime.celery_app import make_app
        from cr_orchestrator.runtime.schedule import follow_primaries

        follow_primaries(make_app(redis_url=args.redis_url, prefix=prefix_of(args)),
                         env.topology, inventory, redis_client=env.redis, prefix=env.prefix)
    return 0 if outcome.ok else 1


def _via_queue(args: argparse.Namespace, command: str, inventory: str, seen) -> int:
    from cr_orchestrator.runtime.celery_app import SOFT_TIME_LIMIT_S, make_app, site_queue
    from cr_orchestrator.inventory import load_topology
    from cr_orchestrator.state.cluster import ClusterState

    app = make_app(redis_url=args.redis_url, prefix=prefix_of(args))
    topology = load_topology(inventory, vault_password_file=args.vault_password_file)
    cluster = topology.cluster(args.cluster)
    primary = ClusterState(redis_of(args), prefix_of(args)).primary(cluster.name) \
        or cluster.configured_primary
    queue = site_queue(topology.hosts[primary].site)
    result = app.send_task("cr.operator", args=[command, cluster.name, inventory,
                                                getattr(args, "to", None)],
                           kwargs={"seen_primary": seen.primary, "seen_epoch": seen.epoch,
                                   "force": bool(getattr(args, "force", False))}, queue=queue)
    print(f"sent to {queue} as task {result.id}; waiting", file=sys.stderr)
    answer = result.get(timeout=SOFT_TIME_LIMIT_S + 60)
    print(answer["summary"], file=sys.stdout if answer["ok"] else sys.stderr)
    return 0 if answer["ok"] else 1
