"""Plain-text views of a :class:`Topology` for ``crctl validate`` and ``crctl status``.

Pure functions: topology (and, for status, optional live state) in, text out. Nothing
here prints a secret: only names, addresses, paths and timings are shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cr_orchestrator.model import ClientSwitch, Cluster, FailbackMode, Policy, ReplicaSet, Topology


@dataclass(frozen=True)
class ClusterLive:
    """What Redis says about a cluster right now (filled in by the state layer)."""

    primary: str | None = None
    epoch: int | None = None
    paused: bool = False
    health: Mapping[str, str] = field(default_factory=dict)  # host -> liveness/health word
    freshness_s: Mapping[str, float] = field(default_factory=dict)  # target host -> replica age
    failovers: int | None = None  # inside the policy's failover period
    last_decision: str | None = None  # "action target: reason"
    lock: str | None = None  # who holds the cluster's topology lock

    @classmethod
    def from_mapping(cls, data: Mapping) -> ClusterLive:
        """From one cluster's entry of :func:`cr_orchestrator.state.live_status`."""
        decision = data.get("last_decision") or None
        text = None
        if decision:
            target = f" {decision['target']}" if decision.get("target") else ""
            text = f"{decision.get('action')}{target}: {decision.get('reason', '')}"
        return cls(primary=data.get("primary"), epoch=data.get("epoch"),
                   paused=bool(data.get("paused")), health=dict(data.get("health") or {}),
                   freshness_s=dict(data.get("freshness_s") or {}),
                   failovers=data.get("failovers"), last_decision=text, lock=data.get("lock"))


