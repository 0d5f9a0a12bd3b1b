"""Observe: one probe round of a cluster, every probe at once, in bounded time.

:func:`probe_cluster` runs, concurrently:

- a host probe of every member (SSH for Linux, WinRM for Windows): host and service state,
  boot time, free space of the replicated paths;
- the protocol checks of every service against each member's service address and against
  the shared IP (from the orchestrator's vantage);
- peer checks of the primary's service from every other member (the second vantage).

Every observation of a round carries the same ``at`` (the round's start), which is how the
failure detector groups a round. The round returns within ``timeout_s`` plus a small
margin; a probe that overruns is reported UNREACHABLE, never waited for.
"""

from __future__ import annotations

import enum
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from cr_orchestrator.observe.health import ORCHESTRATOR, Health, Observation
from cr_orchestrator.state.host_records import record_paths
from cr_orchestrator.model import Cluster, Host, Platform, Topology
from cr_orchestrator.observe import peer as peer_probe
from cr_orchestrator.observe import protocol, linux_host
from cr_orchestrator.observe.protocol import CheckTarget
from cr_orchestrator.observe.shared import SharedProbes, tag_records

log = logging.getLogger(__name__)

ROUND_MARGIN_S = 1.0  # thread start-up and process reaping on a busy machine


class JobKind(enum.Enum):
    HOST_PROBE = "host probe"  # its failure says something about the host
    CHECKS = "protocol checks"  # its failure says only that the looking failed
    PEER = "peer checks"


@dataclass(frozen=True)
class Job:
    """One piece of a round, run in the pool: what it is, about whom, from where."""

    kind: JobKind
    name: str  # for messages: "host probe of mail-a"
    host: str  # the host its observations are about
    vantage: str
    run: Callable[[], list[Observation]]

    @property
    def subject(self) -> str:
        """The subject of the observation a failed job becomes."""
        return "host" if self.kind is JobKind.HOST_PROBE else "vantage"
_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """One shared pool: probe threads that overrun finish in the background, bounded."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            # a probe-rounds task runs up to schedule.ROUND_BATCH (50) rounds at once, each
            # with a job per member, per peer and one for its checks (~2 per member): a
            # job queued behind them would miss the round's deadline and read as a
            # failure. Threads start only when none is idle, and wait mostly on sockets.
            _POOL = ThreadPoolExecutor(max_workers=512, thread_name_prefix="cr-probe")
        return _POOL


def check_targets(*, topology: Topology, cluster: Cluster, hosts: list[str]) -> list[CheckTarget]:
    """Every service check against each listed member's service address and the shared IP."""
    targets = []
    for name in hosts:
        address = topology.hosts[name].service_address
        for service in cluster.services:
            targets += [CheckTarget(name, address, check, service.name) for check in service.checks]
    return targets


def shared_ip_targets(*, topology: Topology, cluster: Cluster,
                      primary: str) -> list[CheckTarget]:
    """Checks through the shared IP, attributed to the primary that should hold it (none
    when the primary is on another site than the address: clients follow it by DNS)."""
    shared = cluster.switch.shared_ip
    if shared is None or (shared.site is not None
                          and topology.hosts[primary].site != shared.site):
        return []
    return [CheckTarget(primary, shared.ip, check, service.name, target="shared_ip")
            for service in cluster.services for check in service.checks]


def data_paths(*, cluster: Cluster, host: str) -> list[str]:
    """The replicated paths that live on ``host`` (their free space is reported)."""
    return sorted({rs.path_on(host) for rs in cluster.replica_sets})


def probe_host(*, host: Host, cluster: Cluster, timeout_s: float, at: float,
               control_dir: Path | None = None) -> list[Observation]:
    """Host probe by platform (SSH or WinRM); never raises."""
    services = list(cluster.services)
    paths = data_paths(cluster=cluster, host=host.name)
    records = record_paths(cluster.name, windows=host.platform is Platform.WINDOWS)
    if host.platform is Platform.WINDOWS:
        from cr_orchestrator.observe.windows_host import probe_windows_host  # WinRM helper's

        # One round shares one ``at``: the detector groups rounds by it.
        return tag_records(probe_windows_host(host=host, services=services, data_paths=paths,
                                              timeout_s=timeout_s, at=at, record_files=records),
                           cluster.name)
    return tag_records(linux_host.probe_linux_host(host=host, services=services,
                                                   data_paths=paths, timeout_s=timeout_s, at=at,
                                                   control_dir=control_dir,
                                                   record_files=records),
                       cluster.name)


