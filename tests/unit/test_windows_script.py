"""The Windows probe script (built), its output (parsed) and the observations (pure)."""

from __future__ import annotations

import json

import pytest

from cr_orchestrator.observe.health import Health
from cr_orchestrator.observe import windows_script as ws
from cr_orchestrator.observe.windows_host import MIN_FREE_BYTES, observations_from_report


def report_json(**over) -> str:
    doc = {"v": 1, "clock_ms": 1_700_000_000_000, "boot_s": 1_699_990_000,
           "services": [{"name": "MDaemon", "status": "Running"}],
           "volumes": [{"path": "D:\\MDaemon", "root": "D:\\", "free": 5 << 30, "size": 10 << 30, "error": None}]}
    doc.update(over)
    return json.dumps(doc)


def test_script_carries_its_parameters_as_one_json_literal():
    script = ws.build_probe_script(services=["MDaemon", "W3SVC"], data_paths=["D:\\MDaemon"])
    assert script.startswith(ws.PROBE_MARKER)
    assert ws.extract_probe_params(script) == {"services": ["MDaemon", "W3SVC"], "paths": ["D:\\MDaemon"]}
    for needed in ("Get-Service", "Win32_OperatingSystem", "LastBootUpTime", "DriveInfo", "ConvertTo-Json"):
        assert needed in script


def test_quotes_in_names_cannot_break_out_of_the_literal():
    hostile = "x'; Remove-Item C:\\ -Recurse; '"
    script = ws.build_probe_script(services=[hostile], data_paths=["D:\\it's"])
    param_line = script.splitlines()[1]
    # The only single quotes left undoubled are the literal's own two.
    assert param_line.startswith("$crParams = ConvertFrom-Json '") and param_line.endswith("'")
    assert "'" not in param_line[len("$crParams = ConvertFrom-Json '"):-1].replace("''", "")
    assert ws.extract_probe_params(script) == {"services": [hostile], "paths": ["D:\\it's"]}


def test_other_scripts_have_no_probe_parameters():
    assert ws.extract_probe_params("Get-Service MDaemon") is None


def test_parse_a_report():
    report = ws.parse_probe_output(report_json() + "\r\n")
    assert report.clock_s == 1_700_000_000.0 and report.boot_s == 1_699_990_000
    assert report.services == {"MDaemon": "Running"}
    assert report.volumes == (ws.VolumeReport("D:\\MDaemon", "D:\\", 5 << 30, 10 << 30, None),)


def test_parse_accepts_powershell_51_unwrapping_a_one_element_array():
    text = report_json(services={"name": "MDaemon", "status": "Stopped"}, volumes=None)
    report = ws.parse_probe_output("\ufeff" + text)
    assert report.services == {"MDaemon": "Stopped"} and report.volumes == ()


@pytest.mark.parametrize("text, message", [
    ("", "probe output is not JSON: '(empty)'"),
    ("Get-Service : garbled <<<", "probe output is not JSON: 'Get-Service : garbled <<<'"),
    ('{"v": 2}', "probe output is not a version 1 probe report"),
    ('[1, 2]', "probe output is not a version 1 probe report"),
    (json.dumps({"v": 1, "boot_s": 1}), "probe output has no number 'clock_ms'"),
    (report_json(services=[{"status": "Running"}]), "malformed service entry"),
    (report_json(volumes=["D:"]), "malformed volume entry"),
])
def test_parse_rejects_what_the_script_does_not_print(text, message):
    with pytest.raises(ws.ProbeOutputError, match=None) as info:
        ws.parse_probe_output(text)
    assert message in str(info.value)


def observe(report_text: str, *, services=("MDaemon",), local_clock_s=1_700_000_000.0):
    return {o.subject: o for o in observations_from_report(
        host="win1", report=ws.parse_probe_output(report_text), services=list(services), at=1.0,
        latency_s=0.01, local_clock_s=local_clock_s)}


def test_healthy_report_is_ok_with_details():
    obs = observe(report_json())
    assert obs["host"].health is Health.OK and obs["host"].error is None
    assert obs["host"].detail == {"boot_time": 1_699_990_000.0, "remote_now": 1_700_000_000.0,
                                  "clock_skew_s": 0.0, "free_bytes": {"D:\\MDaemon": 5 << 30}}
    assert obs["service:MDaemon"].health is Health.OK


@pytest.mark.parametrize("volumes, local_clock, expected_error", [
    ([{"path": "D:\\x", "root": "D:\\", "free": MIN_FREE_BYTES - 1, "size": 1 << 40}], 1_700_000_000.0,
     f"low free space on: D:\\x (< {MIN_FREE_BYTES} bytes)"),
    ([{"path": "E:\\x", "root": "E:\\", "free": None, "size": None, "error": "no drive"}], 1_700_000_000.0,
     "data volume not available: E:\\x (no drive)"),
    ([], 1_700_000_400.0, "clock is -400s off (more than 300s)"),
])
def test_degraded_host(volumes, local_clock, expected_error):
    obs = observe(report_json(volumes=volumes), local_clock_s=local_clock)
    assert obs["host"].health is Health.DEGRADED
    assert obs["host"].error == expected_error


@pytest.mark.parametrize("status, health, error", [
    ("Running", Health.OK, None),
    ("Stopped", Health.DOWN, "service is Stopped"),
    ("StartPending", Health.DEGRADED, "service is StartPending"),
    ("NotFound", Health.DOWN, "service is not installed"),
])
def test_service_states(status, health, error):
    obs = observe(report_json(services=[{"name": "MDaemon", "status": status}]))
    assert (obs["service:MDaemon"].health, obs["service:MDaemon"].error) == (health, error)


def test_service_missing_from_the_report_is_unreachable():
    obs = observe(report_json(services=[]), services=["MDaemon"])
    assert obs["service:MDaemon"].health is Health.UNREACHABLE
