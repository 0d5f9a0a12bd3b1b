"""The robocopy log parser on realistic logs written from robocopy's English output format.

The tables below are the contract: each row is a log as robocopy prints it (with the
options robocopy_script.py passes: /NFL /NDL, so no per-file lines) and what the parser
must say about it.
"""

from dataclasses import dataclass

import pytest

from cr_orchestrator.act.sync.robocopy_log import (
    GAVE_UP, NOT_RETRIED, SUCCEEDED, UNKNOWN, Counts, classify_exit, parse_robocopy, parse_size,
)

HEADER = r"""
-------------------------------------------------------------------------------
   ROBOCOPY     ::     Robust File Copy for Windows
-------------------------------------------------------------------------------

  Started : Sunday, November 22, 2026 3:00:01 AM
   Source : C:\ProgramData\cr-orchestrator\vss\mail-maildata-1a2b3c4d\MDaemon\
     Dest : \\10.0.0.2\D$\MDaemon\

    Files : *.*

 Exc Dirs : Logs

  Options : *.* /NDL /NFL /TEE /S /E /DCOPY:DA /COPY:DAT /PURGE /MIR /XJ /BYTES /NP /MT:8 /R:2 /W:5

------------------------------------------------------------------------------

"""

CLEAN = HEADER + """
------------------------------------------------------------------------------

               Total    Copied   Skipped  Mismatch    FAILED    Extras
    Dirs :        14         2        12         0         0         0
   Files :      5012        37      4975         0         0         0
   Bytes :  96632832    716800  95916032         0         0         0
   Times :   0:00:03   0:00:01                       0:00:00   0:00:01
   Ended : Sunday, November 22, 2026 3:00:04 AM
"""

EXTRAS_UNITS = HEADER + """
------------------------------------------------------------------------------

               Total    Copied   Skipped  Mismatch    FAILED    Extras
    Dirs :         3         0         3         0         0         1
   Files :        40         2        38         0         0         5
   Bytes :   18.00 m    1.50 k   17.99 m         0         0    2.25 g
   Times :   0:01:05   0:00:00                       0:00:00   0:00:00

   Speed :             3072000 Bytes/sec.
   Speed :             175.781 MegaBytes/min.
   Ended : Sunday, November 22, 2026 3:01:06 AM
"""

FAILED = HEADER + r"""
2026/11/22 03:00:02 ERROR 5 (0x00000005) Copying File C:\ProgramData\cr-orchestrator\vss\x\MDaemon\Users\a.msg
Access is denied.
Waiting 5 seconds... Retrying...
2026/11/22 03:00:07 ERROR 5 (0x00000005) Copying File C:\ProgramData\cr-orchestrator\vss\x\MDaemon\Users\a.msg
Access is denied.
Waiting 5 seconds... Retrying...
2026/11/22 03:00:12 ERROR 5 (0x00000005) Copying File C:\ProgramData\cr-orchestrator\vss\x\MDaemon\Users\a.msg
Access is denied.

ERROR: RETRY LIMIT EXCEEDED.

------------------------------------------------------------------------------

               Total    Copied   Skipped  Mismatch    FAILED    Extras
    Dirs :        14         0        14         0         0         0
   Files :      5012         3      5008         0         1         0
   Bytes :  96632832     12288  96616448         0      4096         0
   Times :   0:00:13   0:00:00                       0:00:10   0:00:03
   Ended : Sunday, November 22, 2026 3:00:14 AM
"""

FATAL = HEADER.split("------------------------------------------------------------------------------\n\n")[0] + r"""
2026/11/22 03:00:01 ERROR 53 (0x00000035) Accessing Destination Directory \\10.0.0.2\D$\MDaemon\
The network path was not found.
Waiting 5 seconds... Retrying...
"""