def duration(seconds: float) -> str:
    """``90`` -> ``1m30s``; ``0.5`` -> ``500ms``: the way the inventory writes durations."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds < 60 or seconds % 1:
        return f"{seconds:g}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts)


def describe_switch(switch: ClientSwitch) -> str:
    parts = []
    if switch.shared_ip is not None:
        site = f" (site {switch.shared_ip.site})" if switch.shared_ip.site else ""
        parts.append(f"shared IP {switch.shared_ip.address} on {switch.shared_ip.interface!r}{site}")
    if switch.dns is not None:
        d = switch.dns
        parts.append(f"DNS {d.record}.{d.zone.rstrip('.')} via {d.server} ({d.provider}, ttl {d.ttl}s)")
    return " + ".join(parts)


def describe_replica_set(rset: ReplicaSet) -> str:
    flags = [f for f, on in (("vss", rset.vss), ("checksum", rset.checksum)) if on]
    if rset.bandwidth_limit_kbps:
        flags.append(f"limit {rset.bandwidth_limit_kbps} kbit/s")
    if rset.reconcile != "quarantine":  # the default is not worth a word
        flags.append(f"reconcile {rset.reconcile}")
    targets = ", ".join(f"{t.host}:{t.path}" for t in rset.targets)
    extra = f" [{', '.join(flags)}]" if flags else ""
    return f"{rset.name}: {rset.path} every {duration(rset.every_s)}{extra} -> {targets}"


def describe_policy(policy: Policy) -> str:
    return (f"probe every {duration(policy.probe_interval_s)} (timeout "
            f"{duration(policy.probe_timeout_s)}), down after {policy.failures_before_down} "
            f"failures from {policy.required_vantages} vantages, {policy.restart_attempts} "
            f"restart(s) before failover, at most {policy.max_failovers} failovers per "
            f"{duration(policy.failover_period_s)}, max replica lag "
            f"{duration(policy.max_replica_lag_s)}, lease {duration(policy.lease_ttl)} renewed "
            f"every {duration(max(policy.lease_renew, policy.probe_interval_s))} (promotion "
            f"waits {duration(policy.promotion_wait)} after the last renewal)")


def describe_failback(policy: Policy) -> str:
    if policy.failback is FailbackMode.AUTO:
        return f"auto (after {duration(policy.failback_min_healthy_s)} healthy and in sync)"
    return "manual"


def render_summary(topology: Topology) -> str:
    """What ``crctl validate`` prints for a valid inventory."""
    n = len(topology.clusters)
    lines = [f"{topology.source}: valid — {n} cluster{'s' if n != 1 else ''}, "
             f"{len(topology.hosts)} hosts, sites: {', '.join(topology.sites)}"]
    for cluster in topology.clusters.values():
        lines += _cluster_lines(topology, cluster)
    lines += [f"warning: {w}" for w in topology.warnings]
    return "\n".join(lines)


def _cluster_lines(topology: Topology, cluster: Cluster) -> list[str]:
    lines = [f"cluster {cluster.name} (group {cluster.group})"]
    for m in cluster.members:
        host = topology.hosts[m.host]
        lines.append(f"  member   {m.host}: {m.role.value}, priority {m.priority}, site {host.site}, "
                     f"{host.platform.value}, cluster address {host.cluster_address}")
    for s in cluster.services:
        checks = " ".join(f"{c.kind.value}:{c.port}" for c in s.checks) or "no protocol checks"
        lines.append(f"  service  {s.name} ({checks})")
    lines.append(f"  switch   {describe_switch(cluster.switch)}")
    for rset in cluster.replica_sets:
        lines.append(f"  replica  {describe_replica_set(rset)}")
    if not cluster.replica_sets:
        lines.append("  replica  none")
    lines.append(f"  failback {describe_failback(cluster.policy)}")
    lines.append(f"  policy   {describe_policy(cluster.policy)}")
    return lines


def render_status(topology: Topology, live: Mapping[str, ClusterLive | Mapping] | None = None,
                  *, live_note: str = "not read from Redis") -> str:
    """What ``crctl status`` prints: configuration, with live state merged in when given.

    ``live`` maps cluster name to :class:`ClusterLive` (or to the dict
    :func:`cr_orchestrator.state.live_status` returns); without it (or for a cluster it
    lacks) the live columns say ``unknown`` rather than guessing from the configuration,
    and ``live_note`` says why.
    """
    out = []
    for cluster in topology.clusters.values():
        state = (live or {}).get(cluster.name)
        if state is not None and not isinstance(state, ClusterLive):
            state = ClusterLive.from_mapping(state)
        head = f"cluster {cluster.name}: switch {describe_switch(cluster.switch)}; " \
               f"failback {describe_failback(cluster.policy)}"
        if state is None:
            head += f"; live state unknown ({live_note})"
        elif state.primary is None and not state.epoch:
            head += "; no live state in Redis yet (the orchestrator has not run)"
        else:
            head += (f"; primary now {state.primary or 'unknown'}, epoch "
                     f"{state.epoch if state.epoch is not None else 'unknown'}"
                     f"{', PAUSED' if state.paused else ''}")
        out.append(head)
        rows = [("HOST", "ROLE", "SITE", "PLATFORM", "ADDRESS", "HEALTH", "REPLICA AGE")]
        for m in cluster.members:
            host = topology.hosts[m.host]
            health = state.health.get(m.host, "unknown") if state else "unknown"
            age = state.freshness_s.get(m.host) if state else None
            rows.append((m.host, m.role.value, host.site, host.platform.value,
                         host.service_address, health, duration(age) if age is not None else "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        out += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        out.append(f"  policy: {describe_policy(cluster.policy)}")
        if state is not None:
            out += _live_lines(cluster, state)
    return "\n".join(out)


def _live_lines(cluster: Cluster, state: ClusterLive) -> list[str]:
    lines = []
    if state.failovers is not None:
        lines.append(f"  failovers in the last {duration(cluster.policy.failover_period_s)}: "
                     f"{state.failovers} of at most {cluster.policy.max_failovers}")
    if state.last_decision:
        lines.append(f"  last decision: {state.last_decision}")
    if state.lock:
        lines.append(f"  topology lock held by {state.lock}")
    return lines
