"""One replication run of one replica set: the public entry point.

``sync_replica_set`` plans (pure), fences (epoch), prepares a point-in-time source
(VSS shadow or optional Linux snapshot), syncs every target in its own thread under a
per-target-path lock (saving a returning old primary's unreplicated files first), records
freshness for each target, and always cleans the source up.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from cr_orchestrator.errors import SyncError
from cr_orchestrator.model import Platform, Topology
from cr_orchestrator.state.freshness import FreshnessStore, TargetPathLock
from cr_orchestrator.act.sync.linux import LinuxBackend
from cr_orchestrator.act.sync.plan import SyncPlan, SyncReport, TargetPlan, TargetResult, plan_sync, reconcile_since
from cr_orchestrator.act.sync.snapshot import SnapshotSpec
from cr_orchestrator.act.sync.windows import ShellFactory, WindowsBackend

# on_progress(host, phase, result): phase "started" (result None) or "finished"
Progress = Callable[[str, str, TargetResult | None], None]


# the target path's lock lives this long unless the sync holding it keeps it alive
TARGET_LOCK_TTL_S = 15.0


def default_deadline_s(every_s: float) -> float:
    """Per-target deadline: several intervals, at least 2 minutes, at most 1 hour."""
    return min(3600.0, max(120.0, every_s * 4))


def sync_replica_set(*, topology: Topology, cluster: str, replica_set: str, source: str,
                     epoch: int, store: FreshnessStore, now: Callable[[], float] = time.time,
                     on_progress: Progress | None = None, deadline_s: float | None = None,
                     linux_snapshot: SnapshotSpec | None = None,
                     shell_factory: ShellFactory | None = None,
                     inner_key_file: str | None = None,
                     ssh_control_dir: str | None = None) -> SyncReport:
    """Copy ``replica_set`` of ``cluster`` from ``source`` (the current primary) to every
    other member of the set, at fencing token ``epoch``.

    Raises :class:`SyncError` only when nothing was attempted (unknown set, source not a
    member, stale epoch); per-target failures are results (``TargetResult.ok``) and are
    recorded in ``store`` with a retry time. ``deadline_s`` bounds each target.
    ``ssh_control_dir`` (Linux) reuses one ssh connection per host across runs.
    """
    plan = plan_sync(topology=topology, cluster=cluster, replica_set=replica_set, source=source)
    store.claim_epoch(cluster=cluster, epoch=epoch, source=source)
    run_id = f"{cluster}-{replica_set}-{uuid.uuid4().hex[:8]}"
    deadline = deadline_s or default_deadline_s(plan.replica_set.every_s)
    if plan.platform is Platform.WINDOWS:
        backend = WindowsBackend(topology=topology, plan=plan, run_id=run_id,
                                 shell_factory=shell_factory)
    else:
        backend = LinuxBackend(topology=topology, plan=plan, run_id=run_id,
                               snapshot=linux_snapshot, inner_key_file=inner_key_file,
                               ssh_control_dir=ssh_control_dir, epoch=epoch)
    run = _SetRun(plan=plan, epoch=epoch, store=store, now=now, progress=on_progress,
               deadline_s=deadline, backend=backend)
    started = now()
    store.record_source_run(cluster=cluster, set_name=replica_set, host=source,
                            started_at=started, epoch=epoch)
    problems: list[str] = []
    try:
        try:
            backend.prepare(deadline_s=deadline)
        except SyncError as exc:
            results = [run.fail_unstarted(t, error=str(exc), started=started) for t in plan.targets]
        else:
            with ThreadPoolExecutor(max_workers=max(1, len(plan.targets))) as pool:
                results = list(pool.map(run.one_target, plan.targets))
    finally:
        problems += _cleanup(backend, source=source)
    report = SyncReport(cluster=cluster, replica_set=replica_set, source=source, epoch=epoch,
                        started_at=started, ended_at=now(), targets=tuple(results),
                        problems=tuple(problems), continuous=plan.replica_set.continuous)
    return report


def _cleanup(backend, *, source: str) -> list[str]:
    """The backend's cleanup, whose own failure becomes a problem of the report."""
    try:
        return backend.cleanup()
    except Exception as exc:  # noqa: BLE001 - a failed cleanup must not hide the results
        return [f"cleanup on {source} failed ({type(exc).__name__}: {exc}); a shadow copy, "
                "snapshot or link may remain"]


