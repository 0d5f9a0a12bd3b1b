"""The Windows host probe, end to end: real pywinrm → real HTTP → the WS-Man simulator.

Each failure a Windows host can show comes back as a clear value, never an exception or a
hang. What the probe sees is what an operator would see in `crctl status`.
"""

from __future__ import annotations

import time

import pytest

from cr_orchestrator.observe.health import Health
from cr_orchestrator.observe.windows_host import probe_windows_host
from cr_orchestrator.remote.winrm import WinRMShell, WinRMShellPool
from cr_orchestrator.testworld.wsman_sim import Reply

from winrm_testlib import PASSWORD

SERVICES = ["MDaemon", "W3SVC"]
PATHS = ["D:\\MDaemon", "C:\\inetpub"]


def by_subject(observations):
    return {o.subject: o for o in observations}


def probe(host, *, timeout_s=3.0, pool=None, services=SERVICES, paths=PATHS):
    return by_subject(probe_windows_host(host=host, services=services, data_paths=paths, timeout_s=timeout_s,
                                         pool=pool or WinRMShellPool()))


def assert_all_unreachable(obs, fragment):
    assert set(obs) == {"host", "service:MDaemon", "service:W3SVC"}
    for o in obs.values():
        assert o.health is Health.UNREACHABLE, o
        assert fragment in o.error, o.error
        assert PASSWORD not in o.error


def test_healthy_host_reports_services_boot_time_clock_and_free_space(sim, make_settings, make_host):
    sim.state.boot_time = time.time() - 3600
    obs = probe(make_host(make_settings(sim)))
    host = obs["host"]
    assert host.health is Health.OK and host.error is None
    assert abs(host.detail["boot_time"] - sim.state.boot_time) < 1.5
    assert abs(host.detail["clock_skew_s"]) < 1.0
    assert host.detail["free_bytes"] == {"D:\\MDaemon": 200 << 30, "C:\\inetpub": 40 << 30}
    assert obs["service:MDaemon"].health is Health.OK
    assert obs["service:W3SVC"].health is Health.OK
    # The host ran the generated PowerShell (decoded on the server side), not something else.
    assert sim.commands[-1].script.startswith("# cr-orchestrator windows host probe v1")


def test_stopped_service_is_down_while_host_stays_ok(sim, make_settings, make_host):
    sim.state.services["MDaemon"] = "Stopped"
    obs = probe(make_host(make_settings(sim)))
    assert obs["host"].health is Health.OK
    assert obs["service:MDaemon"].health is Health.DOWN
    assert obs["service:MDaemon"].error == "service is Stopped"
    assert obs["service:W3SVC"].health is Health.OK


def test_low_disk_and_clock_skew_degrade_the_host(sim, make_settings, make_host):
    sim.state.volumes["D:\\"] = {"free": 10 << 20, "size": 500 << 30}
    sim.state.clock_offset_s = 900
    obs = probe(make_host(make_settings(sim)))
    assert obs["host"].health is Health.DEGRADED
    assert "low free space on: D:\\MDaemon" in obs["host"].error
    assert "clock is +900s off" in obs["host"].error


def test_hung_command_returns_within_the_deadline_and_is_signalled(sim, make_settings, make_host):
    sim.state.hang_commands = True
    started = time.monotonic()
    obs = probe(make_host(make_settings(sim)), timeout_s=1.5)
    elapsed = time.monotonic() - started
    assert_all_unreachable(obs, "did not finish within 1.5s")
    # The deadline, the Signal's 1 s budget and slack for a loaded machine: not pywinrm's endless retry.
    assert elapsed < 1.5 + 1.0 + 2.0, elapsed
    assert "Receive" in sim.host.requests and sim.host.requests[-1] == "Signal"


def test_slow_server_times_out_instead_of_hanging(sim, make_settings, make_host):
    sim.state.reply_delay_s = 8.0
    started = time.monotonic()
    obs = probe(make_host(make_settings(sim)), timeout_s=1.0)
    assert time.monotonic() - started < 5.0  # gave up long before the server answered
    assert_all_unreachable(obs, "before the deadline")


def test_wrong_password_is_an_authentication_error_without_the_password(sim, make_settings, make_host):
    obs = probe(make_host(make_settings(sim, password="wrong-" + PASSWORD)))
    assert_all_unreachable(obs, f"authentication failed for user Administrator at {sim.endpoint}")
    assert sim.auth_failures >= 1


def test_wrong_password_over_ntlm_is_an_authentication_error(sim, make_settings, make_host):
    obs = probe(make_host(make_settings(sim, transport="ntlm", password="nope")))
    assert_all_unreachable(obs, "authentication failed for user Administrator")


def test_wsman_fault_is_reported_with_code_and_reason(sim, make_settings, make_host):
    sim.register("windows host probe", Reply(fault_code=5, fault_reason="Access is denied."))
    obs = probe(make_host(make_settings(sim)))
    assert_all_unreachable(obs, "WS-Man fault 5")
    assert "Access is denied." in obs["host"].error


