"""The one way the orchestrator runs a command over ssh: an OpenSSH client process with
a hard deadline, killed with its whole process group when the deadline passes.

Why stderr goes to a file, not a pipe: a ControlPersist master daemonises while holding
the stderr of the ssh that started it, and a pipe would keep ``communicate()`` waiting
for ControlPersist seconds (the hang the probes once had). stdout is a pipe: the master
closes it. Callers build the argv (their own options); this module only runs it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

STDERR_KEPT = 64 * 1024  # the end of a long stderr (rsync lists vanished files there)


@dataclass(frozen=True)
class SshRun:
    """What one ssh run gave back (no secrets: the key path is never part of it)."""

    rc: int | None  # None when killed at the deadline, or when ssh could not start
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool


def run(argv: list[str], *, deadline_s: float, stdin: str | None = None) -> SshRun:
    """Run ``argv`` (an ssh command line) with a hard deadline; never raises."""
    started = time.monotonic()
    with tempfile.TemporaryFile(mode="w+b") as err:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None
                                    else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=err, start_new_session=True)
        except OSError as exc:
            return SshRun(None, "", f"cannot start ssh: {exc}", 0.0, False)
        try:
            out, _ = proc.communicate(stdin.encode() if stdin is not None else None,
                                      timeout=deadline_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, timed_out = b"", True
        size = err.seek(0, os.SEEK_END)
        err.seek(max(0, size - STDERR_KEPT))
        stderr = err.read().decode("utf-8", "replace")
    return SshRun(None if timed_out else proc.returncode, out.decode("utf-8", "replace"),
                  stderr, time.monotonic() - started, timed_out)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    # wait(), not communicate(): a master that daemonised meanwhile may still hold stdout.
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        log.warning("ssh pid %d did not exit after SIGKILL", proc.pid)
