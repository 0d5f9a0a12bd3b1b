"""Linux replication: rsync pushed by the current primary, driven over SSH.

The orchestrator opens one ssh session to the primary per target (targets run in
parallel threads); the primary runs rsync to the target's cluster address. Each session
has a hard deadline enforced twice: ``timeout`` on the primary, and the local ssh
process group is killed a few seconds later if it is still there.
"""

from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass

from cr_orchestrator.errors import SyncError
from cr_orchestrator.model import Host, Topology
from cr_orchestrator.remote import ssh
from cr_orchestrator.remote.ssh import SshRun
from cr_orchestrator.act.sync import rsync
from cr_orchestrator.act.sync.plan import SyncPlan, TargetPlan
from cr_orchestrator.act.sync.snapshot import SnapshotCommands, SnapshotSpec, snapshot_commands

KILL_GRACE_S = 10.0


@dataclass(frozen=True)
class CopyOutcome:
    bytes: int | None
    files: int | None
    deleted: int | None
    detail: str
    kept: int = 0  # files the target's fence kept aside instead of deleting/overwriting
    kept_dir: str | None = None


def run_ssh(host: Host, command: str, *, deadline_s: float, stdin: str | None = None,
            control_dir: str | None = None) -> SshRun:
    """Run ``command`` on ``host`` over ssh; never waits past the deadline (+grace)."""
    if host.ssh is None:
        raise SyncError(f"host {host.name} has no ssh settings: cannot run rsync there")
    if control_dir:
        os.makedirs(control_dir, mode=0o700, exist_ok=True)
    argv = rsync.outer_ssh_argv(ssh=host.ssh, address=host.management_address, command=command,
                                control_dir=control_dir)
    return ssh.run(argv, deadline_s=deadline_s + KILL_GRACE_S, stdin=stdin)


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


QUARANTINE_SCRIPT = r"""set -u
root=$1; q=$2; since=$3
cd -- "$root" || exit 3
while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue
  m=$(stat -c %Y -- "$f") || continue
  if [ "$m" -ge "$since" ]; then
    mkdir -p -- "$q/$(dirname -- "$f")" && mv -f -- "$f" "$q/$f" && printf '%s\n' "$f"
  fi
done
"""


