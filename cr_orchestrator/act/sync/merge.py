"""Maildir reconciliation (pure): which quarantined messages go back to the new primary.

A Maildir holds one immutable file per message; its *unique name* is the base name up to
the first ``:`` (what follows, ``:2,FLAGS``, changes when a client sets flags, and the
file moves from ``new/`` to ``cur/`` when it is first seen). What a returning old
primary took alone is therefore safe to merge by union: a quarantined message whose
unique name the new primary's same Maildir lacks is copied there, into the same
subdirectory and under the same name (flags kept). One already there, under any flags,
is not copied again (no duplicate), and stays in quarantine when its flags differ.

Paths are relative to the replica set's path, so a set holding many Maildirs
(``user/Maildir/cur/...``) works the same as one Maildir (``cur/...``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

MESSAGE_DIRS = ("new", "cur")
# written by the quarantine step into a directory whose files still wait to be merged;
# removed once the merge of that directory completed (a rerun finds unfinished ones)
PENDING_MARK = ".cr-merge-pending"
REPORT_FILE = ".cr-merge-left"  # what stayed in quarantine, with the reason (tab separated)


@dataclass(frozen=True)
class MergePlan:
    """``merge``: relative paths to copy; ``left``: (relative path, reason) staying put;
    ``identical``: quarantined files the primary holds under the very same name (safe to
    drop from quarantine: a Maildir file name names its content and flags)."""

    merge: tuple[str, ...]
    left: tuple[tuple[str, str], ...]
    identical: tuple[str, ...] = ()


def message_key(relpath: str) -> tuple[str, str] | None:
    """(Maildir folder, unique name) of a message file, or None when it is not one:
    not directly in ``new/`` or ``cur/``, or a dotfile (rsync's and MTAs' temporaries)."""
    folder, name = posixpath.split(relpath)
    maildir, sub = posixpath.split(folder)
    if sub not in MESSAGE_DIRS or not name or name.startswith("."):
        return None
    return maildir, name.split(":", 1)[0]


def _skip_reason(relpath: str) -> str:
    folder, name = posixpath.split(relpath)
    if name.startswith("."):
        return "a hidden or temporary file, not a message"
    if posixpath.basename(folder) == "tmp":
        return "in tmp/: a delivery that never completed"
    return "not a Maildir message (not directly in new/ or cur/)"


def plan_maildir_merge(quarantined: Iterable[str], present: Iterable[str]) -> MergePlan:
    """Which ``quarantined`` files (relative paths on the old primary) to copy to the new
    primary, which hold ``present`` (relative paths of its messages, same base).

    A message is copied at most once: when several quarantined files share a unique name
    (the message quarantined twice, before and after a flag change) the one in ``cur/``
    with the longest name (most flags) wins, the others stay in quarantine.
    """
    on_primary: dict[tuple[str, str], str] = {}
    for path in present:
        key = message_key(path)
        if key is not None:
            on_primary.setdefault(key, path)
    merge: dict[tuple[str, str], str] = {}
    left: list[tuple[str, str]] = []
    identical: list[str] = []
    for path in sorted(set(quarantined)):
        key = message_key(path)
        if key is None:
            left.append((path, _skip_reason(path)))
        elif key in on_primary:
            there = on_primary[key]
            if _same_entry(there, path):
                identical.append(path)
            else:
                left.append((path, f"already on the primary as {there} (other flags)"))
        elif key in merge:
            keep, drop = _better(merge[key], path)
            merge[key] = keep
            left.append((drop, f"another copy of the message ({keep}) is merged"))
        else:
            merge[key] = path
    return MergePlan(merge=tuple(sorted(merge.values())), left=tuple(sorted(left)),
                     identical=tuple(identical))


def _same_entry(a: str, b: str) -> bool:
    return posixpath.basename(a) == posixpath.basename(b)


def _better(a: str, b: str) -> tuple[str, str]:
    """(kept, dropped): cur/ over new/ (seen by a client), then more flags."""
    def rank(p: str) -> tuple[bool, int, str]:
        return (posixpath.basename(posixpath.dirname(p)) == "cur", len(p), p)
    return (a, b) if rank(a) >= rank(b) else (b, a)


def message_dirs(paths: Iterable[str]) -> tuple[str, ...]:
    """The ``new/`` and ``cur/`` directories (relative) of every Maildir that ``paths``
    touch: what to list on the new primary (not its whole tree)."""
    maildirs = {key[0] for key in map(message_key, paths) if key is not None}
    return tuple(posixpath.join(m, sub) if m else sub for m in sorted(maildirs)
                 for sub in MESSAGE_DIRS)


def summarize_reasons(left: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Reason → count, with "already on the primary as X" folded into one reason."""
    counts: dict[str, int] = {}
    for _path, reason in left:
        key = "already on the primary (other flags)" if reason.startswith("already on") else (
            "another copy of the message is merged" if reason.startswith("another copy")
            else reason)
        counts[key] = counts.get(key, 0) + 1
    return counts