class _SetRun:
    """The per-target work of one run (holds what every target thread shares)."""

    def __init__(self, *, plan: SyncPlan, epoch: int, store: FreshnessStore,
                 now: Callable[[], float], progress: Progress | None, deadline_s: float,
                 backend) -> None:
        self.plan, self.epoch, self.store, self.now = plan, epoch, store, now
        self.progress = progress or (lambda host, phase, result: None)
        self.deadline_s = deadline_s
        self.backend = backend
        self.locks = TargetPathLock(store.redis, store.prefix)
        self.set_name = plan.replica_set.name

    def _record_failure(self, target: TargetPlan, *, error: str, started: float) -> None:
        self.store.record_failure(cluster=self.plan.cluster, set_name=self.set_name,
                                  host=target.host, source=self.plan.source, epoch=self.epoch,
                                  started_at=started, ended_at=self.now(), error=error,
                                  every_s=self.plan.replica_set.every_s)

    def fail_unstarted(self, target: TargetPlan, *, error: str, started: float) -> TargetResult:
        self.progress(target.host, "started", None)
        self._record_failure(target, error=error, started=started)
        result = TargetResult(host=target.host, ok=False, bytes=None, files=None,
                              duration_s=self.now() - started, error=error, path=target.path)
        self.progress(target.host, "finished", result)
        return result

    def _merges(self) -> bool:
        """Maildir reconcile runs on Linux only: robocopy has no fenced receiving side."""
        return self.plan.replica_set.reconcile == "maildir" and hasattr(self.backend, "merge")

    def _quarantine(self, target: TargetPlan) -> tuple[str | None, tuple[str, ...]]:
        cluster, set_name = self.plan.cluster, self.set_name
        source_run = self.store.last_source_run(cluster=cluster, set_name=set_name, host=target.host)
        since, _why = reconcile_since(
            host=target.host,
            target_record=self.store.get(cluster=cluster, set_name=set_name, host=target.host),
            source_run=source_run[0] if source_run else None,
            new_primary=self.plan.source,
            new_primary_record=self.store.get(cluster=cluster, set_name=set_name,
                                              host=self.plan.source),
            configured_primary=self.plan.configured_primary)
        if since is None:
            return None, ()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.now()))
        # mark the directory pending before anything moves in: a rerun finds what an
        # interrupted merge left (only the Linux backend merges)
        pending = {"mark_pending": True} if self._merges() else {}
        return self.backend.quarantine(target, since=since, stamp=stamp,
                                       deadline_s=self.deadline_s, **pending)

    def one_target(self, target: TargetPlan) -> TargetResult:
        started = self.now()
        self.progress(target.host, "started", None)
        qdir, quarantined, token, merged, keeper = None, (), None, None, None
        owner = f"{self.plan.cluster}/{self.set_name} from {self.plan.source}"
        try:
            token = self.locks.acquire(host=target.host, path=target.path, owner=owner,
                                       ttl_s=TARGET_LOCK_TTL_S)
            keeper = self.locks.keep(host=target.host, path=target.path, token=token,
                                     ttl_s=TARGET_LOCK_TTL_S)
            qdir, quarantined = self._quarantine(target)
            if qdir is not None and self._merges():
                # quarantined first, so a failed merge loses nothing; a failed merge fails
                # the target (no resync) and the next run, still reconciling, resumes it
                merged = self.backend.merge(target, deadline_s=self.deadline_s)
            outcome = self.backend.sync_target(target, deadline_s=self.deadline_s)
        except Exception as exc:  # noqa: BLE001 - one target's failure must not stop others
            error = str(exc) if isinstance(exc, SyncError) else f"unexpected {type(exc).__name__}: {exc}"
            self._record_failure(target, error=error, started=started)
            result = TargetResult(host=target.host, ok=False, bytes=None, files=None,
                                  duration_s=self.now() - started, error=error,
                                  quarantined=quarantined, path=target.path,
                                  quarantine_dir=qdir if quarantined else None,
                                  # a merge that completed before the resync failed is history too
                                  merged=merged.merged if merged else None,
                                  merge_left=merged.left if merged else (),
                                  merge_dirs=merged.dirs if merged else ())
        else:
            ended = self.now()
            self.store.record_success(cluster=self.plan.cluster, set_name=self.set_name,
                                      host=target.host, source=self.plan.source, epoch=self.epoch,
                                      started_at=started, ended_at=ended,
                                      bytes_sent=outcome.bytes, files=outcome.files)
            result = TargetResult(host=target.host, ok=True, bytes=outcome.bytes,
                                  files=outcome.files, duration_s=ended - started, error=None,
                                  quarantined=quarantined, path=target.path,
                                  deleted=outcome.deleted, detail=outcome.detail,
                                  quarantine_dir=qdir if quarantined else None,
                                  kept=outcome.kept,
                                  kept_dir=outcome.kept_dir,
                                  merged=merged.merged if merged else None,
                                  merge_left=merged.left if merged else (),
                                  merge_dirs=merged.dirs if merged else ())
        finally:
            if keeper is not None:
                keeper.set()
            if token is not None:
                self.locks.release(host=target.host, path=target.path, token=token)
        self.progress(target.host, "finished", result)
        return result
