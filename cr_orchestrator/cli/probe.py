"""``crctl probe``: run one probe round now and print what every vantage saw.

It reports; it never acts. Exit 0 whatever the hosts' health (down hosts are a finding,
not an error); exit 2 only for bad input (no inventory, unknown host or cluster).
"""

from __future__ import annotations

import argparse
import json
import sys

from cr_orchestrator.cli.validate import add_inventory_options, inventory_of
from cr_orchestrator.errors import ConfigError
from cr_orchestrator.observe.health import Observation
from cr_orchestrator.inventory import load_topology
from cr_orchestrator.model import Topology
from cr_orchestrator.observe.round import probe_cluster

COLUMNS = ("HOST", "VANTAGE", "SUBJECT", "HEALTH", "LATENCY", "ERROR")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "probe", help="probe hosts and services once and print the results",
        description="Run one probe round (host probes over SSH/WinRM, protocol checks of "
                    "each service address and the shared IP, peer checks of the primary) "
                    "and print a table. Exit 0 even when hosts are down.")
    add_inventory_options(parser)
    parser.add_argument("host", nargs="?", help="probe only the clusters of this host, "
                        "and only this host (plus the peer checks of its primary)")
    parser.add_argument("--cluster", help="probe only this cluster")
    parser.add_argument("--primary", help="treat this member as the live primary "
                        "(default: the configured primary)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="probe deadline in seconds (default: the cluster's probe_timeout)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead")
    parser.add_argument("--record", action="store_true",
                        help="also store the observations in Redis (CR_REDIS_URL)")
    parser.add_argument("--prefix", default="cr", help="Redis key prefix for --record")
    parser.set_defaults(handler=run)


def _clusters(topology: Topology, args: argparse.Namespace):
    if args.host and args.host not in topology.hosts:
        raise ConfigError(f"host {args.host!r} is not in {topology.source} "
                          f"(hosts: {', '.join(sorted(topology.hosts))})")
    if args.cluster:
        try:
            clusters = [topology.cluster(args.cluster)]
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None
    else:
        clusters = [topology.clusters[n] for n in sorted(topology.clusters)]
    if args.host:
        clusters = [c for c in clusters if args.host in c.hosts()]
        if not clusters:
            raise ConfigError(f"host {args.host} is in no cluster selected")
    return clusters


def run(args: argparse.Namespace) -> int:
    topology = load_topology(inventory_of(args), vault_password_file=args.vault_password_file)
    if args.timeout is not None and not 0 < args.timeout <= 60:
        raise ConfigError(f"--timeout {args.timeout}: give seconds between 0 and 60")
    observations: list[Observation] = []
    for cluster in _clusters(topology, args):
        primary = args.primary or cluster.configured_primary
        if primary not in cluster.hosts():
            raise ConfigError(f"--primary {primary}: not a member of cluster {cluster.name} "
                              f"(members: {', '.join(cluster.hosts())})")
        timeout = args.timeout or cluster.policy.probe_timeout_s
        print(f"# cluster {cluster.name}: primary {primary}, deadline {timeout:.1f}s",
              file=sys.stderr)
        observations += probe_cluster(topology=topology, cluster=cluster, primary=primary,
                                      timeout_s=timeout,
                                      only={args.host} if args.host else None)
    if args.record:
        _record(observations, args.prefix)
    if args.json:
        for o in observations:
            print(json.dumps(_row_dict(o), default=str))
    else:
        print(render_table(observations))
    return 0


def _record(observations: list[Observation], prefix: str) -> None:
    from cr_orchestrator.observe.store import ObservationStore
    from cr_orchestrator.state.cluster import connect

    count = ObservationStore(client=connect(), prefix=prefix).add(observations=observations)
    print(f"# stored {count} observations under {prefix}:obs:*", file=sys.stderr)


def _row_dict(o: Observation) -> dict:
    return {"host": o.host, "vantage": o.vantage, "subject": o.subject,
            "health": o.health.value, "latency_s": o.latency_s, "error": o.error,
            "at": o.at, "detail": o.detail}


def render_table(observations: list[Observation]) -> str:
    """A plain text table, sorted by host, vantage, subject (pure, for tests)."""
    rows = [(o.host, o.vantage, o.subject, o.health.value,
             "-" if o.latency_s is None else f"{o.latency_s * 1000:.0f}ms", o.error or "")
            for o in sorted(observations, key=lambda o: (o.host, o.vantage != "orchestrator",
                                                         o.vantage, o.subject))]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)
