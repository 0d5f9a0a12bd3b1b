"""The generated PowerShell of a Windows sync (tested as text; see docs/replication.md)."""

import pytest

from cr_orchestrator.errors import ConfigError
from cr_orchestrator.act.sync import robocopy_script as rs

LINK = r"C:\ProgramData\cr-orchestrator\vss\mail-maildata-1a2b3c4d"
LOG = r"C:\ProgramData\cr-orchestrator\logs\mail-maildata-mail-b.log"


def test_robocopy_arguments_exact_with_threads():
    args = rs.robocopy_arguments(source=LINK + r"\MDaemon", destination=r"\\10.0.0.2\D$\MDaemon",
                                 log_path=LOG, options=rs.RobocopyOptions())
    assert args == [LINK + r"\MDaemon", r"\\10.0.0.2\D$\MDaemon", "/MIR", "/R:2", "/W:5", "/XJ",
                    "/BYTES", "/NP", "/NFL", "/NDL", "/TEE", f"/UNILOG+:{LOG}", "/MT:8"]


def test_bandwidth_limit_uses_ipg_and_never_mt():
    args = rs.robocopy_arguments(source="a", destination="b", log_path=LOG,
                                 options=rs.RobocopyOptions(bandwidth_limit_kbps=1000))
    assert "/IPG:525" in args  # 64 KiB blocks at <= 1 Mbit/s: 524.288 ms per block
    assert not any(a.startswith("/MT") for a in args)


@pytest.mark.parametrize("kbps,gap", [(1, 524288), (1000, 525), (10_000, 53), (100_000, 6),
                                      (10_000_000, 1)])
def test_ipg_from_bandwidth(kbps, gap):
    assert rs.ipg_ms(kbps) == gap


def test_ipg_refuses_nonsense():
    with pytest.raises(ConfigError):
        rs.ipg_ms(0)


def test_excludes_dirs_with_trailing_slash_go_to_xd_only():
    args = rs.robocopy_arguments(source="a", destination="b", log_path=LOG,
                                 options=rs.RobocopyOptions(excludes=("Logs\\", "*.tmp")))
    xd, xf = args.index("/XD"), args.index("/XF")
    assert args[xd + 1:xf] == ["Logs", "*.tmp"] and args[xf + 1:] == ["*.tmp"]


@pytest.mark.parametrize("address,path,unc", [
    ("10.0.0.2", r"D:\MDaemon", r"\\10.0.0.2\D$\MDaemon"),
    ("10.0.0.2", "d:\\MDaemon\\", r"\\10.0.0.2\D$\MDaemon"),
    ("10.0.0.3", r"E:\DR\mail", r"\\10.0.0.3\E$\DR\mail"),
    ("10.0.0.3", "E:\\", r"\\10.0.0.3\E$"),
    ("10.0.0.3", r"MailShare\mail", r"\\10.0.0.3\MailShare\mail"),
])
def test_unc_paths_over_the_cluster_network(address, path, unc):
    assert rs.unc_path(address=address, path=path) == unc


def test_unc_path_with_own_host_part_is_refused():
    with pytest.raises(ConfigError, match="cr_cluster_address"):
        rs.unc_path(address="10.0.0.2", path=r"\\other\share")


def test_split_drive_path():
    assert rs.split_drive_path(r"d:\MDaemon\Users", what="source") == ("D:\\", r"MDaemon\Users")
    with pytest.raises(ConfigError, match="source path 'MDaemon'"):
        rs.split_drive_path("MDaemon", what="source path")


def test_quoting_doubles_single_quotes_and_refuses_line_breaks():
    assert rs.ps_quote(r"D:\O'Brien") == r"'D:\O''Brien'"
    with pytest.raises(ConfigError):
        rs.ps_quote("a\nb")


def test_link_path_refuses_odd_run_ids():
    assert rs.link_path(run_id="mail-x-1") == r"C:\ProgramData\cr-orchestrator\vss\mail-x-1"
    with pytest.raises(ConfigError):
        rs.link_path(run_id="a b")