def _overrun(job: Job, at: float, timeout_s: float) -> Observation:
    # Only a host probe's overrun says something about the host; an overrun batch of
    # checks or a peer's session says only that the looking failed.
    return Observation(job.host, job.vantage, job.subject, Health.UNREACHABLE, at, None,
                       f"{job.name} did not finish within {timeout_s + ROUND_MARGIN_S:.1f}s")


def probe_cluster(*, topology: Topology, cluster: Cluster, primary: str, timeout_s: float,
                  control_dir: Path | None = None, only: set[str] | None = None,
                  now: Callable[[], float] = time.time,
                  shared: SharedProbes | None = None) -> list[Observation]:
    """One probe round of ``cluster`` with ``primary`` as the live primary; never raises.

    ``only`` limits the round to those members (the peer checks still need the primary
    and the peer). ``shared``: the tick's probes of a group of clusters whose rounds run
    together (``observe/shared.py``), used when they fit this round. Returns all
    observations, each with the round's ``at``.
    """
    if shared is not None and (only is not None
                               or not shared.covers(cluster, primary, timeout_s)):
        shared = None
    at = shared.at if shared is not None else now()
    members = [h for h in cluster.hosts() if only is None or h in only]
    if primary not in cluster.hosts():
        # A live primary outside the cluster is the state layer's problem to report; the
        # round still observes every member, just without shared-IP and peer checks.
        log.warning("primary %s is not a member of cluster %s: no peer checks this round",
                    primary, cluster.name)
        return _run_jobs(_host_and_check_jobs(topology, cluster, members, at, timeout_s,
                                              control_dir, [], None), at=at, timeout_s=timeout_s)
    via_shared_ip = (shared_ip_targets(topology=topology, cluster=cluster, primary=primary)
                     if only is None or primary in only else [])
    jobs = _host_and_check_jobs(topology, cluster, members, at, timeout_s, control_dir,
                                via_shared_ip, shared)
    peer_targets = check_targets(topology=topology, cluster=cluster, hosts=[primary])
    for name in cluster.hosts():
        if name == primary or (only is not None and name not in only and primary not in only):
            continue
        run = (functools.partial(shared.peer_observations, name, cluster) if shared is not None
               else functools.partial(peer_probe.probe_from_peer, peer=topology.hosts[name],
                                      targets=peer_targets, timeout_s=timeout_s, at=at,
                                      control_dir=control_dir))
        jobs.append(Job(JobKind.PEER, f"peer checks from {name}", primary, name, run))
    return _run_jobs(jobs, at=at, timeout_s=timeout_s)


def _host_and_check_jobs(topology: Topology, cluster: Cluster, members: list[str], at: float,
                         timeout_s: float, control_dir: Path | None,
                         extra_targets: list[CheckTarget],
                         shared: SharedProbes | None) -> list[Job]:
    """Jobs: one host probe per member, one batch of protocol checks for them all."""
    jobs: list[Job] = []
    for name in members:
        host = topology.hosts[name]
        run = (functools.partial(shared.host_observations, name, cluster)
               if shared is not None and shared.shares_host(name)
               else functools.partial(probe_host, host=host, cluster=cluster,
                                      timeout_s=timeout_s, at=at, control_dir=control_dir))
        jobs.append(Job(JobKind.HOST_PROBE, f"host probe of {name}", name, ORCHESTRATOR, run))
    targets = check_targets(topology=topology, cluster=cluster, hosts=members) + extra_targets
    if targets:
        jobs.append(Job(JobKind.CHECKS, "protocol checks", targets[0].host, ORCHESTRATOR,
                        lambda: protocol.run_checks(targets=targets, timeout_s=timeout_s, at=at)))
    return jobs


def _run_jobs(jobs: list[Job], *, at: float, timeout_s: float) -> list[Observation]:
    pool = _pool()
    futures = {pool.submit(job.run): job for job in jobs}
    # Cold SSH connections get more time (linux_host.COLD_ALLOWANCE_S); peers a session share.
    budget = timeout_s + ROUND_MARGIN_S + max(linux_host.COLD_ALLOWANCE_S,
                                              peer_probe.SESSION_ALLOWANCE_S)
    done, _ = wait(futures, timeout=budget)
    result: list[Observation] = []
    for future, job in futures.items():
        if future not in done:
            log.warning("%s overran the round deadline", job.name)
            result.append(_overrun(job, at, timeout_s))
            continue
        try:
            result.extend(future.result())
        except Exception as exc:  # noqa: BLE001 - a probe bug must not stop the round
            log.exception("%s raised", job.name)
            result.append(Observation(job.host, job.vantage, job.subject, Health.UNREACHABLE,
                                      at, None,
                                      f"{job.name} failed: {type(exc).__name__}: {exc}"[:200]))
    return result
