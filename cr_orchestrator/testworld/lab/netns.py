"""Thin wrappers over iproute2, nsenter and signals: the lab's only system calls for networks.

Every function raises :class:`LabError` with the command and its stderr when a command
that must work fails, so ``crctl lab`` shows what went wrong and where.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence

from cr_orchestrator.errors import LabError

REQUIRED_TOOLS = {
    "ip": "iproute2", "nsenter": "util-linux", "unshare": "util-linux", "nft": "nftables",
    "tc": "iproute2", "sshd": "openssh-server", "ssh-keygen": "openssh-client",
    "named": "bind9", "dovecot": "dovecot-core",
}
TOOL_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def which(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    for d in TOOL_DIRS:  # sbin may be missing from a non-login PATH
        if os.access(f"{d}/{tool}", os.X_OK):
            return f"{d}/{tool}"
    return None


def check_prerequisites() -> None:
    """Refuse early, with what to do, when not root or when tools are missing."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, bridges, mounts): "
                       "run `sudo crctl lab ...` (or as root)")
    missing = sorted({pkg for tool, pkg in REQUIRED_TOOLS.items() if which(tool) is None})
    if missing:
        raise LabError(f"missing Debian packages: {' '.join(missing)}; run dev/bootstrap.sh "
                       f"or `apt-get install {' '.join(missing)}`")
    if not os.path.isdir("/proc/self/ns") or not os.path.exists("/proc/self/ns/net"):
        raise LabError("this kernel has no network namespaces (CONFIG_NET_NS)")


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 15.0,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; on failure (when ``check``) raise LabError naming the command."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              input=input)
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]} not found: install it (see dev/bootstrap.sh)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{' '.join(argv)}` did not finish within {timeout:g} s") from exc
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): "
                       f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip"] + (["-n", ns] if ns else []) + list(args)
    return run(argv, check=check)


def ip_batch(commands: Sequence[str], *, ns: str | None = None) -> None:
    """Several ip commands in one process (fast; stops at the first error)."""
    if commands:
        run(["ip"] + (["-n", ns] if ns else []) + ["-batch", "-"], input="\n".join(commands) + "\n")


def namespaces(prefix: str) -> list[str]:
    out = run(["ip", "netns", "list"]).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(prefix)]


def root_links(prefix: str) -> list[str]:
    out = run(["ip", "-o", "link", "show"]).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) > 1:
            name = parts[1].strip().split("@", 1)[0]
            if name.startswith(prefix):
                names.append(name)
    return names


def ns_pids(ns: str) -> list[int]:
    proc = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


def signal_pids(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def kill_ns_processes(ns: str, *, timeout: float = 3.0) -> None:
    """SIGKILL every process in namespace ``ns`` and wait until they are gone."""
    deadline = time.monotonic() + timeout
    while True:
        pids = ns_pids(ns)
        if not pids:
            return
        signal_pids(pids, signal.SIGCONT)  # frozen processes must not linger
        signal_pids(pids, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise LabError(f"processes {pids} in namespace {ns} survived SIGKILL")
        time.sleep(0.02)


_daemons: list[subprocess.Popen] = []


def start_daemon(argv: Sequence[str], *, log_path: str, env: dict[str, str] | None = None) -> int:
    """Start a long-lived process in its own session, output to ``log_path``; return its pid."""
    reap_children()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True,
                                env=dict(os.environ, **env) if env else None)
    _daemons.append(proc)
    return proc.pid


def reap_children() -> None:
    """Collect exited daemons we started, so they do not stay zombies in a long-lived caller."""
    _daemons[:] = [p for p in _daemons if p.poll() is None]


def nsenter_argv(holder_pid: int, argv: Sequence[str]) -> list[str]:
    """Command line that runs ``argv`` inside a host's network, mount and UTS namespaces."""
    return ["nsenter", f"--target={holder_pid}", "--net", "--mount", "--uts", "--"] + list(argv)


def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
