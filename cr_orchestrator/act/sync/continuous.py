"""Continuous replication, the pure part: the watch command, its events, the batch.

The watcher (:mod:`cr_orchestrator.act.sync.watcher`) runs ``inotifywait -m -r`` on the
primary over the orchestrator's ssh, reads one line per event, gathers the changed
paths for at most ``batch`` and sends them with ``rsync --files-from`` through the same
epoch fence as the periodic pass. Everything here is text in, text or values out.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass, field

from cr_orchestrator.act.sync import rsync

READY = "Watches established."
OVERFLOW = "Q_OVERFLOW"
# A file's content or name changed: these are the events worth a copy. CREATE alone is
# left out for files (an empty file is followed by its CLOSE_WRITE); a directory's
# CREATE is kept so that an empty new directory exists on the targets too.
EVENTS = "close_write,moved_to,moved_from,delete,create,attrib"


def watch_command(path: str) -> str:
    """Shell text run on the primary: one ``EVENTS PATH`` line per change (event names
    hold no space, so the first space ends them), and the
    ``Watches established.`` line (stderr joined in) once every directory is watched."""
    # The watch ends with the ssh session: its stdin (kept open by the orchestrator)
    # reaches EOF then. Without this, an idle inotifywait would outlive the session
    # until its next event (only a write tells it that nobody reads).
    return (f"inotifywait -m -r --format '%e %w%f' -e {EVENTS} "
            f"-- {shlex.quote(path.rstrip('/') or '/')} 2>&1 & w=$!; "
            "cat >/dev/null; kill $w 2>/dev/null; wait $w")


@dataclass(frozen=True)
class Change:
    """One line of the watch, understood."""

    kind: str  # "path", "ready", "overflow", "full" (needs a full pass), "noise"
    path: str | None = None  # relative to the watched root
    why: str = ""


def parse_line(line: str, root: str) -> Change:
    """What one line of :func:`watch_command` means for the batch."""
    text = line.rstrip("\n")
    if text == READY:
        return Change("ready")
    events, tab, full = text.partition(" ")
    if not tab or not events.isupper():
        if OVERFLOW in text:
            return Change("overflow", why="the primary's inotify queue overflowed")
        return Change("noise", why=text)
    names = set(events.split(","))
    if OVERFLOW in names:
        return Change("overflow", why="the primary's inotify queue overflowed")
    base = root.rstrip("/") + "/"
    if not full.startswith(base):
        return Change("noise", why=f"outside {root}: {full}")
    rel = full[len(base):]
    if not rel or "\n" in rel:
        return Change("noise", why="the root itself")
    if "ISDIR" in names and names & {"DELETE", "MOVED_FROM", "MOVED_TO"}:
        # a whole subtree came or went: rsync --files-from names files, not trees
        return Change("full", path=rel, why=f"directory {rel} was moved or removed")
    return Change("path", path=posixpath.normpath(rel))


@dataclass
class Batch:
    """Paths gathered since the first one, due ``batch_s`` after it (never later: the
    bound on how long a change waits on the primary)."""

    batch_s: float
    paths: set[str] = field(default_factory=set)
    first_at: float | None = None

    def add(self, path: str, at: float) -> None:
        if self.first_at is None:
            self.first_at = at
        self.paths.add(path)

    def due(self, now: float) -> bool:
        return self.first_at is not None and now >= self.first_at + self.batch_s

    def wait_s(self, now: float, idle_s: float) -> float:
        """How long the reader may block before the batch is due (``idle_s`` if empty)."""
        if self.first_at is None:
            return idle_s
        return max(0.0, self.first_at + self.batch_s - now)

    def take(self) -> list[str]:
        paths, self.paths, self.first_at = sorted(self.paths), set(), None
        return paths


def may_advance_freshness(*, watching_since: float | None,
                          target_fresh_from: float | None) -> tuple[bool, str]:
    """Pure: may a batch say "this target has every change up to the batch's cut"?

    Only when the watch has been running since at or before the time the target is
    already known to be fresh from (a full pass's start, or an earlier batch's cut):
    otherwise changes made between that time and the watch's start were seen by nobody,
    and only the next full pass can vouch for them.
    """
    if watching_since is None:
        return False, "the watch is not established"
    if target_fresh_from is None:
        return False, "the target never had a full pass"
    if watching_since > target_fresh_from:
        return False, (f"the watch started {watching_since - target_fresh_from:.1f} s after "
                       "the target's last full pass: waiting for the next one")
    return True, "the watch covers everything since the target's last full pass"


def files_from_argv(*, source_path: str, target_user: str, target_address: str,
                    target_path: str, cluster: str, epoch: int, inner_ssh: list[str],
                    excludes: tuple[str, ...] = (), checksum: bool = False,
                    bandwidth_limit_kbps: int | None = None) -> list[str]:
    """The rsync the primary runs for one batch: the NUL-separated paths on stdin
    (relative to ``source_path``), a path that is gone deleted on the target
    (``--delete-missing-args``: a Maildir message moved from new/ to cur/ must not stay
    twice), through the same fence as the periodic pass (epoch refused when stale,
    overwritten or deleted files kept aside on a target that served)."""
    argv = ["rsync", "-a", "--from0", "--files-from=-", "--delete-missing-args", "--mkpath",
            f"--timeout={rsync.IO_TIMEOUT_S}", "--stats"]
    if checksum:
        argv.append("--checksum")
    if bandwidth_limit_kbps:
        argv.append(f"--bwlimit={max(1, bandwidth_limit_kbps * 1000 // 8192)}")
    for pattern in excludes:
        argv += ["--exclude", pattern]
    argv.append("--rsync-path=" + rsync.fenced_rsync_path(cluster=cluster, epoch=epoch))
    argv += ["-e", shlex.join(["ssh", *inner_ssh])]
    argv += [source_path.rstrip("/") + "/",
             f"{target_user}@{target_address}:{target_path.rstrip('/')}/"]
    return argv


def stdin_of(paths: list[str]) -> str:
    return "".join(f"{p}\0" for p in paths)