GERMAN = """
-------------------------------------------------------------------------------
   ROBOCOPY     ::     Robustes Dateikopieren für Windows
-------------------------------------------------------------------------------

  Gestartet: Sonntag, 22. November 2026 03:00:01
   Quelle : C:\\ProgramData\\cr-orchestrator\\vss\\x\\MDaemon\\
     Ziel : \\\\10.0.0.2\\D$\\MDaemon\\

------------------------------------------------------------------------------

               Insgesamt   KopiertÜbersprungenKeine Übereinstimmung    FEHLER    Extras
Verzeichnisse:        14         2        12         0         0         0
     Dateien:      5012        37      4975         0         0         3
       Bytes:  96632832    716800  95916032         0         0     12288
      Zeiten:   0:00:03   0:00:01                       0:00:00   0:00:01
     Beendet: Sonntag, 22. November 2026 03:00:04
"""

JAPANESE = """
------------------------------------------------------------------------------

                  合計     コピー済み      スキップ       不一致        失敗    Extras
   ディレクトリ:        14         2        12         0         0         0
     ファイル:      5012        37      4975         0         0         0
      バイト:   92.15 m  700.00 k   91.47 m         0         0         0
       時刻:   0:00:03   0:00:01                       0:00:00   0:00:01
   終了: 2026年11月22日 3:00:04
"""

GARBLED = "robocopy printed something we do not understand\n----\n???\n"


def test_clean_run_reads_every_column_of_dirs_files_bytes_and_the_time():
    r = parse_robocopy(rc=1, output=CLEAN)
    assert r.status.ok and r.status.copied and not r.status.extras
    assert r.summary.dirs == Counts(14, 2, 12, 0, 0, 0)
    assert r.summary.files == Counts(5012, 37, 4975, 0, 0, 0)
    assert r.summary.bytes == Counts(96632832, 716800, 95916032, 0, 0, 0)
    assert r.summary.elapsed_s == 3
    assert r.summary.labels_recognised and r.summary_problem is None and r.errors == ()
    assert not r.truncated and r.failures == ()


def test_sizes_with_units_and_extras_without_bytes_flag():
    r = parse_robocopy(rc=3, output=EXTRAS_UNITS)
    assert r.status.ok and r.status.copied and r.status.extras
    assert r.summary.bytes == Counts(18 * 1024**2, 1536, round(17.99 * 1024**2), 0, 0,
                                     round(2.25 * 1024**3))
    assert r.summary.files.extras == 5 and r.summary.dirs.extras == 1
    assert r.summary.elapsed_s == 65


def test_failed_copies_are_a_failure_with_the_error_lines():
    r = parse_robocopy(rc=9, output=FAILED)
    assert not r.status.ok and r.status.copy_failures and r.status.copied
    assert r.summary.files.failed == 1 and r.summary.bytes.failed == 4096
    assert r.errors == (r"ERROR 5 Copying File C:\ProgramData\cr-orchestrator\vss\x\MDaemon"
                        r"\Users\a.msg: Access is denied. (retried 2 times, then gave up: retry limit exceeded)",)
    assert "could not be copied" in r.status.reason


def test_fatal_run_without_summary_says_it_could_not_read_it():
    r = parse_robocopy(rc=16, output=FATAL)
    assert not r.status.ok and r.status.fatal
    assert r.summary is None and not r.truncated
    assert "could not read the robocopy summary" in r.summary_problem
    assert "ERROR 53 Accessing Destination Directory" in r.errors[0]
    assert "The network path was not found." in r.errors[0]
    assert r.status.reason == (r"robocopy exit 16: fatal error: ERROR 53 Accessing Destination Directory "
                               r"\\10.0.0.2\D$\MDaemon\: The network path was not found.")


@pytest.mark.parametrize("log,files,bytes_copied", [
    (GERMAN, Counts(5012, 37, 4975, 0, 0, 3), 716800),
    (JAPANESE, Counts(5012, 37, 4975, 0, 0, 0), 700 * 1024),
])
def test_localised_log_is_read_by_position_and_flagged(log, files, bytes_copied):
    r = parse_robocopy(rc=1, output=log)
    assert r.status.ok  # the exit code decides, whatever the language
    assert r.summary.files == files and r.summary.bytes.copied == bytes_copied
    assert not r.summary.labels_recognised
    assert "not the English ones" in r.summary_problem


