"""Read what robocopy says: the exit-code bitmask first, the summary table second.

Robocopy's exit code is a bitmask (1 copied, 2 extras, 4 mismatched, 8 some copies
failed, 16 fatal) and is the only language-independent verdict: ``rc >= 8`` is a failure.
The summary table at the end of the log is localised (``Dirs``/``Files``/``Bytes`` in
English, ``Verzeichnisse``/``Dateien``/``Bytes`` in German, ``ディレクトリ``/``ファイル``/
``バイト`` in Japanese), so it is read by position: the first three rows that carry six
numbers are dirs, files and bytes, whatever their labels say. When the labels are not
the English ones the result says so, and when no table can be found at all the summary
is ``None`` with a sentence saying why: the exit code still decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COLUMNS = ("total", "copied", "skipped", "mismatched", "failed", "extras")
ENGLISH_LABELS = ("dirs", "files", "bytes")

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
# "Label : values" (ASCII or full-width colon); the label does not start with a digit, so
# the colons inside "0:00:01" never count as the label separator.
_ROW = re.compile(r"^\s*(?P<label>[^\d\s:：][^:：]*?)\s*[:：]\s+(?P<rest>.*\S)\s*$")
# A number, optionally with a decimal part (either separator) and a k/m/g/t unit that
# robocopy prints after a space when /BYTES is not given ("18.00 m").
_NUMBER = re.compile(r"(?<![\d:.,])(\d+(?:[.,]\d+)?)(?:\s([kmgtKMGT])(?![\w]))?(?![\d:])")
_TIME = re.compile(r"\b(\d+):(\d\d):(\d\d)\b")
_ERROR = re.compile(r"ERROR\s+(\d+)\s+\(0x[0-9A-Fa-f]+\)\s*(.*)")
_SEPARATOR = re.compile(r"^\s*-{20,}\s*$")


@dataclass(frozen=True)
class Counts:
    """One summary row: total, copied, skipped, mismatched, failed and extras."""

    total: int
    copied: int
    skipped: int
    mismatched: int
    failed: int
    extras: int


@dataclass(frozen=True)
class RobocopySummary:
    dirs: Counts
    files: Counts
    bytes: Counts
    elapsed_s: float | None  # the "Times" total column, when it could be read
    labels_recognised: bool  # False: a localised log, the rows were read by position


@dataclass(frozen=True)
class ExitStatus:
    """Robocopy's exit code decoded: ``ok`` is ``0 <= rc < 8``."""

    rc: int
    ok: bool
    copied: bool
    extras: bool
    mismatched: bool
    copy_failures: bool
    fatal: bool
    reason: str


@dataclass(frozen=True)
class RobocopyResult:
    status: ExitStatus
    summary: RobocopySummary | None
    summary_problem: str | None  # why the summary could not be read (None when it was)
    errors: tuple[str, ...]  # "ERROR 5 (0x00000005) ..." lines with their message


_BITS = (
    (1, "files were copied"),
    (2, "extra files or directories were found in the destination"),
    (4, "mismatched files or directories were found"),
    (8, "some files or directories could not be copied (retries exhausted)"),
    (16, "fatal error: robocopy copied nothing (bad path, access denied, out of memory)"),
)


def classify_exit(rc: int) -> ExitStatus:
    """Decode robocopy's exit bitmask into flags and one sentence."""
    if rc < 0 or rc > 31:
        return ExitStatus(rc, False, False, False, False, False, True,
                          f"exit code {rc} is not a robocopy exit code (the command did not run)")
    parts = [text for bit, text in _BITS if rc & bit]
    reason = "; ".join(parts) if parts else "nothing to copy: source and destination match"
    return ExitStatus(
        rc=rc, ok=rc < 8, copied=bool(rc & 1), extras=bool(rc & 2), mismatched=bool(rc & 4),
        copy_failures=bool(rc & 8), fatal=bool(rc & 16), reason=f"robocopy exit {rc}: {reason}",
    )


def parse_size(number: str, unit: str | None) -> int:
    """``"18.00", "m"`` → bytes (robocopy's k/m/g are powers of 1024)."""
    value = float(number.replace(",", "."))
    return int(round(value * _UNITS[(unit or "").lower()]))


def _numbers(rest: str) -> list[int]:
    return [parse_size(n, u) for n, u in _NUMBER.findall(rest)]


def _last_table(lines: list[str]) -> list[str]:
    """The lines after the last dashed separator: robocopy prints the summary there."""
    last = max((i for i, line in enumerate(lines) if _SEPARATOR.match(line)), default=-1)
    return lines[last + 1:]


def parse_summary(text: str) -> tuple[RobocopySummary | None, str | None]:
    """Read the summary table by position; return (summary, None) or (None, why not)."""
    rows: list[tuple[str, list[int]]] = []
    elapsed: float | None = None
    for line in _last_table(text.splitlines()):
        match = _ROW.match(line)
        if not match:
            continue
        rest = match.group("rest")
        time_match = _TIME.search(rest)
        if time_match:  # the Times row (or Started/Ended dates): never a count row
            if len(rows) == 3 and elapsed is None:
                h, m, sec = time_match.groups()
                elapsed = int(h) * 3600 + int(m) * 60 + int(sec)
            continue
        values = _numbers(rest)
        if len(values) == len(COLUMNS) and len(rows) < 3:
            rows.append((match.group("label").strip(), values))
    if len(rows) < 3:
        return None, (f"could not read the robocopy summary: found {len(rows)} of the 3 "
                      "rows (dirs, files, bytes) with six numbers; trusting the exit code")
    labels = tuple(label.lower() for label, _ in rows)
    counts = [Counts(*values) for _, values in rows]
    return RobocopySummary(counts[0], counts[1], counts[2], elapsed,
                           labels_recognised=labels == ENGLISH_LABELS), None


def parse_errors(text: str) -> tuple[str, ...]:
    """``ERROR n (0x...) action path`` lines, each joined with the message line after it."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        match = _ERROR.search(line)
        if match:
            message = lines[i + 1].strip() if i + 1 < len(lines) else ""
            found.append(f"ERROR {match.group(1)} {match.group(2).strip()}"
                         + (f": {message}" if message else ""))
    return tuple(found)


def parse_robocopy(*, rc: int, output: str) -> RobocopyResult:
    """Classify the exit code and read the summary (by position) and the error lines."""
    status = classify_exit(rc)
    summary, problem = parse_summary(output)
    if summary is not None and not summary.labels_recognised:
        problem = ("robocopy summary labels are not the English ones (localised Windows?): "
                   "the rows were read by position as dirs, files, bytes; trusting the exit code")
    return RobocopyResult(status=status, summary=summary, summary_problem=problem,
                          errors=parse_errors(output))
