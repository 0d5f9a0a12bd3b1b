"""rsync command lines and ``--stats`` parsing (pure, tested exactly).

A Linux sync runs *on the current primary*: the orchestrator ssh-es to the primary's
management address, and the primary pushes with
``rsync -a --delete --stats [--checksum] [--bwlimit] --exclude ... SRC/ user@TARGET:DST/``
over the cluster network. The ssh options for that inner hop are passed explicitly
with ``-e`` (key, port, no known_hosts prompts, short connect timeout), never taken from
``~/.ssh``. The remote side is wrapped in ``timeout`` so a stuck transfer dies on the host
even if the orchestrator's ssh session is gone.

The receiving side is fenced too (``--rsync-path``): before the target's rsync starts, a
few lines of shell on the target compare the sync's epoch with the epoch recorded on the
target by the last promotion there, and refuse when the target's is newer. A sync that
an old primary started before a failover (its ssh still retrying while the host was
down) can then never overwrite the new primary once that one has taken over, whatever
Redis said when the sync began.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from cr_orchestrator.state.host_records import record_paths
from cr_orchestrator.model import SshSettings

CONNECT_TIMEOUT_S = 5
FENCE_REFUSED = "cr-orchestrator: refused"
IO_TIMEOUT_S = 60
RSYNC_CODES = {
    0: "success",
    1: "syntax or usage error",
    2: "protocol incompatibility",
    3: "errors selecting input/output files or directories",
    5: "error starting client-server protocol",
    10: "error in socket I/O",
    11: "error in file I/O",
    12: "error in rsync protocol data stream",
    20: "received SIGUSR1 or SIGINT",
    23: "partial transfer due to error",
    24: "partial transfer: some source files vanished",
    30: "timeout in data send/receive",
    35: "timeout waiting for daemon connection",
    124: "the sync exceeded its deadline on the primary (killed by timeout)",
    137: "the sync exceeded its deadline on the primary (killed by timeout -k)",
    255: "ssh failed (host unreachable, authentication refused, connection lost)",
}
# Files that vanish between listing and copying are normal in a live Maildir (a message
# moved from new/ to cur/); the move itself is picked up by the next run.
TOLERATED_CODES = frozenset({0, 24})


@dataclass(frozen=True)
class RsyncStats:
    files_total: int | None
    files_transferred: int | None
    files_deleted: int | None
    bytes_sent: int | None
    bytes_received: int | None
    total_size: int | None


@dataclass(frozen=True)
class RsyncJob:
    """One push from the primary to one target."""

    source_path: str
    target_user: str
    target_address: str
    target_path: str
    excludes: tuple[str, ...] = ()
    checksum: bool = False
    bandwidth_limit_kbps: int | None = None
    dry_run_itemize: bool = False  # list what would change instead of changing it
    # (cluster, epoch): refuse on the target when it recorded a newer epoch for cluster
    fence: tuple[str, int] | None = None


QUARANTINED = "cr-orchestrator: quarantined"
_QUARANTINED_LINE = re.compile(
    r"^cr-orchestrator: quarantined (\d+) file\(s\) in (\S+)$", re.MULTILINE)


def fenced_rsync_path(*, cluster: str, epoch: int, dry_run: bool = False,
                      merge: bool = False) -> str:
    """Shell run on the target instead of plain ``rsync`` (rsync appends its server
    arguments, the destination path last).

    - Refuse unless the target's epoch record for ``cluster`` is missing or at most
      ``epoch``; an unreadable or malformed record refuses too (fail closed).
    - Keep, rather than delete, what this sync would delete or overwrite on the target
      (rsync's own ``--backup-dir`` on the receiving side, into
      ``<path>.cr-quarantine/<time>-epoch-<epoch>/``), whatever Redis said about the
      target's last good sync, when
      - the target's role record says it took the primary role (it served, and no
        demotion recorded "secondary" since): acknowledged data a serving host took; or
      - the target never received a sync at this epoch (its ``<cluster>.synced`` record
        is older or missing): the first sync from a new primary, which may lack what the
        old primary had already copied here.
      The count and the directory are printed on stderr (:func:`parse_quarantined`).
    - After a good run (not a dry run) the target records ``<cluster>.synced`` = epoch,
      and "secondary <epoch>" if it claimed the primary role.

    ``merge``: the receiving side of a Maildir merge *into the live primary* (messages a
    returning old primary took alone). Still refuses an older epoch; also refuses a
    target whose role record says "secondary" (demoted since: no longer the primary to
    merge into). It never flips the role nor writes ``<cluster>.synced`` (the primary
    did not become a replica), and needs no backup: the merge adds files, with
    ``--ignore-existing`` and without ``--delete``.
    """
    record, role = (shlex.quote(p) for p in record_paths(cluster))
    if merge:
        return _merge_fence(record=record, role=role, epoch=int(epoch))
    synced = shlex.quote(synced_path(cluster))
    e = int(epoch)
    after = "true" if dry_run else (
        f"{{ printf '{e}\\n' > {synced}.new && mv -f {synced}.new {synced}; }} && "
        f"case $claim in 'primary '*) "
        f"{{ printf 'secondary {e}\\n' > {role}.new && mv -f {role}.new {role}; }};; esac")
    script = (
        _epoch_check(record, e)
        + f"claim=$(cat {role} 2>/dev/null); last=$(cat {synced} 2>/dev/null); keep=0; "
        f"case $claim in 'primary '*) keep=1;; esac; "
        f"case $last in ''|*[!0-9]*) keep=1;; *) [ \"$last\" -lt {e} ] && keep=1;; esac; "
        f"if [ $keep = 1 ]; then for last; do :; done; "
        f"q=\"${{last%/}}.cr-quarantine/$(date -u +%Y%m%dT%H%M%SZ)-epoch-{e}\"; "
        f"rsync --backup --backup-dir=\"$q\" \"$@\"; rc=$?; "
        f"if [ -d \"$q\" ]; then echo \"{QUARANTINED} $(find \"$q\" -type f | wc -l) "
        f"file(s) in $q\" >&2; fi; "
        f"else rsync \"$@\"; rc=$?; fi; "
        f"if [ $rc -eq 0 ] || [ $rc -eq 24 ]; then {after} || rc=11; fi; exit $rc")
    # rsync appends its --server arguments to this text: they become the script's "$@".
    return f"sh -c {shlex.quote(script)} cr-fence"


def _epoch_check(record: str, e: int) -> str:
    """Shell: refuse unless the epoch record is missing or holds at most ``e``."""
    return (
        f"f={record}; have=0; if [ -e \"$f\" ]; then have=$(cat \"$f\") || have=x; fi; "
        f"case $have in ''|*[!0-9]*) echo \"{FENCE_REFUSED}: the epoch record $f on "
        f"$(hostname) holds '$have', not a whole number\" >&2; exit 1;; esac; "
        f"if [ \"$have\" -gt {e} ]; then echo \"{FENCE_REFUSED}: this sync carries epoch "
        f"{e} but $(hostname) was promoted at epoch $have: not overwriting it\" >&2; exit 1; "
        f"fi; ")


def _merge_fence(*, record: str, role: str, epoch: int) -> str:
    script = (
        _epoch_check(record, epoch)
        + f"claim=$(cat {role} 2>/dev/null); "
        f"case $claim in 'secondary '*) echo \"{FENCE_REFUSED}: this merge carries epoch "
        f"{epoch} but $(hostname) records '$claim': not the primary to merge into\" >&2; "
        f"exit 1;; esac; "
        f"exec rsync \"$@\"")
    return f"sh -c {shlex.quote(script)} cr-fence-merge"


def synced_path(cluster: str) -> str:
    """The target's record of the epoch of the last good sync it received."""
    return record_paths(cluster)[0][: -len(".epoch")] + ".synced"


