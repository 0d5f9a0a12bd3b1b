"""The robocopy log parser on realistic logs written from the documented format."""

import pytest

from cr_orchestrator.act.sync.robocopy_log import Counts, classify_exit, parse_robocopy, parse_size

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
    assert r.errors[0] == (r"ERROR 5 Copying File C:\ProgramData\cr-orchestrator\vss\x\MDaemon"
                           r"\Users\a.msg: Access is denied.")
    assert "could not be copied" in r.status.reason


def test_fatal_run_without_summary_says_it_could_not_read_it():
    r = parse_robocopy(rc=16, output=FATAL)
    assert not r.status.ok and r.status.fatal
    assert r.summary is None
    assert "could not read the robocopy summary" in r.summary_problem
    assert "ERROR 53 Accessing Destination Directory" in r.errors[0]
    assert r.errors[0].endswith("The network path was not found.")


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