def test_unreadable_output_leaves_the_exit_code_in_charge():
    r = parse_robocopy(rc=0, output=GARBLED)
    assert r.status.ok and r.summary is None and "trusting the exit code" in r.summary_problem
    assert not parse_robocopy(rc=8, output=GARBLED).status.ok


@pytest.mark.parametrize("rc,ok,words", [
    (0, True, "nothing to copy"),
    (1, True, "files were copied"),
    (2, True, "extra files"),
    (3, True, "files were copied; extra files"),
    (4, True, "mismatched"),
    (7, True, "mismatched"),
    (8, False, "could not be copied"),
    (16, False, "fatal"),
    (24, False, "fatal"),
    (-1, False, "not a robocopy exit code"),
    (255, False, "not a robocopy exit code"),
])
def test_exit_code_bitmask(rc, ok, words):
    status = classify_exit(rc)
    assert status.ok is ok and words in status.reason


@pytest.mark.parametrize("number,unit,expected", [
    ("0", None, 0), ("12", None, 12), ("1.5", "k", 1536), ("18,00", "m", 18 * 1024**2),
    ("2", "g", 2 * 1024**3), ("1", "t", 1024**4),
])
def test_sizes(number, unit, expected):
    assert parse_size(number, unit) == expected


# ------------------------------------------------------------------ the edges, table-driven
SEPARATOR = "------------------------------------------------------------------------------\n"
TABLE_HEAD = "\n" + SEPARATOR + "\n               Total    Copied   Skipped  Mismatch    FAILED    Extras\n"
DIRS = "    Dirs :        14         2        12         0         0         0\n"
FILES = "   Files :      5012        37      4975         0         0         0\n"
BYTES = "   Bytes :  96632832    716800  95916032         0         0         0\n"
TIMES = "   Times :   0:00:03   0:00:01                       0:00:00   0:00:01\n"
ENDED = "   Ended : Sunday, November 22, 2026 3:00:04 AM\n"
SUMMARY = TABLE_HEAD + DIRS + FILES + BYTES + TIMES + ENDED
FILES_WITH_FAILURES = "   Files :      5012        36      4975         0         1         0\n"
BYTES_WITH_FAILURES = "   Bytes :  96632832    712704  95916032         0      4096         0\n"
TIMES_WITH_RETRIES = "   Times :   0:00:13   0:00:01                       0:00:10   0:00:02\n"
SUMMARY_ONE_FAILED = TABLE_HEAD + DIRS + FILES_WITH_FAILURES + BYTES_WITH_FAILURES + TIMES_WITH_RETRIES + ENDED

SHADOW_SOURCE = "C:\\ProgramData\\cr-orchestrator\\vss\\mail-maildata-1a2b3c4d\\MDaemon\\"
INBOX = SHADOW_SOURCE + r"Users\frank\inbox.msg"
SENT = SHADOW_SOURCE + r"Users\frank\sent.msg"
IN_USE = "The process cannot access the file because it is being used by another process."


def error_32(time: str, path: str = INBOX) -> str:
    return f"2026/11/22 {time} ERROR 32 (0x00000020) Copying File {path}\n{IN_USE}\n"


WAIT = "Waiting 5 seconds... Retrying...\n"
LIMIT = "\nERROR: RETRY LIMIT EXCEEDED.\n\n"

RETRIED_THEN_COPIED = HEADER + error_32("03:00:02") + WAIT + error_32("03:00:07") + WAIT + SUMMARY
RETRY_LIMIT = (HEADER + error_32("03:00:02") + WAIT + error_32("03:00:07") + WAIT + error_32("03:00:12")
               + LIMIT + SUMMARY_ONE_FAILED)
# inbox.msg is copied on its first retry; sent.msg stays in use through both retries
TWO_FILES = (HEADER + error_32("03:00:02") + WAIT + error_32("03:00:08", SENT) + WAIT
             + error_32("03:00:13", SENT) + WAIT + error_32("03:00:18", SENT) + LIMIT + SUMMARY_ONE_FAILED)