def parse_quarantined(stderr: str) -> tuple[int, str | None]:
    """(files kept aside by the target's fence, their directory) from a run's stderr."""
    match = _QUARANTINED_LINE.search(stderr)
    return (int(match.group(1)), match.group(2)) if match else (0, None)


def ssh_options(ssh: SshSettings, *, key_file: str | None = None) -> list[str]:
    """Explicit ssh options: the host's key and port, no prompts, short timeouts."""
    opts = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
            "-p", str(ssh.port)]
    key = key_file or ssh.private_key_file
    if key:
        opts = ["-i", key, "-o", "IdentitiesOnly=yes", *opts]
    if ssh.common_args:
        opts += shlex.split(ssh.common_args)
    return opts


def rsync_argv(job: RsyncJob, *, inner_ssh: list[str]) -> list[str]:
    """The rsync command the primary runs (a list; quoted by :func:`remote_command`)."""
    argv = ["rsync", "-a", "--delete", "--mkpath", f"--timeout={IO_TIMEOUT_S}"]
    argv.append("--dry-run" if job.dry_run_itemize else "--stats")
    if job.dry_run_itemize:
        argv.append("--out-format=%i %n")
    if job.checksum:
        argv.append("--checksum")
    if job.bandwidth_limit_kbps:
        # --bwlimit is in KiB/s (units of 1024 bytes); the inventory limit is in kbit/s
        argv.append(f"--bwlimit={max(1, job.bandwidth_limit_kbps * 1000 // 8192)}")
    for pattern in job.excludes:
        argv += ["--exclude", pattern]
    if job.fence is not None:
        argv.append("--rsync-path=" + fenced_rsync_path(
            cluster=job.fence[0], epoch=job.fence[1], dry_run=job.dry_run_itemize))
    argv += ["-e", shlex.join(["ssh", *inner_ssh])]
    argv += [job.source_path.rstrip("/") + "/",
             f"{job.target_user}@{job.target_address}:{job.target_path.rstrip('/')}/"]
    return argv


