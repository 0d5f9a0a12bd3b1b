"""Linux host probe over SSH: one remote script run reports everything as JSON.

The OpenSSH client runs as a subprocess with connection sharing (ControlMaster/
ControlPersist in a per-user, per-lab control directory), so a probe after the first costs
one multiplexed session instead of a handshake. BatchMode and ConnectTimeout make sure it
never prompts or waits for TCP; a hard deadline kills the whole process group, so a frozen
host (SIGSTOP) becomes an UNREACHABLE observation, never an exception or a hang.

By default (``CR_SSH_TRANSPORT=asyncssh``) the same command line is not run as a process:
:mod:`cr_orchestrator.remote.ssh_pool` reads its settings (``ssh -G``) and runs the
command on the process's kept connection to the host (:func:`run_ssh`).

The script and the command line are built by pure functions (:func:`build_host_script`,
:func:`build_ssh_command`) and the answer is parsed by :func:`parse_report`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cr_orchestrator.observe.health import ORCHESTRATOR, Health, Observation
from cr_orchestrator.model import Host, Service
from cr_orchestrator.remote import ssh, ssh_pool
from cr_orchestrator.remote.ssh import SshRun

log = logging.getLogger(__name__)

REPORT_VERSION = 1
STATUS_TIMEOUT_S = 5  # a status command that hangs longer is itself a symptom
MIN_FREE_BYTES = 100 * 1024 * 1024
CONTROL_PERSIST_S = 60
# A new connection (TCP, key exchange, auth, session) took 0.8-1.2 s on a loaded lab
# machine, a multiplexed session 0.2-0.5 s: without a master the deadline gets this extra.
COLD_ALLOWANCE_S = 2.0


def default_control_dir() -> Path:
    """Where ControlMaster sockets live: per user and per lab (config.RuntimeConfig)."""
    from cr_orchestrator.runtime.config import runtime

    return runtime().control_dir()


@functools.lru_cache(maxsize=256)
def _split_args(common_args: str) -> tuple[str, ...]:
    """``ansible_ssh_common_args`` as words (shlex is slow enough to show in a round)."""
    return tuple(shlex.split(common_args))


def build_ssh_command(*, host: Host, control_dir: Path, connect_timeout_s: float,
                      remote_command: str) -> list[str]:
    """The exact ssh argv for running ``remote_command`` on ``host``."""
    if host.ssh is None:
        raise ValueError(f"host {host.name} has no SSH settings")
    settings = host.ssh
    argv = [
        "ssh", "-T",
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={max(1, int(connect_timeout_s + 0.999))}",
        "-o", "ControlMaster=auto",
        "-o", f"ControlPath={control_dir}/%C",
        "-o", f"ControlPersist={CONTROL_PERSIST_S}",
        # A master to a host that died must notice within seconds, not the TCP timeout.
        "-o", "ServerAliveInterval=2", "-o", "ServerAliveCountMax=2",
        "-o", "LogLevel=ERROR",
        "-p", str(settings.port), "-l", settings.user,
    ]
    if settings.private_key_file:
        argv += ["-i", settings.private_key_file, "-o", "IdentitiesOnly=yes"]
    if settings.common_args:
        argv += _split_args(settings.common_args)
    if not any("StrictHostKeyChecking" in a for a in argv):
        argv += ["-o", "StrictHostKeyChecking=accept-new"]
    argv += [host.management_address, remote_command]
    return argv


@functools.lru_cache(maxsize=512)
def _control_socket(argv: tuple[str, ...]) -> str | None:
    """The ControlPath ssh would use for ``argv`` (``ssh -G`` expands %C; no network)."""
    try:
        out = subprocess.run(["ssh", "-G", *argv[1:-1]], capture_output=True, text=True,
                             timeout=5, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if line.startswith("controlpath "):
            return line.split(" ", 1)[1].strip()
    return None


def session_deadline(*, host: Host, control_dir: Path, timeout_s: float) -> float:
    """``timeout_s``, plus :data:`COLD_ALLOWANCE_S` when no master connection exists yet.

    Detection counts rounds, so one longer first round costs nothing; a cold handshake
    timing out would cost a false failure instead.
    """
    if host.ssh is None:
        return timeout_s
    argv = build_ssh_command(host=host, control_dir=control_dir, connect_timeout_s=timeout_s,
                             remote_command="true")
    pooled = ssh_pool.warm(argv) if _pooled() else None
    if pooled is not None:
        return timeout_s if pooled else timeout_s + COLD_ALLOWANCE_S
    socket_path = _control_socket(tuple(argv))
    warm = socket_path is not None and os.path.exists(socket_path)
    return timeout_s if warm else timeout_s + COLD_ALLOWANCE_S


def _json_str(value: str) -> str:
    return shlex.quote(json.dumps(value))


# Read once per command, whatever number of clusters' parts follow (no process: a probe
# of a host in many clusters ran ~15 processes per cluster, on the host).
_PRELUDE = [
    "export LC_ALL=C",
    "bt=''; while read -r k v _; do [ \"$k\" = btime ] && { bt=$v; break; }; done </proc/stat",
    "nw=$(date +%s)",
    # a record as JSON: only characters a record may hold, at most 64 ("" otherwise: it
    # parses as malformed, as does a file that exists but cannot be read); no process
    "rec() { if [ -e \"$1\" ]; then r=''; IFS= read -r r <\"$1\" 2>/dev/null;"
    " case $r in *[!0-9A-Za-z\\ .-]*) r='';; esac; [ ${#r} -le 64 ] || r='';"
    " printf '\"%s\"' \"$r\"; else printf null; fi; }",
]


def build_host_script(*, services: list[Service], data_paths: list[str],
                      record_files: tuple[str, str] | None = None) -> str:
    """A POSIX sh script printing one JSON object: boot time, service states, free space,
    and (``record_files``: the cluster's epoch and role files) what the host recorded
    about the cluster (``null`` for a file that does not exist).

    Service state comes from ``control.status`` (exit 0 = running) when configured, else
    from ``systemctl is-active``. Names and paths are embedded pre-quoted, so nothing the
    inventory holds is interpreted by the remote shell except the status command itself.
    """
    return "\n".join(_PRELUDE + _report_lines(services, data_paths, record_files)) + "\n"


def _report_lines(services: list[Service], data_paths: list[str],
                  record_files: tuple[str, str] | None) -> list[str]:
    """The lines that print one cluster's report (after :data:`_PRELUDE`)."""
    lines = [
        "sep=''",
        "printf '{\"v\":%d,\"boot_time\":%s,\"now\":%s,\"services\":{' "
        f"{REPORT_VERSION} \"$bt\" \"$nw\"",
    ]
    for service in services:
        if service.control is not None:
            cmd = f"timeout {STATUS_TIMEOUT_S} sh -c {shlex.quote(service.control.status)}"
            lines += [f"{cmd} >/dev/null 2>&1; rc=$?; st=''"]
        else:
            unit = shlex.quote(service.name)
            lines += [f"st=$(timeout {STATUS_TIMEOUT_S} systemctl is-active {unit} 2>/dev/null);"
                      " rc=$?; st=$(printf %s \"$st\" | tr -cd 'a-z-')"]
        lines += [f"printf '%s%s:{{\"rc\":%d,\"state\":\"%s\"}}' \"$sep\" {_json_str(service.name)}"
                  ' "$rc" "$st"; sep=,']
    lines += ["printf '},\"paths\":{'", "sep=''"]
    for path in data_paths:
        quoted = shlex.quote(path)
        lines += [
            f"free=$(df -P -k {quoted} 2>/dev/null | awk 'NR==2{{print $4}}'); "
            "[ -n \"$free\" ] || free=-1",
            f"printf '%s%s:%s' \"$sep\" {_json_str(path)} \"$free\"; sep=,",
        ]
    lines += ["printf '}'"]
    if record_files is not None:
        epoch_file, role_file = (shlex.quote(f) for f in record_files)
        lines += [f"printf ',\"records\":{{\"epoch\":'; rec {epoch_file}; "
                  f"printf ',\"role\":'; rec {role_file}; printf '}}'"]
    lines += ["printf '}\\n'"]
    return lines


def _pooled() -> bool:
    from cr_orchestrator.runtime.config import runtime

    return runtime().ssh_transport == "asyncssh"


def run_ssh(*, argv: list[str], deadline_s: float, stdin: str = "") -> SshRun:
    """Run ``argv``'s remote command with a hard deadline: over the process's kept
    connection to the host (:mod:`cr_orchestrator.remote.ssh_pool`, the default), or
    with one OpenSSH client process (:func:`remote.ssh.run`, ``CR_SSH_TRANSPORT=openssh``)."""
    if _pooled():
        return ssh_pool.run(argv, deadline_s=deadline_s, stdin=stdin)
    return ssh.run(argv, deadline_s=deadline_s, stdin=stdin)


def parse_report(text: str) -> dict[str, Any]:
    """The remote JSON report; ValueError naming the problem when it is not one.

    Parsed JSON (``Any``): only the version and the ``services`` and ``paths`` objects are
    checked here; :func:`observations_from_report` reads the rest defensively."""
    line = next((ln for ln in reversed(text.strip().splitlines()) if ln.startswith("{")), None)
    if line is None:
        raise ValueError(f"no JSON report in output {text[:120]!r}")
    report = json.loads(line)
    if not isinstance(report, dict) or report.get("v") != REPORT_VERSION:
        raise ValueError(f"unexpected report {line[:120]!r}")
    for key in ("services", "paths"):
        if not isinstance(report.get(key), dict):
            raise ValueError(f"report has no {key!r} object")
    return report


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def observations_from_report(*, host: str, report: Mapping[str, Any], services: list[Service],
                             at: float, latency_s: float, min_free_bytes: int = MIN_FREE_BYTES,
                             vantage: str = ORCHESTRATOR) -> list[Observation]:
    """Turn a parsed report into a "host" and one "service:<name>" observation each."""
    paths = {p: int(v) for p, v in report["paths"].items()}
    missing = sorted(p for p, free in paths.items() if free < 0)
    low = sorted(p for p, free in paths.items() if 0 <= free * 1024 < min_free_bytes)
    health, error = Health.OK, None
    if missing or low:
        health = Health.DEGRADED
        error = "; ".join(filter(None, [
            f"data path missing: {', '.join(missing)}" if missing else "",
            f"low free space on: {', '.join(low)}" if low else ""]))
    detail = {"boot_time": report.get("boot_time"), "remote_now": report.get("now"),
              "free_bytes": {p: free * 1024 for p, free in paths.items() if free >= 0}}
    if isinstance(report.get("records"), dict):
        detail["records"] = {k: report["records"].get(k) for k in ("epoch", "role")}
    result = [Observation(host, vantage, "host", health, at, latency_s, error, detail)]
    for service in services:
        state = report["services"].get(service.name)
        result.append(_service_observation(host, vantage, service, state, at, latency_s))
    return result


def _service_observation(host: str, vantage: str, service: Service, state: object,
                         at: float, latency_s: float) -> Observation:
    subject = f"service:{service.name}"
    if not isinstance(state, dict) or not isinstance(state.get("rc"), int):
        return Observation(host, vantage, subject, Health.UNREACHABLE, at, latency_s,
                           "no state reported for this service")
    rc, text = state["rc"], state.get("state") or ""
    detail = {"rc": rc, "state": text}
    if rc == 0:
        return Observation(host, vantage, subject, Health.OK, at, latency_s, None, detail)
    if rc == 124:
        return Observation(host, vantage, subject, Health.DEGRADED, at, latency_s,
                           f"status command did not finish within {STATUS_TIMEOUT_S}s", detail)
    if text in ("activating", "reloading", "deactivating"):
        return Observation(host, vantage, subject, Health.DEGRADED, at, latency_s,
                           f"service is {text}", detail)
    what = f"service is {text}" if text else f"status command exited {rc}"
    return Observation(host, vantage, subject, Health.DOWN, at, latency_s, what, detail)


def unreachable(*, host: str, services: list[Service], at: float, latency_s: float,
                error: str, vantage: str = ORCHESTRATOR) -> list[Observation]:
    """The host and every service UNREACHABLE, all with the same reason."""
    subjects = ["host"] + [f"service:{s.name}" for s in services]
    return [Observation(host, vantage, subject, Health.UNREACHABLE, at, latency_s, error)
            for subject in subjects]


def tcp_unreachable(host: Host, *, timeout_s: float) -> str | None:
    """Why a TCP connection to ``host``'s ssh port did not open within ``timeout_s``, or
    None when it did (or when ssh goes through a proxy: then only ssh itself can tell)."""
    if host.ssh is None or "proxy" in (host.ssh.common_args or "").lower():
        return None
    try:
        socket.create_connection((host.management_address, host.ssh.port),
                                 timeout=timeout_s).close()
        return None
    except ConnectionRefusedError:
        return f"ssh: port {host.ssh.port} refused the connection"
    except TimeoutError:
        return f"ssh: no TCP connection to port {host.ssh.port} within {timeout_s:.1f}s"
    except OSError as exc:
        return f"ssh: cannot connect to port {host.ssh.port}: {exc.strerror or exc}"


@dataclass(frozen=True)
class HostPart:
    """What one cluster asks of a host probe: its services, data paths and records."""

    services: list[Service]
    data_paths: list[str]
    record_files: tuple[str, str] | None = None


PART_MARK = "CRPART"


def build_parts_script(parts: list[HostPart]) -> str:
    """One script for several clusters' probes of the same host: each part's report as
    :func:`build_host_script` prints it, after a ``CRPART <index>`` line."""
    lines = list(_PRELUDE)
    for index, part in enumerate(parts):
        lines += [f"echo '{PART_MARK} {index}'",
                  *_report_lines(part.services, part.data_paths, part.record_files)]
    return "\n".join(lines) + "\n"


def split_parts(text: str, count: int) -> list[str]:
    """The output of :func:`build_parts_script` cut into its ``count`` parts (a part
    that printed nothing is "")."""
    parts = [""] * count
    current = None
    for line in text.splitlines(keepends=True):
        words = line.split()
        if len(words) == 2 and words[0] == PART_MARK and words[1].isdigit():
            current = int(words[1]) if int(words[1]) < count else None
            continue
        if current is not None:
            parts[current] += line
    return parts


def probe_linux_host(*, host: Host, services: list[Service], data_paths: list[str],
                     timeout_s: float, at: float | None = None,
                     control_dir: Path | None = None,
                     record_files: tuple[str, str] | None = None) -> list[Observation]:
    """Probe one Linux host over SSH within ``timeout_s``; never raises."""
    return probe_linux_host_parts(host=host, parts=[HostPart(services, data_paths, record_files)],
                                  timeout_s=timeout_s, at=at, control_dir=control_dir)[0]


def probe_linux_host_parts(*, host: Host, parts: list[HostPart], timeout_s: float,
                           at: float | None = None,
                           control_dir: Path | None = None) -> list[list[Observation]]:
    """Probe one Linux host for several clusters with one SSH command within
    ``timeout_s`` (each part: what one cluster asks); the observations of each part, in
    order. Never raises."""
    at = time.time() if at is None else at

    def failed(error: str, latency_s: float = 0.0) -> list[list[Observation]]:
        return [unreachable(host=host.name, services=p.services, at=at, latency_s=latency_s,
                            error=error) for p in parts]

    if host.ssh is None:
        return failed("no SSH settings for this host")
    control_dir = control_dir or default_control_dir()
    try:
        control_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        return failed(f"cannot create ssh control dir {control_dir}: {exc}")
    deadline = session_deadline(host=host, control_dir=control_dir, timeout_s=timeout_s)
    if deadline > timeout_s:
        # Cold (no master): the allowance is for the key exchange and authentication of a
        # live host. ssh's ConnectTimeout counts whole seconds (at least 1), so a dead host
        # would hold every round for a second: see first whether its ssh port answers
        # within the probe timeout. (A crashed host whose sshd died first closes the
        # master, so every round after a crash is cold.)
        started = time.monotonic()
        why = tcp_unreachable(host, timeout_s=timeout_s)
        if why is not None:
            return failed(why, round(time.monotonic() - started, 4))
    argv = build_ssh_command(host=host, control_dir=control_dir,
                             connect_timeout_s=timeout_s, remote_command="sh -s")
    one = len(parts) == 1
    script = (build_host_script(services=parts[0].services, data_paths=parts[0].data_paths,
                                record_files=parts[0].record_files)
              if one else build_parts_script(parts))
    run = run_ssh(argv=argv, deadline_s=deadline, stdin=script)
    latency = round(run.duration_s, 4)
    if run.timed_out:
        return failed(f"no answer over SSH within {deadline:.1f}s", latency)
    if run.rc == 255 or run.rc is None:
        reason = _last_line(run.stderr) or "failed"
        return failed(reason if reason.startswith("ssh:") else f"ssh: {reason}", latency)
    outputs = [run.stdout] if one else split_parts(run.stdout, len(parts))
    result = []
    for part, text in zip(parts, outputs, strict=True):
        try:
            result.append(observations_from_report(host=host.name, report=parse_report(text),
                                                   services=part.services, at=at,
                                                   latency_s=latency))
        except (ValueError, TypeError, AttributeError) as exc:
            result.append(unreachable(host=host.name, services=part.services, at=at,
                                      latency_s=latency,
                                      error=f"unusable probe output: {exc}"[:200]))
    return result