# With /R:0 robocopy does not wait: the error is all it says about the path.
NO_RETRY = (HEADER.replace("/R:2 /W:5", "/R:0 /W:5")
            + f"2026/11/22 03:00:02 ERROR 5 (0x00000005) Copying File {INBOX}\nAccess is denied.\n"
            + SUMMARY_ONE_FAILED)
INVALID_PARAMETER = r"""
-------------------------------------------------------------------------------
   ROBOCOPY     ::     Robust File Copy for Windows
-------------------------------------------------------------------------------

  Started : Sunday, November 22, 2026 3:00:01 AM
   Source - C:\ProgramData\cr-orchestrator\vss\mail-maildata-1a2b3c4d\MDaemon\
     Dest - \\10.0.0.2\D$\MDaemon\

    Files :
  Options : /DCOPY:DA /COPY:DAT /R:1000000 /W:30

------------------------------------------------------------------------------

ERROR : Invalid Parameter #3 : "/XYZ"

       Simple Usage :: ROBOCOPY source destination /MIR

             source :: Source Directory (drive:\folder or \\server\share\folder).
        destination :: Destination Dir  (drive:\folder or \\server\share\folder).
               /MIR :: Mirror a complete directory tree.

    For more usage information run ROBOCOPY /?


****  /MIR can DELETE files as well as copy them !
"""
SOURCE_MISSING = (HEADER + f"2026/11/22 03:00:01 ERROR 2 (0x00000002) Accessing Source Directory {SHADOW_SOURCE}\n"
                  "The system cannot find the file specified.\n")
# robocopy_script.robocopy_script's own exit 16, before robocopy runs
SHADOW_MISSING = ("cr-orchestrator: shadow source "
                  "C:\\ProgramData\\cr-orchestrator\\vss\\mail-maildata-1a2b3c4d\\MDaemon is missing\r\n")
CUT_IN_BYTES = HEADER + TABLE_HEAD + DIRS + FILES + "   Bytes :  96632832    716800  959"  # inside 95916032
CUT_IN_FILES = HEADER + TABLE_HEAD + DIRS + "   Files :      5012        37      49"
CUT_IN_UNIT = HEADER + TABLE_HEAD + DIRS + FILES + "   Bytes :   18.00 m    1.50 k   17.99 m         0         0    2.2"
CUT_IN_TIMES = HEADER + TABLE_HEAD + DIRS + FILES + BYTES + "   Times :   0:00:03   0:0"
CUT_AFTER_BYTES = HEADER + TABLE_HEAD + DIRS + FILES + BYTES
CUT_IN_ENDED = HEADER + TABLE_HEAD + DIRS + FILES + BYTES + TIMES + "   Ended : Sunday, November 22, 20"
CUT_IN_ERROR = HEADER + error_32("03:00:02") + WAIT + "2026/11/22 03:00:07 ERROR 3"
CUT_WHILE_RETRYING = HEADER + error_32("03:00:02") + WAIT
WHOLE_FILES = Counts(5012, 37, 4975, 0, 0, 0)


@dataclass(frozen=True)
class Says:
    """What the parser must say about one log (every field is checked)."""

    ok: bool
    reason: str  # a part of status.reason
    cause: str | None = None  # status.cause, exactly (None: there is none)
    errors: tuple[str, ...] = ()  # exactly
    failures: tuple[tuple[str, int, int, str], ...] = ()  # (path, attempts, retries, outcome)
    files: Counts | None = None  # summary.files; None: there must be no summary
    elapsed_s: float | None = None
    truncated: bool = False
    problem: str | None = None  # a part of summary_problem; None: there must be none


def in_use(path: str, history: str) -> str:
    return f"ERROR 32 Copying File {path}: {IN_USE} ({history})"