MERGED = "cr-merged "


def merge_argv(*, quarantine_dir: str, target_user: str, target_address: str,
               target_path: str, cluster: str, epoch: int, inner_ssh: list[str],
               bandwidth_limit_kbps: int | None = None) -> list[str]:
    """The rsync the *old primary* runs to copy the files named on stdin (NUL separated,
    relative to ``quarantine_dir``) into the live primary's ``target_path``: same
    relative paths, never over an existing file, nothing deleted, through the fence's
    merge mode. Each copied file is printed as ``cr-merged <path>``."""
    # --no-implied-dirs: the live new/ and cur/ keep their owner and mode (the
    # quarantine's are root's: sent along, the MTA could no longer deliver)
    argv = ["rsync", "-a", "--ignore-existing", "--no-implied-dirs", "--from0", "--files-from=-",
            f"--timeout={IO_TIMEOUT_S}", f"--out-format={MERGED}%n"]
    if bandwidth_limit_kbps:
        argv.append(f"--bwlimit={max(1, bandwidth_limit_kbps * 1000 // 8192)}")
    argv.append("--rsync-path=" + fenced_rsync_path(cluster=cluster, epoch=epoch, merge=True))
    argv += ["-e", shlex.join(["ssh", *inner_ssh])]
    argv += [quarantine_dir.rstrip("/") + "/",
             f"{target_user}@{target_address}:{target_path.rstrip('/')}/"]
    return argv


def parse_merged(output: str) -> list[str]:
    """Files (not directories) a merge run copied, from its ``cr-merged`` lines."""
    return [line[len(MERGED):] for line in output.splitlines()
            if line.startswith(MERGED) and not line.endswith("/")]


def remote_command(argv: list[str], *, deadline_s: float) -> str:
    """Shell text run on the primary: C locale numbers, killed at the deadline."""
    limit = max(1, int(deadline_s))
    return f"LC_ALL=C timeout -k 5 {limit} {shlex.join(argv)}"


def outer_ssh_argv(*, ssh: SshSettings, address: str, command: str,
                   control_dir: str | None = None) -> list[str]:
    """The orchestrator's ssh to a host's management address running ``command``.

    With ``control_dir``, sessions share one persistent connection per host
    (ControlMaster, kept 60 s after the last use): saves the ssh handshake per run.
    """
    mux = []
    if control_dir:
        mux = ["-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir}/%C",
               "-o", "ControlPersist=60"]
    return ["ssh", *ssh_options(ssh), *mux, f"{ssh.user}@{address}", command]


_STAT = {
    "files_total": r"^Number of files:\s*([\d,]+)",
    "files_transferred": r"^Number of regular files transferred:\s*([\d,]+)",
    "files_deleted": r"^Number of deleted files:\s*([\d,]+)",
    "bytes_sent": r"^Total bytes sent:\s*([\d,]+)",
    "bytes_received": r"^Total bytes received:\s*([\d,]+)",
    "total_size": r"^Total file size:\s*([\d,]+)",
}


def parse_stats(output: str) -> RsyncStats:
    """Read ``--stats`` (C locale: ``,`` thousands separators); missing lines are None."""
    values = {}
    for name, pattern in _STAT.items():
        match = re.search(pattern, output, re.MULTILINE)
        values[name] = int(match.group(1).replace(",", "")) if match else None
    return RsyncStats(**values)


def describe_exit(rc: int) -> str:
    return f"rsync exit {rc}: {RSYNC_CODES.get(rc, 'undocumented exit code')}"


def parse_itemized(output: str) -> tuple[list[str], list[str]]:
    """From a dry run's ``%i %n`` lines: (files that would be overwritten, deleted).

    ``>f.st......`` = an existing file would be replaced; ``>f+++++++++`` = a new file
    (nothing to lose on the target); ``*deleting name`` = the target's file would go.
    Directories (names ending in ``/``) are ignored: only files carry data.
    """
    overwritten, deleted = [], []
    for line in output.splitlines():
        if line.startswith("*deleting"):
            name = line[len("*deleting"):].strip()
            if name and not name.endswith("/"):
                deleted.append(name)
            continue
        code, _, name = line.partition(" ")
        if len(code) == 11 and code[1] == "f" and code[0] in "<>c" and "+" not in code[2:]:
            overwritten.append(name)
    return overwritten, deleted
