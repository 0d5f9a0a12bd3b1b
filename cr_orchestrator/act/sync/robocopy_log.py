"""Read what robocopy says: the exit-code bitmask first, the summary table second.

Robocopy's exit code is a bitmask (1 copied, 2 extras, 4 mismatched, 8 some copies
failed, 16 fatal) and is the only language-independent verdict: ``rc >= 8`` is a failure.
The summary table at the end of the log is localised (``Dirs``/``Files``/``Bytes`` in
English, ``Verzeichnisse``/``Dateien``/``Bytes`` in German, ``ディレクトリ``/``ファイル``/
``バイト`` in Japanese), so it is read by position: the first three rows that carry six
numbers are dirs, files and bytes, whatever their labels say. When the labels are not
the English ones the result says so, and when no table can be found at all the summary
is ``None`` with a sentence saying why: the exit code still decides.

Three edges are handled on purpose:

* **Retries.** Robocopy prints ``ERROR n (0x...) <action> <path>`` and the system's
  message once per failed attempt, ``Waiting n seconds... Retrying...`` before each retry
  and ``ERROR: RETRY LIMIT EXCEEDED.`` when it gives up. The attempts on one path are
  folded into one :class:`CopyError` with the retry count and the final outcome. A
  ``Waiting``/``RETRY LIMIT`` line belongs to the ``ERROR`` line just before it (this
  assumes one file's lines are not interleaved with another's; under ``/MT`` that is not
  verified on Windows). These lines, like the ``ERROR n`` lines themselves, are matched
  in English only: a localised log's retries are not counted.
* **Exit 16 keeps its cause.** ``ERROR : Invalid Parameter #3 : "/XYZ"``, the script's own
  ``cr-orchestrator: ...`` line, or the last error that was not overcome becomes
  :attr:`ExitStatus.cause` and ends the reason.
* **A cut-off log.** A line is known to be whole only when a line break follows it, and
  only whole lines are read: an unterminated last line may end inside a number
  (``95916032`` cut to ``959``, ``2.25 g`` to ``2.2``), so it is never read, and the
  result says the log is truncated (:attr:`RobocopyResult.truncated`). A summary table
  that stops before its ``Times`` row is reported the same way. A whole robocopy log ends
  with a line break, so it never looks cut (pass the output unstripped).
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
# "Copying File C:\x\y.msg", "Accessing Destination Directory \\10.0.0.2\D$\MDaemon\"
_TARGET = re.compile(r"^(?P<action>.*?)\s*(?P<path>(?:[A-Za-z]:\\|\\\\).*)$")
_WAITING = re.compile(r"^\s*Waiting\s+\d+\s+seconds\.*\s*Retrying", re.IGNORECASE)
_RETRY_LIMIT = re.compile(r"^\s*ERROR\s*:\s*RETRY LIMIT EXCEEDED", re.IGNORECASE)
# robocopy's own fatal complaints: "ERROR : Invalid Parameter #3 : "/XYZ"",
# "ERROR : No Destination Directory Specified."
_FATAL_LINE = re.compile(r"^\s*(?:\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\s+)?ERROR\s*:\s*(?P<text>\S.*?)\s*$")
# robocopy_script.robocopy_script's own exit 16 ("shadow source ... is missing")
_SCRIPT_LINE = re.compile(r"^\s*cr-orchestrator:\s*(?P<text>\S.*?)\s*$")
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
    cause: str | None = None  # exit 16: what the log says stopped robocopy, when it says


# CopyError.outcome
SUCCEEDED = "succeeded"  # retried, and robocopy went on without another error for the path
GAVE_UP = "gave up"  # ERROR: RETRY LIMIT EXCEEDED.
NOT_RETRIED = "not retried"  # the last attempt failed and robocopy went on without retrying
UNKNOWN = "unknown"  # the log ends before robocopy said what became of the path


@dataclass(frozen=True)
class CopyError:
    """One path robocopy reported errors for, all its attempts folded into one."""

    code: int  # the Windows error of the last failed attempt (32: file in use, 5: access denied)
    action: str  # "Copying File", "Accessing Destination Directory", ...
    path: str  # "" when the ERROR line names none
    message: str  # the system's message for the last failed attempt
    attempts: int  # failed attempts (ERROR lines)
    retries: int  # "Waiting n seconds... Retrying..." lines after them
    outcome: str  # SUCCEEDED, GAVE_UP, NOT_RETRIED or UNKNOWN

    @property
    def failed(self) -> bool:
        """True unless robocopy overcame the error by retrying."""
        return self.outcome != SUCCEEDED

    @property
    def text(self) -> str:
        """``ERROR 32 Copying File C:\\x\\y.msg: The process cannot access the file ...``"""
        target = " ".join(part for part in (self.action, self.path) if part)
        return f"ERROR {self.code} {target}" + (f": {self.message}" if self.message else "")

    def __str__(self) -> str:
        return f"{self.text} ({self._history()})"

    def _history(self) -> str:
        times = f"{self.retries} time" + ("" if self.retries == 1 else "s")
        if self.outcome == SUCCEEDED:
            return f"succeeded on retry {self.retries}"
        if self.outcome == GAVE_UP:
            return f"retried {times}, then gave up: retry limit exceeded"
        if self.outcome == NOT_RETRIED:
            return "not retried" if not self.retries else f"retried {times}, then not retried again"
        return (f"retried {times}; " if self.retries else "") + "the log says no more about it"


@dataclass(frozen=True)
class RobocopyResult:
    status: ExitStatus
    summary: RobocopySummary | None
    summary_problem: str | None  # why the summary could not be read (None when it was)
    errors: tuple[str, ...]  # one line per path in error: "ERROR 5 Copying File X: message (history)"
    failures: tuple[CopyError, ...] = ()  # the same, structured
    truncated: bool = False  # the log is cut off: it ends inside a line, or inside the summary table


_BITS = (
    (1, "files were copied"),
    (2, "extra files or directories were found in the destination"),
    (4, "mismatched files or directories were found"),
    (8, "some files or directories could not be copied (retries exhausted)"),
    (16, "fatal error: robocopy copied nothing (bad path, access denied, out of memory)"),
)


def classify_exit(rc: int, cause: str | None = None) -> ExitStatus:
    """Decode robocopy's exit bitmask into flags and one sentence.

    ``cause`` (what the log says stopped robocopy) replaces the generic guess of bit 16.
    """
    if rc < 0 or rc > 31:
        return ExitStatus(rc, False, False, False, False, False, True,
                          f"exit code {rc} is not a robocopy exit code (the command did not run)")
    cause = cause if rc & 16 else None
    parts = [f"fatal error: {cause}" if bit == 16 and cause else text
             for bit, text in _BITS if rc & bit]
    reason = "; ".join(parts) if parts else "nothing to copy: source and destination match"
    return ExitStatus(
        rc=rc, ok=rc < 8, copied=bool(rc & 1), extras=bool(rc & 2), mismatched=bool(rc & 4),
        copy_failures=bool(rc & 8), fatal=bool(rc & 16), reason=f"robocopy exit {rc}: {reason}",
        cause=cause,
    )


def parse_size(number: str, unit: str | None) -> int:
    """``"18.00", "m"`` → bytes (robocopy's k/m/g are powers of 1024)."""
    value = float(number.replace(",", "."))
    return int(round(value * _UNITS[(unit or "").lower()]))


def _numbers(rest: str) -> list[int]:
    return [parse_size(n, u) for n, u in _NUMBER.findall(rest)]


def _short(text: str, limit: int = 80) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _whole_lines(text: str) -> tuple[list[str], str | None]:
    """The lines known to be whole, and the unterminated last line (None if there is none)."""
    lines = text.splitlines()
    if lines and not text.endswith(("\n", "\r")):
        cut = lines.pop()
        return lines, cut if cut.strip() else None
    return lines, None


@dataclass(frozen=True)
class _Table:
    summary: RobocopySummary | None
    problem: str | None
    truncated: bool


def _read_table(text: str) -> _Table:
    """The summary table after the last dashed separator, read by position, whole lines only."""
    lines, cut = _whole_lines(text)
    start = max((i + 1 for i, line in enumerate(lines) if _SEPARATOR.match(line)), default=0)
    rows: list[tuple[str, list[int]]] = []
    elapsed: float | None = None
    times_seen = False
    for line in lines[start:]:
        match = _ROW.match(line)
        if not match:
            continue
        rest = match.group("rest")
        time_match = _TIME.search(rest)
        if time_match:  # the Times row (or Started/Ended dates): never a count row
            if len(rows) == 3 and not times_seen:
                h, m, sec = time_match.groups()
                elapsed = int(h) * 3600 + int(m) * 60 + int(sec)
                times_seen = True
            continue
        values = _numbers(rest)
        if len(values) == len(COLUMNS) and len(rows) < 3:
            rows.append((match.group("label").strip(), values))
    short_table = bool(rows) and not times_seen  # robocopy always prints Times after Bytes
    truncated = cut is not None or short_table
    problem = ""
    if cut is not None:
        problem = f"the robocopy log is truncated: it ends inside the line {_short(cut)!r}, which is not read"
    elif short_table:
        problem = (f"the robocopy log is truncated inside its summary table: it ends after "
                   f"{len(rows)} of its rows, before the Times row")
    if len(rows) < 3:
        if truncated:
            return _Table(None, f"{problem}; no whole summary table before it; trusting the exit code", True)
        return _Table(None, (f"could not read the robocopy summary: found {len(rows)} of the 3 "
                             "rows (dirs, files, bytes) with six numbers; trusting the exit code"), False)
    labels = tuple(label.lower() for label, _ in rows)
    counts = [Counts(*values) for _, values in rows]
    summary = RobocopySummary(counts[0], counts[1], counts[2], elapsed,
                              labels_recognised=labels == ENGLISH_LABELS)
    if truncated:
        return _Table(summary, f"{problem}; the dirs, files and bytes rows before it are whole", True)
    return _Table(summary, None, False)


def parse_summary(text: str) -> tuple[RobocopySummary | None, str | None]:
    """Read the summary table by position; return (summary, None) or (summary or None, why)."""
    table = _read_table(text)
    return table.summary, table.problem


@dataclass
class _Attempts:
    code: int
    action: str
    path: str
    message: str
    attempts: int = 0
    retries: int = 0
    gave_up: bool = False
    last_line: int = 0  # index of the last line that is about this path


def parse_failures(text: str) -> tuple[CopyError, ...]:
    """Each path robocopy reported ``ERROR n (0x...)`` for, once, with retries and outcome
    (whole lines only: an unterminated last line is not read)."""
    lines, _ = _whole_lines(text)
    found: list[_Attempts] = []
    open_by_key: dict[tuple[str, str], _Attempts] = {}
    current: _Attempts | None = None
    for i, line in enumerate(lines):
        match = _ERROR.search(line)
        if match:
            target = match.group(2).strip()
            split = _TARGET.match(target)
            action, path = (split.group("action"), split.group("path")) if split else (target, "")
            following = lines[i + 1].strip() if i + 1 < len(lines) else ""
            is_message = bool(following) and not (_ERROR.search(following) or _WAITING.match(following)
                                                  or _RETRY_LIMIT.match(following))
            key = (action.lower(), path.lower())
            entry = open_by_key.get(key)
            if entry is None or entry.gave_up:
                entry = _Attempts(code=int(match.group(1)), action=action, path=path, message="")
                open_by_key[key] = entry
                found.append(entry)
            entry.attempts += 1
            entry.code = int(match.group(1))
            entry.message = following if is_message else ""
            entry.last_line = i + 1 if is_message else i
            current = entry
        elif current is not None and _WAITING.match(line):
            current.retries += 1
            current.last_line = i
        elif current is not None and _RETRY_LIMIT.match(line):
            current.gave_up = True
            current.last_line = i
    last_text = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    result = []
    for entry in found:
        if entry.gave_up:
            outcome = GAVE_UP
        elif last_text <= entry.last_line:
            outcome = UNKNOWN  # nothing after: the log was cut (or robocopy killed) meanwhile
        elif entry.attempts > entry.retries:
            outcome = NOT_RETRIED
        else:
            outcome = SUCCEEDED
        result.append(CopyError(code=entry.code, action=entry.action, path=entry.path,
                                message=entry.message, attempts=entry.attempts,
                                retries=entry.retries, outcome=outcome))
    return tuple(result)


def parse_errors(text: str) -> tuple[str, ...]:
    """One line per path in error: ``ERROR n action path: message (retries and outcome)``."""
    return tuple(str(failure) for failure in parse_failures(text))


def fatal_cause(text: str, failures: tuple[CopyError, ...] = ()) -> str | None:
    """Why robocopy stopped (exit 16), as the log says it, or None when it does not say.

    In this order: robocopy's own ``ERROR : ...`` line (a bad parameter), the robocopy
    script's ``cr-orchestrator: ...`` line (the shadow source is missing), the last error
    that retrying did not overcome (``ERROR 53 Accessing Destination Directory ...``).
    """
    lines, _ = _whole_lines(text)
    for line in lines:
        match = _FATAL_LINE.match(line)
        if match and not _RETRY_LIMIT.match(line):
            return match.group("text")
    for line in lines:
        match = _SCRIPT_LINE.match(line)
        if match:
            return match.group("text")
    unresolved = [failure for failure in failures if failure.failed]
    return unresolved[-1].text if unresolved else None


def parse_robocopy(*, rc: int, output: str) -> RobocopyResult:
    """Classify the exit code (with its cause) and read the summary (by position) and errors."""
    failures = parse_failures(output)
    status = classify_exit(rc, fatal_cause(output, failures) if 0 <= rc <= 31 and rc & 16 else None)
    table = _read_table(output)
    problems = [table.problem] if table.problem else []
    if table.summary is not None and not table.summary.labels_recognised:
        problems.append("robocopy summary labels are not the English ones (localised Windows?): "
                        "the rows were read by position as dirs, files, bytes; trusting the exit code")
    return RobocopyResult(status=status, summary=table.summary,
                          summary_problem="; ".join(problems) or None,
                          errors=tuple(str(failure) for failure in failures),
                          failures=failures, truncated=table.truncated)