class LinuxBackend:
    """prepare (snapshot) → sync_target per target → cleanup; quarantine on demand."""

    def __init__(self, *, topology: Topology, plan: SyncPlan, run_id: str,
                 snapshot: SnapshotSpec | None = None, inner_key_file: str | None = None,
                 ssh_control_dir: str | None = None, epoch: int | None = None) -> None:
        self.topology = topology
        self.epoch = epoch  # fencing token checked on each target (None: not fenced)
        self.control_dir = ssh_control_dir
        self.plan = plan
        self.run_id = run_id
        self.inner_key_file = inner_key_file
        self.source_host = topology.hosts[plan.source]
        self.snapshot: SnapshotCommands | None = (
            snapshot_commands(snapshot, path=plan.source_path, run_id=run_id) if snapshot else None)
        self.source_root = self.snapshot.source_root if self.snapshot else plan.source_path

    def _ssh(self, host: Host, command: str, *, deadline_s: float,
             stdin: str | None = None) -> SshRun:
        return run_ssh(host, command, deadline_s=deadline_s, stdin=stdin,
                       control_dir=self.control_dir)

    def prepare(self, *, deadline_s: float) -> None:
        if self.snapshot is None:
            return
        done = self._ssh(self.source_host, self.snapshot.create, deadline_s=deadline_s)
        if done.rc != 0:
            raise SyncError(f"snapshot on {self.plan.source} failed (rc {done.rc}): "
                            f"{_tail(done.stderr) or 'no message'}")

    def cleanup(self) -> list[str]:
        if self.snapshot is None:
            return []
        done = self._ssh(self.source_host, self.snapshot.remove, deadline_s=120)
        if done.rc != 0:
            return [f"snapshot on {self.plan.source} could not be removed (rc {done.rc}): "
                    f"{_tail(done.stderr)}"]
        return []

    def _job(self, target: TargetPlan, *, dry_run: bool) -> rsync.RsyncJob:
        host = self.topology.hosts[target.host]
        if host.ssh is None:
            raise SyncError(f"target {target.host} has no ssh settings")
        rs = self.plan.replica_set
        return rsync.RsyncJob(
            source_path=self.source_root, target_user=host.ssh.user,
            target_address=target.address, target_path=target.path, excludes=rs.excludes,
            checksum=rs.checksum, bandwidth_limit_kbps=rs.bandwidth_limit_kbps,
            dry_run_itemize=dry_run,
            fence=(self.plan.cluster, self.epoch) if self.epoch is not None else None)

    def _command(self, target: TargetPlan, *, dry_run: bool, deadline_s: float) -> str:
        host = self.topology.hosts[target.host]
        inner = rsync.ssh_options(host.ssh, key_file=self.inner_key_file)
        argv = rsync.rsync_argv(self._job(target, dry_run=dry_run), inner_ssh=inner)
        return rsync.remote_command(argv, deadline_s=deadline_s)

    def sync_target(self, target: TargetPlan, *, deadline_s: float) -> CopyOutcome:
        command = self._command(target, dry_run=False, deadline_s=deadline_s)
        done = self._ssh(self.source_host, command, deadline_s=deadline_s)
        where = f"rsync {self.plan.source} → {target.host}:{target.path}"
        if done.timed_out:
            raise SyncError(f"{where} exceeded its {deadline_s:.0f} s deadline and was killed")
        if done.rc not in rsync.TOLERATED_CODES:
            raise SyncError(f"{where} failed: {rsync.describe_exit(done.rc)}; "
                            f"{_tail(done.stderr) or 'no message'}")
        stats = rsync.parse_stats(done.stdout)
        detail = rsync.describe_exit(done.rc)
        if stats.bytes_sent is None:
            detail += "; --stats output not found"
        kept, kept_dir = rsync.parse_quarantined(done.stderr)
        return CopyOutcome(bytes=stats.bytes_sent, files=stats.files_transferred,
                       deleted=stats.files_deleted, detail=detail, kept=kept,
                       kept_dir=kept_dir)

    def quarantine(self, target: TargetPlan, *, since: float, stamp: str,
                   deadline_s: float) -> tuple[str, tuple[str, ...]]:
        """Move ``target``'s files that the sync would overwrite or delete *and* that
        changed at or after ``since`` into ``<path>.cr-quarantine/<stamp>/``."""
        command = self._command(target, dry_run=True, deadline_s=deadline_s)
        done = self._ssh(self.source_host, command, deadline_s=deadline_s)
        if done.timed_out or done.rc not in rsync.TOLERATED_CODES:
            raise SyncError(f"comparing {self.plan.source} with {target.host} before the resync "
                            f"failed ({rsync.describe_exit(done.rc)}; {_tail(done.stderr)}); "
                            "not overwriting it")
        overwritten, deleted = rsync.parse_itemized(done.stdout)
        qdir = f"{target.path.rstrip('/')}.cr-quarantine/{stamp}"
        candidates = overwritten + deleted
        if not candidates:
            return qdir, ()
        script = (f"bash -c {shlex.quote(QUARANTINE_SCRIPT)} quarantine "
                  f"{shlex.quote(target.path)} {shlex.quote(qdir)} {math.floor(since)}")
        moved = self._ssh(self.topology.hosts[target.host], script, deadline_s=deadline_s,
                        stdin="".join(f"{name}\0" for name in candidates))
        if moved.timed_out or moved.rc != 0:
            raise SyncError(f"moving {target.host}'s unreplicated files to {qdir} failed "
                            f"(rc {moved.rc}; {_tail(moved.stderr)}); not overwriting it")
        return qdir, tuple(line for line in moved.stdout.splitlines() if line)
