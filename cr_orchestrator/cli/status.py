"""``crctl status``: the clusters as configured, with live state from Redis when reachable."""

from __future__ import annotations

import argparse

from cr_orchestrator.runtime.config import runtime
from cr_orchestrator.cli.validate import add_inventory_options, inventory_of
from cr_orchestrator.errors import StateError
from cr_orchestrator.inventory import load_topology, render_status
from cr_orchestrator.model import Topology


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "status", help="show clusters, members, roles, switch method, policy and live state",
        description="Show every cluster of the inventory: members and roles, how clients "
                    "are switched, failback and policy; with the live state from Redis "
                    "(primary now, epoch, paused, health, replica age) when reachable.")
    add_inventory_options(parser)
    parser.add_argument("--redis-url", default=None,
                        help="Redis URL (default: $CR_REDIS_URL or redis://127.0.0.1:6379/0)")
    parser.add_argument("--prefix", default=None, help="Redis key prefix (default: $CR_PREFIX or cr)")
    parser.add_argument("--no-live", action="store_true",
                        help="show the configuration only; do not read Redis")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    topology = load_topology(inventory_of(args), vault_password_file=args.vault_password_file)
    if args.no_live:
        print(render_status(topology, live=None, live_note="--no-live"))
        return 0
    live, note = read_live(topology, redis_url=args.redis_url,
                           prefix=args.prefix or runtime().prefix)
    print(render_status(topology, live=live, live_note=note))
    if live is not None:
        for line in lease_lines(topology, redis_url=args.redis_url,
                                prefix=args.prefix or runtime().prefix):
            print(line)
    return 0


def lease_lines(topology: Topology, *, redis_url: str | None, prefix: str) -> list[str]:
    """Each cluster's lease: the last renewal and what it said of the host's agent."""
    import time

    from cr_orchestrator.state.cluster import connect
    from cr_orchestrator.state.lease import LeaseStore

    store, now, lines = LeaseStore(connect(redis_url), prefix), time.time(), []
    for name in topology.clusters:
        grant, agent = store.last_grant(name), store.agent(name)
        if grant is None:
            continue
        host, epoch, at, held_paused = grant
        line = f"lease of {name}: last renewed to {host} (epoch {epoch}) {max(0.0, now - at):.1f} s ago"
        if held_paused:
            line += (f"; {host} may hold a paused lease (kept without end) until an ordinary "
                     "renewal reaches it")
        if agent is not None:
            since = float(agent["since"] or now)
            line += (f"; lease agent on {agent['host']}: {agent['state']} for "
                     f"{max(0.0, now - since):.0f} s ({agent['detail']})")
        lines.append(line)
    return lines


def read_live(topology: Topology, *, redis_url: str | None, prefix: str) -> tuple[dict | None, str]:
    """Live state per cluster, or ``None`` and the reason it could not be read."""
    import redis

    from cr_orchestrator.state.cluster import connect, live_status

    try:
        return live_status(topology, connect(redis_url), prefix), ""
    except redis.RedisError as exc:
        # redis-py's messages name host and port, never the URL's password
        return None, f"Redis unreachable: {type(exc).__name__}: {exc}"
    except StateError as exc:
        return None, str(exc)
