"""Windows host probe over WinRM: one PowerShell script, one command, one JSON answer.

The script (:mod:`cr_orchestrator.observe.windows_script`) reports the cluster's services
(Get-Service), the last boot (Win32_OperatingSystem), the free space of the data volumes
and the host's clock. It runs in a reused WinRS shell (:class:`WinRMShellPool`), so a probe
costs three HTTP round trips (Command, Receive, Signal) after the first.

:func:`probe_windows_host` never raises and returns within ``timeout_s`` plus about a
second (the Signal that stops an overrunning script); the turning of a report into
observations (:func:`observations_from_report`) is pure.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from cr_orchestrator.observe.health import ORCHESTRATOR, Health, Observation
from cr_orchestrator.model import Host, Service
from cr_orchestrator.observe import windows_script
from cr_orchestrator.remote.winrm import WinRMShell, WinRMShellPool

MIN_FREE_BYTES = 100 * 1024 * 1024  # same floor as the Linux probe
MAX_CLOCK_SKEW_S = 300.0  # Kerberos' default tolerance: beyond it, authentication breaks
DEGRADED_SERVICE_STATES = {"StartPending", "StopPending", "ContinuePending", "PausePending", "Paused"}

#: Shells kept open between probes by a long-lived worker (one per host and settings).
DEFAULT_POOL = WinRMShellPool()


def _names(services: Sequence[str | Service]) -> list[str]:
    # The cluster round passes model.Service objects; other callers pass names.
    return [s if isinstance(s, str) else s.name for s in services]


def unreachable(*, host: str, services: Sequence[str], at: float, latency_s: float | None,
                error: str, vantage: str = ORCHESTRATOR) -> list[Observation]:
    """The host and every service UNREACHABLE, all with the same reason."""
    return [Observation(host, vantage, subject, Health.UNREACHABLE, at, latency_s, error)
            for subject in ["host", *(f"service:{name}" for name in services)]]


def _service_observation(host: str, name: str, status: str | None, at: float, latency_s: float,
                         vantage: str) -> Observation:
    subject, detail = f"service:{name}", {"state": status}
    if status is None:
        return Observation(host, vantage, subject, Health.UNREACHABLE, at, latency_s,
                           "no state reported for this service")
    if status == "Running":
        return Observation(host, vantage, subject, Health.OK, at, latency_s, None, detail)
    if status in DEGRADED_SERVICE_STATES:
        return Observation(host, vantage, subject, Health.DEGRADED, at, latency_s, f"service is {status}", detail)
    if status == "NotFound":
        return Observation(host, vantage, subject, Health.DOWN, at, latency_s, "service is not installed", detail)
    return Observation(host, vantage, subject, Health.DOWN, at, latency_s, f"service is {status}", detail)


def observations_from_report(*, host: str, report: windows_script.ProbeReport, services: Sequence[str],
                             at: float, latency_s: float, local_clock_s: float,
                             min_free_bytes: int = MIN_FREE_BYTES, max_clock_skew_s: float = MAX_CLOCK_SKEW_S,
                             vantage: str = ORCHESTRATOR) -> list[Observation]:
    """Turn a parsed report into a "host" and one "service:<name>" observation each (pure).

    ``local_clock_s`` is our clock when the host read its own (the middle of the request).
    """
    skew = report.clock_s - local_clock_s
    missing = [f"{v.path} ({v.error})" for v in report.volumes if v.free_bytes is None]
    low = [v.path for v in report.volumes if v.free_bytes is not None and v.free_bytes < min_free_bytes]
    problems = []
    if missing:
        problems.append(f"data volume not available: {', '.join(missing)}")
    if low:
        problems.append(f"low free space on: {', '.join(low)} (< {min_free_bytes} bytes)")
    if abs(skew) > max_clock_skew_s:
        problems.append(f"clock is {skew:+.0f}s off (more than {max_clock_skew_s:.0f}s)")
    detail = {"boot_time": report.boot_s, "remote_now": report.clock_s, "clock_skew_s": round(skew, 3),
              "free_bytes": {v.path: v.free_bytes for v in report.volumes if v.free_bytes is not None}}
    if report.records is not None:
        detail["records"] = dict(report.records)
    health = Health.DEGRADED if problems else Health.OK
    result = [Observation(host, vantage, "host", health, at, latency_s, "; ".join(problems) or None, detail)]
    for name in services:
        result.append(_service_observation(host, name, report.services.get(name), at, latency_s, vantage))
    return result


def probe_windows_host(*, host: Host, services: Sequence[str | Service], data_paths: Sequence[str],
                       timeout_s: float, shell: WinRMShell | None = None, at: float | None = None,
                       pool: WinRMShellPool | None = None,
                       record_files: tuple[str, str] | None = None) -> list[Observation]:
    """Probe one Windows host over WinRM within ``timeout_s``; never raises.

    Uses ``shell`` if given, else the pool's shell for this host (kept open for the next probe).
    """
    at = time.time() if at is None else at
    names = _names(services)
    if host.winrm is None:
        return unreachable(host=host.name, services=names, at=at, latency_s=0.0,
                           error="no WinRM settings for this host")
    try:
        shell = shell or (pool or DEFAULT_POOL).get(address=host.management_address, settings=host.winrm)
        script = windows_script.build_probe_script(services=names, data_paths=data_paths,
                                                   record_files=record_files)
        sent = time.time()
        result = shell.run_ps(script, deadline_s=timeout_s)
        received = time.time()
    except Exception as e:  # noqa: BLE001 - a probe returns values, never raises
        return unreachable(host=host.name, services=names, at=at, latency_s=None,
                           error=f"probe failed unexpectedly: {type(e).__name__}")
    latency = result.duration_s
    if result.error is not None:
        return unreachable(host=host.name, services=names, at=at, latency_s=latency, error=result.error)
    if result.rc != 0:
        why = result.stderr.strip().splitlines()[0][:200] if result.stderr.strip() else "(no error output)"
        return unreachable(host=host.name, services=names, at=at, latency_s=latency,
                           error=f"probe script exited {result.rc}: {why}")
    try:
        report = windows_script.parse_probe_output(result.stdout)
    except windows_script.ProbeOutputError as e:
        return unreachable(host=host.name, services=names, at=at, latency_s=latency, error=str(e))
    return observations_from_report(host=host.name, report=report, services=names, at=at, latency_s=latency,
                                    local_clock_s=(sent + received) / 2)
