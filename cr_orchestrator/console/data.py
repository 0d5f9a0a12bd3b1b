"""What the console shows, as JSON-ready values: read from the inventory and Redis only
(the same data ``crctl status`` and ``crctl history`` print)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import redis

from cr_orchestrator.model import Cluster, Topology


def _health(word: str | None) -> str:
    """The colour class of a member's last verdict ("up", "host down", "service suspect")."""
    if word is None:
        return "unknown"
    if word == "up":
        return "up"
    return "down" if word.endswith("down") else "suspect" if word.endswith("suspect") else "unknown"


def cluster_view(topology: Topology, cluster: Cluster, live: dict) -> dict:
    """One cluster as the picture draws it: hosts by site, the primary, colours, the
    shared IP / DNS name, lag per target and set, paused, the last decision."""
    name = cluster.name
    primary = live.get("primary") or cluster.configured_primary
    health = live.get("health") or {}
    lags: dict[str, dict[str, float | None]] = live.get("lags") or {}
    sites: dict[str, list[dict]] = {}
    for member in cluster.members:
        host = topology.hosts[member.host]
        word = health.get(member.host)
        colour = _health(word)
        if member.host != primary and word == "service down":
            word, colour = "standby (host up, service stopped)", "standby"  # cold standby
        sites.setdefault(host.site, []).append({
            "name": member.host, "role": member.role.value, "primary": member.host == primary,
            "address": host.service_address, "platform": host.platform.value,
            "health": word or "no verdict yet", "colour": colour,
            "lag_s": {s: v.get(member.host) for s, v in lags.items()
                      if member.host in v and member.host != primary},
        })
    switch = cluster.switch
    decision = live.get("last_decision") or {}
    return {
        "name": name, "primary": primary, "configured_primary": cluster.configured_primary,
        "epoch": live.get("epoch", 0), "paused": bool(live.get("paused")),
        "shared_ip": switch.shared_ip.address if switch.shared_ip else None,
        "dns": f"{switch.dns.record}.{switch.dns.zone}" if switch.dns else None,
        "sites": [{"site": s, "hosts": hosts} for s, hosts in sorted(sites.items())],
        "max_replica_lag_s": cluster.policy.max_replica_lag_s,
        "probe_interval_s": cluster.policy.probe_interval_s,
        "failovers": live.get("failovers", 0), "max_failovers": cluster.policy.max_failovers,
        "lock": live.get("lock"),
        "decision": {k: decision.get(k) for k in ("action", "target", "reason", "situation", "at")},
    }


def clusters_view(topology: Topology, client: redis.Redis, prefix: str) -> list[dict]:
    from cr_orchestrator.state.cluster import live_status
    from cr_orchestrator.state.freshness import FreshnessStore

    live = live_status(topology, client, prefix)
    fresh = FreshnessStore(client, prefix)
    now = time.time()
    out = []
    for name, cluster in sorted(topology.clusters.items()):
        lags = {rs.name: {h: (round(r.lag_s, 1) if r.lag_s is not None else None)
                          for h, r in fresh.freshness(name, rs.name, now=now).items()}
                for rs in cluster.replica_sets}
        out.append(cluster_view(topology, cluster, {**live.get(name, {}), "lags": lags}))
    return out


def events_view(client: redis.Redis, prefix: str, cluster: str, *, kinds: list[str] | None = None,
                count: int = 100) -> list[dict]:
    """The cluster's timeline, newest first, optionally only some kinds."""
    from cr_orchestrator.cli.history import event_text
    from cr_orchestrator.state.cluster import ClusterState

    events = ClusterState(client, prefix).events(cluster, count=count * (5 if kinds else 1))
    if kinds:
        events = [e for e in events if e.kind in kinds][-count:]
    return [{
        "id": e.id, "at": e.at, "kind": e.kind,
        "time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.at)),
        "text": event_text(e), "by": e.data.get("by"),
        "action": e.data.get("action"),
        "run": bool(e.kind == "playbook" and e.data.get("artifact_dir")),
        "ok": e.data.get("ok"),
    } for e in reversed(events)]


RESULT_EVENTS = {"runner_on_ok": "ok", "runner_on_failed": "failed",
                 "runner_on_unreachable": "unreachable", "runner_on_skipped": "skipped"}


def playbook_tasks(artifact_dir: str | Path) -> list[dict]:
    """The task list of one playbook run, from ansible-runner's job events: one row per
    task and host with its result (``changed``, ``failed``, the message of a failure)."""
    rows = []
    events_dir = Path(artifact_dir) / "job_events"
    if not events_dir.is_dir():
        return rows
    def counter(path: Path) -> int:
        head = path.name.split("-", 1)[0]
        return int(head) if head.isdigit() else 0

    for path in sorted(events_dir.glob("*.json"), key=counter):
        try:
            event = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        result = RESULT_EVENTS.get(event.get("event", ""))
        if result is None:
            continue
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        if result == "ok" and res.get("changed"):
            result = "changed"
        message = res.get("msg") if result in ("failed", "unreachable") else None
        rows.append({"task": data.get("task"), "host": data.get("host"), "result": result,
                     "duration_s": data.get("duration"), "message": message,
                     "play": data.get("play")})
    return rows


def playbook_event(client: redis.Redis, prefix: str, cluster: str, event_id: str) -> dict | None:
    """The playbook event ``event_id`` of ``cluster`` (only such events name a run's
    directory: the console never opens a path it was handed)."""
    from cr_orchestrator.state.cluster import ClusterState

    key = ClusterState(client, prefix).key(cluster, "events")
    got = client.xrange(key, min=event_id, max=event_id, count=1)
    if not got:
        return None
    fields = got[0][1]
    if fields.get(b"kind") != b"playbook":
        return None
    return json.loads(fields[b"data"])
