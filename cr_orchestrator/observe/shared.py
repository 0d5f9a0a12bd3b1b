"""One tick's probes, shared by the clusters whose rounds run together.

A probe-rounds task (``runtime/cycle.py``, :func:`probe_rounds`) runs the rounds of a
group of clusters at once. Clusters that share a host used to probe it once each per tick,
and a peer ran one session per cluster it backs: at 100 clusters over 9 hosts, ~200 host
probes and ~100 peer sessions a second where 9 + 9 say the same. Here:

- **one SSH command per Linux host** reports for every cluster of the group that holds it:
  each cluster's part is its own host script, as a round alone would send it
  (:func:`cr_orchestrator.observe.linux_host.probe_linux_host_parts`), so each cluster
  still gets its own services, data paths and records;
- **one session per peer** runs the peer checks of every cluster of the group it backs
  (:func:`cr_orchestrator.observe.peer.probe_from_peer_groups`), toward each cluster's
  primary as the group read it when the tick began;
- **one ``at``** for the whole tick: the detector groups a round by ``(host, vantage,
  at)``, so the clusters' copies of a shared host's probe count as one round of it.

The first round that needs a shared probe runs it; the others wait for its result. A round
whose primary differs from the one read at the tick's start (a change landed meanwhile)
probes alone, as does a Windows host (its WinRM shells are per host already). What is
shared is only the looking: every cluster still stores, decides and acts on its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path

from cr_orchestrator.model import Cluster, Platform, Topology
from cr_orchestrator.observe import linux_host, peer as peer_probe
from cr_orchestrator.observe.health import Observation
from cr_orchestrator.observe.protocol import CheckTarget
from cr_orchestrator.state.host_records import record_paths


def tag_records(observations: list[Observation], cluster: str) -> list[Observation]:
    """Name the cluster whose records a host observation carries: a host in several
    clusters has records for each, and every cluster's round reads the host's window."""
    out = []
    for o in observations:
        records = o.detail.get("records") if o.subject == "host" else None
        if isinstance(records, dict) and "cluster" not in records:
            o = replace(o, detail={**o.detail, "records": {**records, "cluster": cluster}})
        out.append(o)
    return out


@dataclass
class SharedProbes:
    """The shared probes of one tick of a group of clusters (thread-safe)."""

    topology: Topology
    clusters: list[Cluster]
    primaries: dict[str, str]  # cluster -> its primary as read at the tick's start
    at: float
    timeout_s: float
    control_dir: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _futures: dict[tuple[str, str], Future[dict[str, list[Observation]]]] = field(default_factory=dict, init=False,
                                                    repr=False)

    def covers(self, cluster: Cluster, primary: str, timeout_s: float) -> bool:
        """Whether ``cluster``'s round with ``primary`` can use this tick's probes."""
        return (self.primaries.get(cluster.name) == primary and timeout_s == self.timeout_s
                and any(c.name == cluster.name for c in self.clusters))

    def shares_host(self, host: str) -> bool:
        return self.topology.hosts[host].platform is Platform.LINUX

    # ---------------------------------------------------------------- what a round asks
    def host_observations(self, host: str, cluster: Cluster) -> list[Observation]:
        """``cluster``'s observations from the tick's one probe of ``host``."""
        return self._once(("host", host), lambda: self._probe_host(host))[cluster.name]

    def peer_observations(self, peer: str, cluster: Cluster) -> list[Observation]:
        """``cluster``'s peer checks from the tick's one session on ``peer``."""
        return self._once(("peer", peer), lambda: self._probe_peer(peer)).get(cluster.name, [])

    # ---------------------------------------------------------------- the shared probes
    def _once(self, key: tuple[str, str],
              probe: Callable[[], dict[str, list[Observation]]]) -> dict[str, list[Observation]]:
        with self._lock:
            future = self._futures.get(key)
            mine = future is None
            if future is None:
                future = self._futures[key] = Future()
        if mine:
            try:
                future.set_result(probe())
            except BaseException as exc:  # the waiters get it too: each round reports it
                future.set_exception(exc)
        # the probe that runs has its own deadline; the round's wait is the caller's
        return future.result()

    def _probe_host(self, host: str) -> dict[str, list[Observation]]:
        from cr_orchestrator.observe.round import data_paths

        holders = [c for c in self.clusters if host in c.hosts()]
        parts = [linux_host.HostPart(list(c.services), data_paths(cluster=c, host=host),
                                     record_paths(c.name))
                 for c in holders]
        results = linux_host.probe_linux_host_parts(
            host=self.topology.hosts[host], parts=parts, timeout_s=self.timeout_s, at=self.at,
            control_dir=self.control_dir)
        return {c.name: tag_records(obs, c.name) for c, obs in zip(holders, results, strict=True)}

    def _probe_peer(self, peer: str) -> dict[str, list[Observation]]:
        from cr_orchestrator.observe.round import check_targets

        backed: list[tuple[str, list[CheckTarget]]] = []
        for c in self.clusters:
            primary = self.primaries.get(c.name)
            if primary is None or primary == peer or peer not in c.hosts() \
                    or primary not in c.hosts():
                continue
            backed.append((c.name, check_targets(topology=self.topology, cluster=c,
                                                 hosts=[primary])))
        results = peer_probe.probe_from_peer_groups(
            peer=self.topology.hosts[peer], groups=[targets for _, targets in backed],
            timeout_s=self.timeout_s, at=self.at, control_dir=self.control_dir)
        return {name: obs for (name, _), obs in zip(backed, results, strict=True)}
