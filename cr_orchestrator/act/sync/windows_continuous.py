"""Continuous replication on Windows: one window of the FileSystemWatcher script.

:func:`run_window` runs :func:`robocopy_script.continuous_script` on the primary over
WinRM (one command for the whole window), reads its JSON lines when it ends and records
each target's freshness from them. WinRM hands the output over at the end of the
command, so a Windows target's freshness advances once per window (default ``every``):
the recorded lag is larger than the real one, never smaller, and promotion gating by
``max_replica_lag`` stays on the safe side. The copies themselves happen every batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cr_orchestrator.act.sync import continuous
from cr_orchestrator.act.sync import robocopy_script as rs
from cr_orchestrator.act.sync.plan import SyncPlan
from cr_orchestrator.act.sync.windows import ShellFactory, default_shell_factory
from cr_orchestrator.model import Topology
from cr_orchestrator.state.freshness import FreshnessStore

RECORD_DIR = rs.WORK_DIR  # where the role playbooks write <cluster>.epoch on Windows


@dataclass(frozen=True)
class WindowReport:
    """What one window did: batches per target, and why it ended."""

    ready_at: float | None
    batches: dict[str, list[dict[str, Any]]]
    end_code: int | None  # 0 window over, 4 overflow (full pass needed), 5 fenced
    error: str | None = None

    @property
    def needs_full_pass(self) -> bool:
        return self.end_code == 4 or self.ready_at is None


def _lines(stdout: str) -> list[dict[str, Any]]:
    out = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def window_script(plan: SyncPlan, *, topology: Topology, epoch: int, window_s: int) -> str:
    rset = plan.replica_set
    targets = tuple(rs.WatchTarget(
        host=t.host, destination=rs.unc_path(address=t.address, path=t.path),
        epoch_record=rs.unc_path(address=t.address,
                                 path=f"{RECORD_DIR}\\{plan.cluster}.epoch"))
        for t in plan.targets)
    return rs.continuous_script(
        root=plan.source_path, targets=targets, epoch=epoch,
        own_epoch_record=f"{RECORD_DIR}\\{plan.cluster}.epoch",
        batch_ms=max(1, int(rset.batch_s * 1000)), window_s=window_s, excludes=rset.excludes)


def run_window(*, topology: Topology, plan: SyncPlan, epoch: int, store: FreshnessStore,
               window_s: int, shell_factory: ShellFactory | None = None,
               clock: Callable[[], float] | None = None) -> WindowReport:
    """Run one window on ``plan.source`` and record what its batches did per target."""
    import time

    now = clock or time.time
    shell = (shell_factory or default_shell_factory)(topology.hosts[plan.source])
    try:
        run = shell.run_ps(window_script(plan, topology=topology, epoch=epoch,  # type: ignore[attr-defined]
                                         window_s=window_s), deadline_s=window_s + 60)
    finally:
        close = getattr(shell, "close", None)
        if callable(close):
            close()
    lines = _lines(run.stdout or "")
    ready = next((ln.get("at") for ln in lines if ln.get("step") == "ready"), None)
    end = next((ln.get("code") for ln in lines if ln.get("step") == "window-end"), None)
    batches: dict[str, list[dict[str, Any]]] = {}
    for ln in lines:
        if ln.get("step") == "batch" and isinstance(ln.get("host"), str):
            batches.setdefault(ln["host"], []).append(ln)
    rset = plan.replica_set
    for host, done in batches.items():
        failed = [b for b in done if not b.get("ok")]
        good = [b for b in done if b.get("ok")]
        if failed:
            last = failed[-1]
            store.record_failure(
                cluster=plan.cluster, set_name=rset.name, host=host, source=plan.source,
                epoch=epoch, started_at=float(last.get("cut") or now()), ended_at=now(),
                error=str(last.get("reason") or f"robocopy exit {last.get('rc')}"),
                every_s=rset.every_s)
            continue
        cut = max(float(b["cut"]) for b in good)
        record = store.get(cluster=plan.cluster, set_name=rset.name, host=host)
        ok, _why = continuous.may_advance_freshness(
            watching_since=float(ready) if ready is not None else None,
            target_fresh_from=record.last_success_started_at)
        if ok and cut > (record.last_success_started_at or 0):
            store.record_success(cluster=plan.cluster, set_name=rset.name, host=host,
                                 source=plan.source, epoch=epoch, started_at=cut,
                                 ended_at=now(), bytes_sent=None, files=None)
    error = run.error or (None if end is not None else f"the window ended without its last line "
                                                       f"(rc {run.rc})")
    return WindowReport(ready_at=float(ready) if ready is not None else None, batches=batches,
                        end_code=end if isinstance(end, int) else None, error=error)