def test_connection_refused(make_settings, make_host, free_port):
    obs = probe(make_host(make_settings(port=free_port, https=False)))
    assert_all_unreachable(obs, "connection refused by http://127.0.0.1:")


def test_garbage_output_is_unreachable_with_a_clear_error(sim, make_settings, make_host):
    sim.state.garbage_output = True
    obs = probe(make_host(make_settings(sim)))
    assert_all_unreachable(obs, "probe output is not JSON: ")


def test_failing_script_reports_its_exit_code_and_first_error_line(sim, make_settings, make_host):
    sim.register("windows host probe", Reply(stderr="Get-CimInstance : Access denied\nmore\n", rc=1))
    obs = probe(make_host(make_settings(sim)))
    assert_all_unreachable(obs, "probe script exited 1: Get-CimInstance : Access denied")


def test_ntlm_with_message_encryption_over_http(sim, make_settings, make_host):
    obs = probe(make_host(make_settings(sim, transport="ntlm")))
    assert obs["host"].health is Health.OK
    assert obs["service:MDaemon"].health is Health.OK


def test_tls_validation_on_rejects_the_self_signed_certificate(https_sim, make_settings, make_host):
    obs = probe(make_host(make_settings(https_sim, validate=True)))
    assert_all_unreachable(obs, "TLS certificate verification failed for https://127.0.0.1:")


def test_tls_validation_on_with_the_ca_trusted(https_sim, make_settings, make_host):
    obs = probe(make_host(make_settings(https_sim, validate=True, ca=https_sim.ca_cert_path)))
    assert obs["host"].health is Health.OK


def test_tls_validation_off_and_ntlm_over_https(https_sim, make_settings, make_host):
    obs = probe(make_host(make_settings(https_sim, validate=False, transport="ntlm")))
    assert obs["host"].health is Health.OK
    assert obs["service:W3SVC"].health is Health.OK


def test_pool_reuses_one_shell_and_reopens_it_when_the_server_drops_it(sim, make_settings, make_host):
    pool = WinRMShellPool()
    host = make_host(make_settings(sim))
    for _ in range(3):
        assert probe(host, pool=pool)["host"].health is Health.OK
    assert sim.host.requests.count("Create") == 1
    assert sim.host.requests.count("Command") == 3
    sim.host.drop_shells()  # the WinRM service restarted: our ShellId is unknown now
    assert probe(host, pool=pool)["host"].health is Health.OK
    assert sim.host.requests.count("Create") == 2
    pool.close_all()
    assert sim.host.requests[-1] == "Delete" and sim.host.open_shells == 0


def test_scripted_sequence_and_command_log_for_other_helpers(sim, make_settings):
    """The replication helper scripts VSS → robocopy → shadow delete like this."""
    sim.register(r"Win32_ShadowCopy.*Create", Reply(stdout='{"ShadowID":"{ABC}","ReturnValue":0}\n'))
    sim.register(r"^robocopy", [Reply(stdout="copied 3\n", rc=1), Reply(stdout="nothing\n", rc=0)])
    with WinRMShell(address="127.0.0.1", settings=make_settings(sim)) as shell:
        shadow = shell.run_ps("(Get-WmiObject -List Win32_ShadowCopy).Create('D:\\', 'ClientAccessible')",
                              deadline_s=3)
        first = shell.run_cmd("robocopy", ["D:\\data", "\\\\dr\\data", "/MIR"], deadline_s=3)
        second = shell.run_cmd("robocopy", ["D:\\data", "\\\\dr\\data", "/MIR"], deadline_s=3)
    assert shadow.ok and '"ShadowID":"{ABC}"' in shadow.stdout
    assert (first.rc, first.stdout, second.rc) == (1, "copied 3\r\n", 0)
    assert [c.text.split()[0] for c in sim.commands] == ["(Get-WmiObject", "robocopy", "robocopy"]
    assert sim.commands[1].arguments == ("D:\\data \\\\dr\\data /MIR",)  # pywinrm joins arguments


@pytest.mark.parametrize("transport", ["basic", "ntlm"])
def test_shell_output_stderr_and_exit_code(sim, make_settings, transport):
    sim.register("Write-Both", Reply(stdout="out ünïcode\n", stderr="err\n", rc=7))
    with WinRMShell(address="127.0.0.1", settings=make_settings(sim, transport=transport)) as shell:
        result = shell.run_ps("Write-Both", deadline_s=3)
    assert (result.rc, result.stdout, result.stderr, result.error) == (7, "out ünïcode\r\n", "err\r\n", None)


def test_output_arriving_over_several_receives_is_joined(sim, make_settings):
    sim.register("^robocopy", Reply(progress="  10%\n", stdout="  100%\n", rc=1, delay_s=0.3))
    with WinRMShell(address="127.0.0.1", settings=make_settings(sim)) as shell:
        result = shell.run_cmd("robocopy", ["a", "b"], deadline_s=5)
    assert (result.rc, result.stdout, result.error) == (1, "  10%\r\n  100%\r\n", None)
    assert sim.host.requests.count("Receive") >= 2
