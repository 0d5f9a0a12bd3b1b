"""``crctl history [CLUSTER] [-n N]``: the decision log, oldest first.

One line per event: time (UTC), cluster, kind, and the reason as a sentence. Decisions
are logged when they change (and every acting one); playbook runs, promotions, syncs and
operator commands are logged every time.
"""

from __future__ import annotations

import argparse
import json
import time

from cr_orchestrator.cli.control import add_redis_options, prefix_of, redis_of


def register(subparsers) -> None:
    parser = subparsers.add_parser("history", help="what the orchestrator decided and did, why",
                                   description=__doc__.split("\n\n")[1])
    parser.add_argument("cluster", metavar="CLUSTER", nargs="?",
                        help="one cluster (default: every cluster with history)")
    parser.add_argument("-n", type=int, default=20, help="events per cluster (20)")
    parser.add_argument("--kind", action="append", default=None,
                        help="only these kinds (decision, promotion, playbook, sync, operator, "
                             "error, aborted); repeatable")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    add_redis_options(parser)
    parser.set_defaults(handler=run)


def clusters_with_history(client, prefix: str) -> list[str]:
    head, tail = f"{prefix}:cluster:", ":events"
    names = set()
    for raw in client.scan_iter(match=f"{head}*{tail}", count=500):
        key = raw.decode() if isinstance(raw, bytes) else raw
        names.add(key[len(head):-len(tail)])
    return sorted(names)


def format_event(event) -> str:
    """One line: time, cluster, kind, and what happened."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event.at))
    return f"{stamp}  {event.cluster:<10} {event.kind:<9} {event_text(event)}"


def event_text(event) -> str:
    """What happened, as the sentence ``crctl history`` and the console show."""
    d = event.data
    if event.kind == "decision":
        what = f"{d.get('action')}" + (f" {d['target']}" if d.get("target") else "")
        text = f"{what}: {d.get('reason')}"
    elif event.kind == "playbook":
        ok = "ok" if d.get("ok") else f"FAILED ({d.get('status')}, rc {d.get('rc')})"
        limit = f" on {d['limit']}" if d.get("limit") else ""
        text = (f"{d.get('playbook')}{limit} epoch {d.get('epoch')}: {ok} in "
                f"{d.get('duration_s')} s; {d.get('summary')}")
    elif event.kind == "promotion":
        text = (f"{d.get('new_primary')} promoted at epoch {d.get('epoch')} (was "
                f"{d.get('old_primary')}, {d.get('kind')}): {d.get('reason')}")
    elif event.kind == "sync":
        ok = "ok" if d.get("ok") else "FAILED"
        gone = (f", {d['deleted']} deleted" if d.get("deleted") is not None else "") + \
            (f", {d['quarantined']} quarantined" if d.get("quarantined") else "")
        text = (f"{d.get('replica_set')} {d.get('source')} -> {d.get('target')} epoch "
                f"{d.get('epoch')}: {ok}, {d.get('files')} files, {d.get('bytes')} bytes"
                f"{gone}, {d.get('duration_s')} s; {d.get('reason')}")
    else:
        text = d.get("reason") or json.dumps(d, sort_keys=True)
    return text


def run(args: argparse.Namespace) -> int:
    from cr_orchestrator.state.cluster import ClusterState

    client = redis_of(args)
    prefix = prefix_of(args)
    state = ClusterState(client, prefix)
    names = [args.cluster] if args.cluster else clusters_with_history(client, prefix)
    events = []
    for name in names:
        got = state.events(name, count=args.n * (5 if args.kind else 1))
        if args.kind:
            got = [e for e in got if e.kind in args.kind][-args.n:]
        events += got
    if not events:
        print("no history" + (f" for {args.cluster}" if args.cluster else ""))
        return 0
    for event in sorted(events, key=lambda e: (e.at, e.id)):
        if args.json:
            print(json.dumps({"id": event.id, "at": event.at, "cluster": event.cluster,
                              "kind": event.kind, **event.data}, sort_keys=True))
        else:
            print(format_event(event))
    return 0