def test_create_shadow_script_shadows_links_with_trailing_backslash_and_cleans_on_failure():
    text = rs.create_shadow_script(volume="D:\\", link=LINK)
    assert "-ClassName Win32_ShadowCopy -MethodName Create" in text
    assert "Volume = $volume; Context = 'ClientAccessible'" in text
    assert "$volume = 'D:\\'" in text and f"$link = '{LINK}'" in text
    assert 'mklink /d "$link" "$($shadow.DeviceObject)\\"' in text  # trailing backslash
    assert text.index("Set-Content -LiteralPath $stateFile") < text.index("mklink")
    finally_block = text[text.index("} finally {"):]
    assert "Remove-CimInstance" in finally_block and "rmdir" in finally_block
    assert "exit 3" in text and "ConvertTo-Json -Compress" in text


def test_robocopy_script_returns_robocopys_exit_code_and_checks_the_shadow_source():
    text = rs.robocopy_script(source=LINK + r"\MDaemon", destination=r"\\10.0.0.2\D$\MDaemon",
                              log_path=LOG, options=rs.RobocopyOptions(excludes=("*.tmp",)))
    assert f"& robocopy.exe '{LINK}\\MDaemon' '\\\\10.0.0.2\\D$\\MDaemon' '/MIR'" in text
    assert "'/R:2' '/W:5' '/XJ' '/BYTES' '/NP'" in text and "'/XF' '*.tmp'" in text
    assert text.rstrip().endswith("exit $LASTEXITCODE")
    assert "Test-Path -LiteralPath $source" in text and "exit 16" in text


def test_cleanup_script_uses_known_id_or_state_file_and_stops_stray_robocopy():
    known = rs.cleanup_script(link=LINK, shadow_id="{ABC}")
    assert "$shadowId = '{ABC}'" in known
    unknown = rs.cleanup_script(link=LINK, shadow_id=None)
    assert "$shadowId = ''" in unknown and "Get-Content -LiteralPath $stateFile" in unknown
    for text in (known, unknown):
        assert "Name='robocopy.exe'" in text and "-MethodName Terminate" in text
        assert text.index("Terminate") < text.index("rmdir") < text.index("Remove-CimInstance")
        assert "step = 'delete-shadow'" in text


def test_quarantine_script_moves_recent_files_keeping_relative_paths():
    text = rs.quarantine_script(root=r"D:\MDaemon", quarantine=r"D:\MDaemon.cr-quarantine\20261122T030000Z",
                                since_utc="2026-11-22T02:59:00Z")
    assert "$_.LastWriteTimeUtc -ge $since" in text and "Move-Item -LiteralPath" in text
    assert "'2026-11-22T02:59:00Z'" in text and "moved = @($moved)" in text


def test_vss_codes_are_described():
    assert rs.describe_vss_code(8) == "maximum number of shadow copies reached"
    assert "already in progress" in rs.describe_vss_code(9)
    assert rs.describe_vss_code(99) == "undocumented code 99"


def test_every_step_fits_a_windows_command_line():
    """powershell -EncodedCommand (UTF-16LE, base64) must stay under cmd.exe's 8191 chars."""
    import base64

    long_link = rs.link_path(run_id="a-very-long-cluster-name-and-set-name-1a2b3c4d")
    scripts = [
        rs.create_shadow_script(volume="D:\\", link=long_link),
        rs.robocopy_script(source=long_link + r"\MDaemon\Users", destination=r"\\10.100.200.250\D$\MDaemon\Users",
                           log_path=rs.WORK_DIR + r"\logs\a-very-long-cluster-name-set-target.log",
                           options=rs.RobocopyOptions(excludes=("*.tmp", "Logs\\", "Backup\\", "*.bak"))),
        rs.cleanup_script(link=long_link, shadow_id="{6C3E1F0A-1111-2222-3333-444455556666}"),
        rs.quarantine_script(root=r"D:\MDaemon", quarantine=r"D:\MDaemon.cr-quarantine\20261122T030000Z",
                             since_utc="2026-11-22T02:59:00Z"),
    ]
    for text in scripts:
        command = "powershell -NoProfile -NonInteractive -EncodedCommand " + base64.b64encode(
            text.encode("utf-16-le")).decode()
        assert len(command) < 8191