CASES = [
    ("retried-then-copied", 1, RETRIED_THEN_COPIED, Says(
        ok=True, reason="robocopy exit 1: files were copied",
        errors=(in_use(INBOX, "succeeded on retry 2"),), failures=((INBOX, 2, 2, SUCCEEDED),),
        files=WHOLE_FILES, elapsed_s=3)),
    ("retry-limit-exceeded", 9, RETRY_LIMIT, Says(
        ok=False, reason="could not be copied (retries exhausted)",
        errors=(in_use(INBOX, "retried 2 times, then gave up: retry limit exceeded"),),
        failures=((INBOX, 3, 2, GAVE_UP),), files=Counts(5012, 36, 4975, 0, 1, 0), elapsed_s=13)),
    ("two-files-one-overcome-one-not", 9, TWO_FILES, Says(
        ok=False, reason="could not be copied",
        errors=(in_use(INBOX, "succeeded on retry 1"),
                in_use(SENT, "retried 2 times, then gave up: retry limit exceeded")),
        failures=((INBOX, 1, 1, SUCCEEDED), (SENT, 3, 2, GAVE_UP)),
        files=Counts(5012, 36, 4975, 0, 1, 0), elapsed_s=13)),
    ("error-without-retry", 9, NO_RETRY, Says(
        ok=False, reason="could not be copied",
        errors=(f"ERROR 5 Copying File {INBOX}: Access is denied. (not retried)",),
        failures=((INBOX, 1, 0, NOT_RETRIED),), files=Counts(5012, 36, 4975, 0, 1, 0), elapsed_s=13)),
    ("exit-16-invalid-parameter", 16, INVALID_PARAMETER, Says(
        ok=False, reason='robocopy exit 16: fatal error: Invalid Parameter #3 : "/XYZ"',
        cause='Invalid Parameter #3 : "/XYZ"', problem="could not read the robocopy summary")),
    ("exit-16-source-missing", 16, SOURCE_MISSING, Says(
        ok=False, reason="fatal error: ERROR 2 Accessing Source Directory",
        cause=("ERROR 2 Accessing Source Directory C:\\ProgramData\\cr-orchestrator\\vss\\"
               "mail-maildata-1a2b3c4d\\MDaemon\\: The system cannot find the file specified."),
        errors=("ERROR 2 Accessing Source Directory C:\\ProgramData\\cr-orchestrator\\vss\\"
                "mail-maildata-1a2b3c4d\\MDaemon\\: The system cannot find the file specified. "
                "(the log says no more about it)",),
        failures=(("C:\\ProgramData\\cr-orchestrator\\vss\\mail-maildata-1a2b3c4d\\MDaemon\\", 1, 0, UNKNOWN),),
        problem="could not read the robocopy summary")),
    ("exit-16-network-path-while-retrying", 16, FATAL, Says(
        ok=False, reason="fatal error: ERROR 53 Accessing Destination Directory",
        cause=r"ERROR 53 Accessing Destination Directory \\10.0.0.2\D$\MDaemon\: The network path was not found.",
        errors=(r"ERROR 53 Accessing Destination Directory \\10.0.0.2\D$\MDaemon\: The network path was not "
                r"found. (retried 1 time; the log says no more about it)",),
        failures=((r"\\10.0.0.2\D$\MDaemon" + "\\", 1, 1, UNKNOWN),),
        problem="could not read the robocopy summary")),
    ("exit-16-shadow-source-missing", 16, SHADOW_MISSING, Says(
        ok=False, reason="robocopy exit 16: fatal error: shadow source C:\\ProgramData",
        cause=r"shadow source C:\ProgramData\cr-orchestrator\vss\mail-maildata-1a2b3c4d\MDaemon is missing",
        problem="could not read the robocopy summary")),
    ("exit-16-says-nothing", 16, "", Says(
        ok=False, reason="robocopy exit 16: fatal error: robocopy copied nothing (bad path, access denied",
        problem="could not read the robocopy summary")),
    ("exit-24-keeps-the-cause-too", 24, INVALID_PARAMETER, Says(
        ok=False, reason='could not be copied (retries exhausted); fatal error: Invalid Parameter #3 : "/XYZ"',
        cause='Invalid Parameter #3 : "/XYZ"', problem="could not read the robocopy summary")),
    ("cut-inside-the-bytes-row", 1, CUT_IN_BYTES, Says(
        ok=True, reason="files were copied", truncated=True,
        problem="the robocopy log is truncated: it ends inside the line 'Bytes :  96632832")),
    ("cut-inside-the-files-row", 1, CUT_IN_FILES, Says(
        ok=True, reason="files were copied", truncated=True, problem="truncated")),
    ("cut-inside-a-size-with-unit", 1, CUT_IN_UNIT, Says(
        ok=True, reason="files were copied", truncated=True, problem="which is not read")),
    ("cut-inside-the-times-row", 1, CUT_IN_TIMES, Says(
        ok=True, reason="files were copied", files=WHOLE_FILES, elapsed_s=None, truncated=True,
        problem="the dirs, files and bytes rows before it are whole")),
    ("cut-after-the-bytes-row", 1, CUT_AFTER_BYTES, Says(
        ok=True, reason="files were copied", files=WHOLE_FILES, elapsed_s=None, truncated=True,
        problem="it ends after 3 of its rows, before the Times row")),
    ("cut-inside-the-ended-row", 1, CUT_IN_ENDED, Says(
        ok=True, reason="files were copied", files=WHOLE_FILES, elapsed_s=3, truncated=True,
        problem="truncated")),
    ("cut-inside-an-error-line", 8, CUT_IN_ERROR, Says(
        ok=False, reason="could not be copied",
        errors=(in_use(INBOX, "retried 1 time; the log says no more about it"),),
        failures=((INBOX, 1, 1, UNKNOWN),), truncated=True, problem="no whole summary table")),
    ("ends-while-retrying", 8, CUT_WHILE_RETRYING, Says(
        ok=False, reason="could not be copied",
        errors=(in_use(INBOX, "retried 1 time; the log says no more about it"),),
        failures=((INBOX, 1, 1, UNKNOWN),), problem="could not read the robocopy summary")),
]


