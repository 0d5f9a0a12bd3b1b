"""Windows replication: VSS shadow + robocopy, driven over WinRM step by step.

Every step is one WinRM command on the source (current primary), so each is visible to
the operator's logs and to the WS-Man test server: create-shadow (+ link) → robocopy per
target (parallel, one shell each) → delete-shadow. The engine calls :meth:`cleanup` in a
``finally``, so the shadow goes also when robocopy fails, when VSS refused, and when a
step timed out (the cleanup finds the shadow through the state file the create step
wrote next to the link).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass

from cr_orchestrator.errors import SyncError
from cr_orchestrator.model import Host, Topology
from cr_orchestrator.act.sync import robocopy_script as rs
from cr_orchestrator.act.sync.linux import CopyOutcome
from cr_orchestrator.act.sync.plan import SyncPlan, TargetPlan
from cr_orchestrator.act.sync.robocopy_log import parse_robocopy

CLEANUP_DEADLINE_S = 120.0
ShellFactory = Callable[[Host], object]  # returns an object with run_ps(script, *, deadline_s)


def default_shell_factory(host: Host) -> object:
    if host.winrm is None:
        raise SyncError(f"host {host.name} has no WinRM settings: cannot run robocopy there")
    from cr_orchestrator.remote.winrm import WinRMShell  # the WinRM client of the probe work

    return WinRMShell(address=host.management_address, settings=host.winrm)


def _json_line(stdout: str) -> dict | None:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(x.strip() for x in (text or "").strip().splitlines()[-lines:] if x.strip())


@dataclass(frozen=True)
class _WinRMRun:
    rc: int
    stdout: str
    stderr: str
    timed_out: bool
    error: str | None


class WindowsBackend:
    """prepare (shadow + link) → sync_target per target → cleanup (link + shadow)."""

    def __init__(self, *, topology: Topology, plan: SyncPlan, run_id: str,
                 shell_factory: ShellFactory | None = None,
                 options: rs.RobocopyOptions | None = None) -> None:
        self.topology = topology
        self.plan = plan
        self.factory = shell_factory or default_shell_factory
        self.volume, self.relative = rs.split_drive_path(plan.source_path, what="source path")
        self.link = rs.link_path(run_id=run_id)
        self.shadow_id: str | None = None
        self.prepared = False
        s = plan.replica_set
        self.options = options or rs.RobocopyOptions(
            bandwidth_limit_kbps=s.bandwidth_limit_kbps, excludes=s.excludes)

    def _run(self, host_name: str, script: str, *, deadline_s: float) -> _WinRMRun:
        shell = self.factory(self.topology.hosts[host_name])
        try:
            r = shell.run_ps(script, deadline_s=deadline_s)
        finally:
            close = getattr(shell, "close", None)
            if callable(close):
                close()
        return _WinRMRun(r.rc, r.stdout or "", r.stderr or "", bool(r.timed_out), r.error)

    def prepare(self, *, deadline_s: float) -> None:
        if not self.plan.replica_set.vss:
            return
        run = self._run(self.plan.source, rs.create_shadow_script(volume=self.volume, link=self.link),
                        deadline_s=min(deadline_s, 300.0))
        where = f"VSS shadow of {self.volume} on {self.plan.source}"
        if run.timed_out:
            raise SyncError(f"{where}: creating it exceeded the deadline")
        if run.error:
            raise SyncError(f"{where}: WinRM failed: {run.error}")
        reply = _json_line(run.stdout) or {}
        code = reply.get("vss_code")
        if run.rc == 3 and isinstance(code, int):
            raise SyncError(f"{where} refused by VSS: code {code} "
                            f"({rs.describe_vss_code(code)}); nothing was copied")
        if run.rc != 0 or not reply.get("ok"):
            raise SyncError(f"{where} failed (rc {run.rc}): "
                            f"{_tail(run.stderr) or _tail(run.stdout) or 'no message'}")
        self.shadow_id = reply.get("shadow_id")
        self.prepared = True

    def cleanup(self) -> list[str]:
        if not self.plan.replica_set.vss:
            return []
        run = self._run(self.plan.source, rs.cleanup_script(link=self.link, shadow_id=self.shadow_id),
                        deadline_s=CLEANUP_DEADLINE_S)
        reply = _json_line(run.stdout) or {}
        if run.timed_out or run.error or run.rc != 0 or not reply.get("ok", False):
            why = run.error or ("timed out" if run.timed_out else
                                "; ".join(reply.get("problems") or []) or _tail(run.stderr))
            return [f"VSS shadow {self.shadow_id or '(unknown id)'} or link {self.link} on "
                    f"{self.plan.source} may remain: cleanup failed: {why}"]
        return []

    def _source_dir(self) -> str:
        root = self.link if self.plan.replica_set.vss else self.volume.rstrip("\\")
        return f"{root}\\{self.relative}" if self.relative else root

    def sync_target(self, target: TargetPlan, *, deadline_s: float) -> CopyOutcome:
        destination = rs.unc_path(address=target.address, path=target.path)
        log = f"{rs.WORK_DIR}\\logs\\{self.plan.cluster}-{self.plan.replica_set.name}-{target.host}.log"
        script = rs.robocopy_script(source=self._source_dir(), destination=destination,
                                    log_path=log, options=self.options)
        run = self._run(self.plan.source, script, deadline_s=deadline_s)
        where = f"robocopy {self.plan.source} → {destination}"
        if run.timed_out:
            raise SyncError(f"{where} exceeded its {deadline_s:.0f} s deadline")
        if run.error:
            raise SyncError(f"{where}: WinRM failed: {run.error}")
        parsed = parse_robocopy(rc=run.rc, output=run.stdout)
        if not parsed.status.ok:
            errors = "; ".join(parsed.errors[:3])
            raise SyncError(f"{where} failed: {parsed.status.reason}" + (f"; {errors}" if errors else ""))
        summary = parsed.summary
        detail = parsed.status.reason + (f"; {parsed.summary_problem}" if parsed.summary_problem else "")
        return CopyOutcome(bytes=summary.bytes.copied if summary else None,
                       files=summary.files.copied if summary else None,
                       deleted=summary.files.extras if summary else None, detail=detail)

    def quarantine(self, target: TargetPlan, *, since: float, stamp: str,
                   deadline_s: float) -> tuple[str, tuple[str, ...]]:
        """Move every file under the target's path written at or after ``since`` aside.

        Coarser than the Linux path (no dry-run intersection): files the resync would
        not have touched are moved too, and robocopy /MIR then copies the source's
        version back; nothing is lost, the quarantine may just hold more.
        """
        qdir = f"{target.path.rstrip(chr(92))}.cr-quarantine\\{stamp}"
        when = dt.datetime.fromtimestamp(since, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        script = rs.quarantine_script(root=target.path, quarantine=qdir, since_utc=when)
        run = self._run(target.host, script, deadline_s=deadline_s)
        if run.timed_out or run.error or run.rc != 0:
            raise SyncError(f"moving {target.host}'s unreplicated files to {qdir} failed "
                            f"({run.error or _tail(run.stderr) or f'rc {run.rc}'}); not overwriting it")
        moved = (_json_line(run.stdout) or {}).get("moved") or ()
        return qdir, (moved,) if isinstance(moved, str) else tuple(moved)
