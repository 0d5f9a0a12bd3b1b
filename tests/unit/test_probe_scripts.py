"""Script and command generation of the SSH probe and the peer vantage, and their parsers."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from cr_orchestrator.observe.health import Health
from cr_orchestrator.model import (Check, CheckKind, Host, Platform, Service, ServiceControl,
                                   SshSettings)
from cr_orchestrator.observe import peer, linux_host
from cr_orchestrator.observe.protocol import CheckTarget, build_prelogin

HOST = Host("mail-a", "site-a", Platform.LINUX, "198.18.1.11", "198.18.1.11", "198.18.0.11",
            ssh=SshSettings("root", 2222, "/keys/lab key", "-o StrictHostKeyChecking=no"))
CONTROLLED = Service("mail", (Check(CheckKind.SMTP, 25),),
                     ServiceControl("/x start", "/x stop", "/opt/lab/mailctl 'mail-a' status"))
UNIT = Service("postfix; rm -rf /", (Check(CheckKind.SMTP, 25),))


def test_ssh_command_is_batch_multiplexed_and_bounded():
    argv = linux_host.build_ssh_command(host=HOST, control_dir=Path("/tmp/cr-ssh-0/pr"),
                                       connect_timeout_s=1.5, remote_command="sh -s")
    joined = " ".join(argv)
    for option in ("BatchMode=yes", "ConnectTimeout=2", "ControlMaster=auto",
                   "ControlPath=/tmp/cr-ssh-0/pr/%C", "ControlPersist=60"):
        assert option in joined
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "root"
    assert argv[argv.index("-i") + 1] == "/keys/lab key"  # one argument, spaces kept
    assert "StrictHostKeyChecking=no" in argv and "StrictHostKeyChecking=accept-new" not in argv
    assert argv[-2:] == ["198.18.1.11", "sh -s"]


def test_ssh_command_without_settings_is_refused():
    bare = Host("w", "s", Platform.WINDOWS, "a", "a", "a")
    with pytest.raises(ValueError, match="w has no SSH settings"):
        linux_host.build_ssh_command(host=bare, control_dir=Path("/tmp"), connect_timeout_s=1,
                                    remote_command="true")


def test_host_script_quotes_names_and_paths():
    script = linux_host.build_host_script(services=[CONTROLLED, UNIT],
                                         data_paths=["/srv/mail", "/srv/it's here"])
    assert "sh -c '/opt/lab/mailctl '\"'\"'mail-a'\"'\"' status'" in script
    assert "systemctl is-active 'postfix; rm -rf /'" in script
    assert "df -P -k '/srv/it'\"'\"'s here'" in script


def test_host_script_runs_and_reports_json(tmp_path):
    ok = Service("good", (), ServiceControl("true", "true", "exit 0"))
    stopped = Service("bad", (), ServiceControl("true", "true", "exit 3"))
    script = linux_host.build_host_script(services=[ok, stopped],
                                         data_paths=[str(tmp_path), "/no/such/path"])
    out = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, timeout=10)
    report = linux_host.parse_report(out.stdout)
    obs = linux_host.observations_from_report(host="h", report=report, services=[ok, stopped],
                                             at=1.0, latency_s=0.1)
    by_subject = {o.subject: o for o in obs}
    assert by_subject["service:good"].health is Health.OK
    assert by_subject["service:bad"].health is Health.DOWN
    assert by_subject["service:bad"].error == "status command exited 3"
    assert by_subject["host"].health is Health.DEGRADED
    assert "data path missing: /no/such/path" in by_subject["host"].error
    assert by_subject["host"].detail["free_bytes"][str(tmp_path)] > 0
    assert by_subject["host"].detail["boot_time"] > 0


@pytest.mark.parametrize("text,problem", [
    ("", "no JSON report"),
    ("Welcome to host\n", "no JSON report"),
    ('{"v":2,"services":{},"paths":{}}', "unexpected report"),
    ('{"v":1,"services":[],"paths":{}}', "no 'services' object"),
])
def test_bad_reports_are_refused(text, problem):
    with pytest.raises(ValueError, match=problem):
        linux_host.parse_report(text)


def test_run_ssh_deadline_kills_the_process_group():
    run = linux_host.run_ssh(argv=["sh", "-c", "sleep 30 & sleep 30"], deadline_s=0.3)
    assert run.timed_out and run.rc is None


TARGETS = [CheckTarget("mail-a", "198.18.0.11", Check(CheckKind.SMTP, 25), "mail"),
           CheckTarget("mail-a", "198.18.0.11", Check(CheckKind.HTTP, 80, path="/x"), "web"),
           CheckTarget("mail-a", "198.18.0.11", Check(CheckKind.SQL, 1433), "sql"),
           CheckTarget("mail-a", "198.18.0.11", Check(CheckKind.TCP, 3389), None)]


def test_linux_peer_script_runs_every_target_at_once_under_one_deadline():
    script = peer.build_linux_script(targets=TARGETS, timeout_s=0.9)
    assert script.count("timeout -k 1 0.90 bash -c") == 1
    assert script.count(") &") == 4 and script.count("wait") == 1
    # a check the deadline cut short is said timed out
    assert "for i in 0 1 2 3; do" in script and f"{peer.MARK} $i {peer.RC_TIMEOUT} 900" in script
    assert "/dev/tcp/198.18.0.11/25" in script and "/dev/tcp/198.18.0.11/1433" in script
    assert "\\x47\\x45\\x54\\x20\\x2f\\x78" in script  # "GET /x" sent byte for byte
    assert "\\x12\\x01" in script  # TDS PRELOGIN header


def test_linux_peer_script_sends_exact_bytes():
    script = peer.build_linux_script(targets=TARGETS[2:3], timeout_s=0.5)
    escaped = script.split("printf '\"'\"'")[1].split("'\"'\"'")[0]
    out = subprocess.run(["bash", "-c", f"printf '{escaped}'"], capture_output=True, timeout=5)
    assert out.stdout == build_prelogin()


def test_windows_peer_script_table_and_output_format():
    script = peer.build_windows_script(targets=TARGETS, timeout_s=1.2)
    prelogin = base64.b64encode(build_prelogin()).decode()
    assert "@(0, '198.18.0.11', 25, '', 'line')" in script
    assert f"@(2, '198.18.0.11', 1433, '{prelogin}', 'bytes')" in script
    assert "@(3, '198.18.0.11', 3389, '', 'none')" in script
    assert ".Wait(1200)" in script and "CRPEER {0} {1} {2} {3}" in script
    assert "__" not in script  # every placeholder filled


def test_windows_peer_script_escapes_quotes_in_addresses():
    odd = CheckTarget("h", "it's", Check(CheckKind.TCP, 1), None)
    assert "@(0, 'it''s', 1, '', 'none')" in peer.build_windows_script(targets=[odd],
                                                                        timeout_s=1)


def test_parse_answers_and_judge():
    greeting = base64.b64encode(b"220 mail-a ESMTP\r\n").decode()
    text = (f"noise\nCRPEER 0 0 12 {greeting}\nCRPEER 1 124 900 \nCRPEER 2 111 3 \n"
            "CRPEER x 0 1 AAA\nCRPEER 3 0 5 %%%notbase64\n")
    answers = peer.parse_answers(text)
    assert sorted(answers) == [0, 1, 2]
    smtp = peer.judge(target=TARGETS[0], answer=answers[0], peer="mail-b", at=5.0, timeout_s=1.0)
    assert (smtp.health, smtp.vantage, smtp.subject) == (Health.OK, "mail-b",
                                                         "check:smtp:25@198.18.0.11")
    late = peer.judge(target=TARGETS[1], answer=answers[1], peer="mail-b", at=5.0, timeout_s=1.0)
    assert late.health is Health.UNREACHABLE and "seen from mail-b" in late.error
    none = peer.judge(target=TARGETS[3], answer=None, peer="mail-b", at=5.0, timeout_s=1.0)
    assert none.subject == "vantage"  # says nothing about the target itself


def test_report_with_bad_values_is_unusable_not_a_crash():
    report = linux_host.parse_report('{"v":1,"services":{},"paths":{"/srv":"lots"}}')
    with pytest.raises(ValueError):
        linux_host.observations_from_report(host="h", report=report, services=[], at=1.0,
                                           latency_s=0.1)


def test_refused_from_a_peer_marks_the_host_as_answering():
    answer = peer.PeerAnswer(0, peer.RC_REFUSED, 0.01, b"")
    obs = peer.judge(target=TARGETS[0], answer=answer, peer="mail-b", at=1.0, timeout_s=1.0)
    assert obs.health is Health.UNREACHABLE and obs.detail["refused"] is True
    assert obs.error == "connection refused (seen from mail-b)"