@pytest.mark.parametrize("rc,log,says", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_what_the_parser_says(rc, log, says):
    r = parse_robocopy(rc=rc, output=log)
    assert r.status.ok is says.ok
    assert says.reason in r.status.reason
    assert r.status.cause == says.cause
    assert r.errors == says.errors
    assert tuple((f.path, f.attempts, f.retries, f.outcome) for f in r.failures) == says.failures
    if says.files is None:
        assert r.summary is None
    else:
        assert r.summary.files == says.files and r.summary.elapsed_s == says.elapsed_s
    assert r.truncated is says.truncated
    if says.problem is None:
        assert r.summary_problem is None
    else:
        assert says.problem in r.summary_problem


@pytest.mark.parametrize("log", [CLEAN, EXTRAS_UNITS, FAILED, RETRY_LIMIT, TWO_FILES, GERMAN, JAPANESE],
                         ids=["clean", "units", "failed", "retry-limit", "two-files", "german", "japanese"])
def test_a_log_cut_anywhere_never_gives_a_wrong_number(log):
    whole = parse_robocopy(rc=9, output=log)
    assert whole.summary is not None and not whole.truncated
    paths = {f.path for f in whole.failures}
    codes = {f.code for f in whole.failures}
    for end in range(len(log)):
        cut = log[:end]
        r = parse_robocopy(rc=9, output=cut)
        where = f"log cut after {end} characters: ...{cut[-40:]!r}"
        if r.summary is not None:
            assert (r.summary.dirs, r.summary.files, r.summary.bytes) == (
                whole.summary.dirs, whole.summary.files, whole.summary.bytes), where
            assert r.summary.elapsed_s in (None, whole.summary.elapsed_s), where
        if cut and not cut[-1].isspace():  # cut inside a line: never taken for a whole log
            assert r.truncated, where
        assert all(f.path in paths and f.code in codes for f in r.failures), where
        assert all(f.retries <= w.retries for f in r.failures for w in whole.failures if w.path == f.path), where
