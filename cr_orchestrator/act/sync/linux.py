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
from cr_orchestrator.act.sync import merge, rsync
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
root=$1; q=$2; since=$3; mark=${4:-}
cd -- "$root" || exit 3
# a directory whose files still wait to be merged says so before anything is moved in
if [ -n "$mark" ]; then mkdir -p -- "$q" && : > "$q/$mark" || exit 3; fi
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
                   deadline_s: float, mark_pending: bool = False) -> tuple[str, tuple[str, ...]]:
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
                  f"{shlex.quote(target.path)} {shlex.quote(qdir)} {math.floor(since)}"
                  + (f" {merge.PENDING_MARK}" if mark_pending else ""))
        moved = self._ssh(self.topology.hosts[target.host], script, deadline_s=deadline_s,
                        stdin="".join(f"{name}\0" for name in candidates))
        if moved.timed_out or moved.rc != 0:
            raise SyncError(f"moving {target.host}'s unreplicated files to {qdir} failed "
                            f"(rc {moved.rc}; {_tail(moved.stderr)}); not overwriting it")
        return qdir, tuple(line for line in moved.stdout.splitlines() if line)

    def merge(self, target: TargetPlan, *, deadline_s: float) -> MergeOutcome:
        """Maildir reconcile: copy the messages ``target`` (the returning old primary)
        holds in quarantine directories still marked pending, and the new primary lacks,
        into the new primary's Maildirs; drop what was merged from quarantine."""
        old = self.topology.hosts[target.host]
        pending = self._pending_quarantine(old, target, deadline_s=deadline_s)
        return self.merge_dirs(target, pending, deadline_s=deadline_s)

    def merge_dirs(self, target: TargetPlan, pending: dict[str, list[str]], *,
                   deadline_s: float) -> MergeOutcome:
        """Merge the given quarantine directories of ``target`` ({dir: relative files})."""
        old = self.topology.hosts[target.host]
        if not pending:
            return MergeOutcome(merged=0, left=(), dirs=())
        everything = [f for files in pending.values() for f in files]
        present = set(self._primary_messages(merge.message_dirs(everything),
                                             deadline_s=deadline_s))
        merged, left = 0, []
        for qdir, files in sorted(pending.items()):
            plan = merge.plan_maildir_merge(files, present)
            copied = self._copy_into_primary(old, target, qdir, plan.merge, deadline_s=deadline_s)
            self._settle(old, qdir, plan, deadline_s=deadline_s)
            merged += len(copied)
            left += [(f"{qdir}/{path}", reason) for path, reason in plan.left]
            present.update(plan.merge)  # a later directory's copy is then no duplicate
        return MergeOutcome(merged=merged, left=tuple(left), dirs=tuple(sorted(pending)))

    def _pending_quarantine(self, old: Host, target: TargetPlan, *,
                            deadline_s: float) -> dict[str, list[str]]:
        qroot = f"{target.path.rstrip('/')}.cr-quarantine"
        done = self._ssh(old, f"bash -c {shlex.quote(PENDING_SCRIPT)} pending "
                         f"{shlex.quote(qroot)} {merge.PENDING_MARK} {merge.REPORT_FILE}",
                         deadline_s=deadline_s)
        if done.timed_out or done.rc != 0:
            raise SyncError(f"listing the quarantine {qroot} on {target.host} for the Maildir "
                            f"merge failed (rc {done.rc}; {_tail(done.stderr)}); not resyncing")
        return parse_pending(done.stdout, qroot)

    def _primary_messages(self, dirs: tuple[str, ...], *, deadline_s: float) -> list[str]:
        root = self.plan.source_path
        done = self._ssh(self.source_host, f"bash -c {shlex.quote(LIST_SCRIPT)} list "
                         f"{shlex.quote(root)} {shlex.join(dirs)}", deadline_s=deadline_s)
        if done.timed_out or done.rc != 0:
            raise SyncError(f"listing the messages in {root} on {self.plan.source} for the "
                            f"Maildir merge failed (rc {done.rc}; {_tail(done.stderr)}); "
                            "not resyncing")
        return [name for name in done.stdout.split("\0") if name]

    def copy_into_primary(self, target: TargetPlan, qdir: str, files: tuple[str, ...], *,
                          deadline_s: float) -> list[str]:
        """Copy ``files`` of ``target``'s ``qdir`` into the primary, never over a file."""
        return self._copy_into_primary(self.topology.hosts[target.host], target, qdir, files,
                                       deadline_s=deadline_s)

    def _copy_into_primary(self, old: Host, target: TargetPlan, qdir: str,
                           files: tuple[str, ...], *, deadline_s: float) -> list[str]:
        if not files:
            return []
        primary = self.source_host
        if primary.ssh is None:
            raise SyncError(f"primary {self.plan.source} has no ssh settings")
        argv = rsync.merge_argv(
            quarantine_dir=qdir, target_user=primary.ssh.user,
            target_address=primary.cluster_address, target_path=self.plan.source_path,
            cluster=self.plan.cluster, epoch=self.epoch or 0,
            inner_ssh=rsync.ssh_options(primary.ssh, key_file=self.inner_key_file),
            bandwidth_limit_kbps=self.plan.replica_set.bandwidth_limit_kbps)
        done = self._ssh(old, rsync.remote_command(argv, deadline_s=deadline_s),
                         deadline_s=deadline_s, stdin="".join(f"{f}\0" for f in files))
        where = f"merging {len(files)} message(s) from {target.host}:{qdir} into {self.plan.source}"
        if done.timed_out or done.rc not in rsync.TOLERATED_CODES:
            raise SyncError(f"{where} failed ({rsync.describe_exit(done.rc)}; "
                            f"{_tail(done.stderr)}); they stay in quarantine; not resyncing")
        return rsync.parse_merged(done.stdout)

    def _settle(self, old: Host, qdir: str, plan: merge.MergePlan, *, deadline_s: float) -> None:
        """Drop merged (and identical) files from ``qdir``, write what stays and why, and
        clear the pending mark: that directory is done."""
        report = "".join(f"{path}\t{reason}\n" for path, reason in plan.left)
        gone = plan.merge + plan.identical
        stdin = "".join(f"{f}\0" for f in gone) + "\0" + report
        done = self._ssh(old, f"bash -c {shlex.quote(SETTLE_SCRIPT)} settle {shlex.quote(qdir)} "
                         f"{merge.PENDING_MARK} {merge.REPORT_FILE}", deadline_s=deadline_s,
                         stdin=stdin)
        if done.timed_out or done.rc != 0:
            raise SyncError(f"after the Maildir merge, cleaning {qdir} on {old.name} failed "
                            f"(rc {done.rc}; {_tail(done.stderr)}); a rerun finishes it")


