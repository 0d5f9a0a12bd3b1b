"""What is in quarantine on a cluster's hosts, and putting it back (``crctl quarantine``).

Quarantine directories are ``<path>.cr-quarantine/<name>/`` on each member of a replica
set (Linux): the engine's reconcile step (``<stamp>``), the target fence's backups
(``<stamp>-epoch-N``). A restore copies one directory's files into the *live primary's*
path through the same fenced merge as the Maildir reconcile: for a ``maildir`` set only
the messages whose unique name the primary lacks (and those are then dropped from
quarantine); for any other set only with ``force``, and never over an existing file
(what was not copied stays where it is).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from cr_orchestrator.errors import SyncError
from cr_orchestrator.model import Platform, Topology
from cr_orchestrator.act.sync.linux import LinuxBackend, MergeOutcome, _tail, run_ssh
from cr_orchestrator.act.sync.merge import PENDING_MARK, REPORT_FILE
from cr_orchestrator.act.sync.plan import find_set, plan_sync, set_members

DEADLINE_S = 300.0

# One line per quarantine directory: name, files (not our marks), mtime, pending (0/1)
LIST_SCRIPT = r"""set -u
q=$1; mark=$2; report=$3
[ -d "$q" ] || exit 0
cd -- "$q" || exit 3
for d in */; do
  d=${d%/}
  [ -d "$d" ] || continue
  n=$(find "$d" -type f ! -name "$mark" ! -name "$report" | wc -l)
  p=0; [ -e "$d/$mark" ] && p=1
  printf '%s\t%s\t%s\t%s\n' "$d" "$n" "$(stat -c %Y -- "$d")" "$p"
done
"""

FILES_SCRIPT = r"""set -u
cd -- "$1" || exit 3
find . -type f ! -path "./$2" ! -path "./$3" -printf '%P\0'
"""


@dataclass(frozen=True)
class QuarantineDir:
    host: str
    replica_set: str
    directory: str  # absolute, on the host
    files: int
    modified_at: float
    pending_merge: bool


def quarantine_root(path: str) -> str:
    return f"{path.rstrip('/')}.cr-quarantine"


def list_quarantine(*, topology: Topology, cluster: str, replica_set: str,
                    deadline_s: float = 60.0) -> tuple[list[QuarantineDir], list[str]]:
    """(directories found, one error sentence per host that could not be asked)."""
    rs = find_set(topology=topology, cluster=cluster, replica_set=replica_set)
    found, errors = [], []
    for host in set_members(topology=topology, cluster=cluster, replica_set=replica_set):
        h = topology.hosts[host]
        root = quarantine_root(rs.path_on(host))
        if h.platform is not Platform.LINUX:
            errors.append(f"{host}: Windows quarantine ({root}) cannot be listed yet")
            continue
        try:
            done = run_ssh(h, f"bash -c {shlex.quote(LIST_SCRIPT)} list {shlex.quote(root)} "
                           f"{PENDING_MARK} {REPORT_FILE}", deadline_s=deadline_s)
        except SyncError as exc:
            errors.append(f"{host}: {exc}")
            continue
        if done.timed_out or done.rc != 0:
            errors.append(f"{host}: listing {root} failed (rc {done.rc}; {_tail(done.stderr)})")
            continue
        found += parse_listing(done.stdout, host=host, replica_set=rs.name, root=root)
    return found, errors


def parse_listing(output: str, *, host: str, replica_set: str, root: str) -> list[QuarantineDir]:
    out = []
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) == 4 and parts[1].isdigit() and parts[2].isdigit():
            out.append(QuarantineDir(host, replica_set, f"{root}/{parts[0]}", int(parts[1]),
                                     float(parts[2]), parts[3] == "1"))
    return out


@dataclass(frozen=True)
class RestoreOutcome:
    copied: int
    skipped: int  # files not copied (already there, or left with a reason)
    left: tuple[tuple[str, str], ...]


def restore_quarantine(*, topology: Topology, cluster: str, replica_set: str, host: str,
                       directory: str, primary: str, epoch: int, force: bool = False,
                       deadline_s: float = DEADLINE_S,
                       inner_key_file: str | None = None) -> RestoreOutcome:
    """Copy ``host``'s quarantine ``directory`` (a name under ``<path>.cr-quarantine/``)
    into ``primary``'s path at ``epoch``. Call it under the set lock."""
    rs = find_set(topology=topology, cluster=cluster, replica_set=replica_set)
    if rs.reconcile != "maildir" and not force:
        raise SyncError(f"{cluster}/{rs.name} is not a Maildir set (reconcile: {rs.reconcile}): "
                        "its files cannot be merged safely; pass --force to copy those the "
                        f"primary {primary} lacks (nothing is ever overwritten)")
    plan = plan_sync(topology=topology, cluster=cluster, replica_set=replica_set, source=primary)
    if plan.platform is not Platform.LINUX:
        raise SyncError(f"{cluster}/{rs.name} is a Windows set: restore is Linux-only")
    target = next((t for t in plan.targets if t.host == host), None)
    if target is None:
        raise SyncError(f"{host} is the primary {primary} or not a member of {cluster}/{rs.name}: "
                        "restore from another member's quarantine")
    name = directory.rstrip("/").rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        raise SyncError(f"{directory!r} does not name a quarantine directory")
    qdir = f"{quarantine_root(target.path)}/{name}"
    backend = LinuxBackend(topology=topology, plan=plan, run_id="restore", epoch=epoch,
                           inner_key_file=inner_key_file)
    files = _files(topology, host, qdir, deadline_s=deadline_s)
    if rs.reconcile == "maildir":
        merged: MergeOutcome = backend.merge_dirs(target, {qdir: files}, deadline_s=deadline_s)
        return RestoreOutcome(copied=merged.merged, skipped=len(files) - merged.merged,
                              left=merged.left)
    copied = backend.copy_into_primary(target, qdir, tuple(files), deadline_s=deadline_s)
    return RestoreOutcome(copied=len(copied), skipped=len(files) - len(copied), left=())


def _files(topology: Topology, host: str, qdir: str, *, deadline_s: float) -> list[str]:
    done = run_ssh(topology.hosts[host], f"bash -c {shlex.quote(FILES_SCRIPT)} files "
                   f"{shlex.quote(qdir)} {PENDING_MARK} {REPORT_FILE}", deadline_s=deadline_s)
    if done.timed_out or done.rc != 0:
        raise SyncError(f"listing {qdir} on {host} failed (rc {done.rc}; {_tail(done.stderr)})")
    return [f for f in done.stdout.split("\0") if f]