@dataclass(frozen=True)
class MergeOutcome:
    merged: int  # message files copied into the new primary
    left: tuple[tuple[str, str], ...]  # (quarantined file, why it stays there)
    dirs: tuple[str, ...]  # the quarantine directories merged from


# On the old primary: the files of every quarantine directory still marked pending, as
# "/<dir>" then its files relative to it, NUL separated ("/" never starts a relative path)
PENDING_SCRIPT = r"""set -u
qroot=$1; mark=$2; report=$3
[ -d "$qroot" ] || exit 0
cd -- "$qroot" || exit 3
for d in */; do
  d=${d%/}
  [ -e "$d/$mark" ] || continue
  printf '/%s\0' "$d"
  (cd -- "$d" && find . -type f ! -path "./$mark" ! -path "./$report" -printf '%P\0')
done
"""

# On the new primary: its message files in the given new/ and cur/ directories
LIST_SCRIPT = r"""set -u
root=$1; shift
cd -- "$root" || exit 3
for d; do
  [ -d "$d" ] && find "$d" -mindepth 1 -maxdepth 1 -type f -printf '%p\0'
done
exit 0
"""

# On the old primary: remove the NUL-separated files read from stdin (up to an empty
# entry), append the rest of stdin to the report, then clear the pending mark
SETTLE_SCRIPT = r"""set -u
q=$1; mark=$2; report=$3
cd -- "$q" || exit 3
while IFS= read -r -d '' f; do
  [ -z "$f" ] && break
  rm -f -- "$f" || exit 4
done
cat >> "$report" || exit 4
[ -s "$report" ] || rm -f -- "$report"
find . -mindepth 1 -type d -empty -delete
rm -f -- "$mark"
cd / && rmdir -- "$q" 2>/dev/null  # nothing left at all: no empty quarantine either
exit 0
"""


def parse_pending(output: str, qroot: str) -> dict[str, list[str]]:
    """{quarantine directory: its files (relative)} from :data:`PENDING_SCRIPT`'s output."""
    pending: dict[str, list[str]] = {}
    current: list[str] | None = None
    for item in output.split("\0"):
        if item.startswith("/"):
            current = pending.setdefault(f"{qroot}/{item[1:]}", [])
        elif item and current is not None:
            current.append(item)
    return pending
