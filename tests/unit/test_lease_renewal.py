"""The lease renewal as a host runs it: the Linux script under a real sh in a scratch
directory (with a real agent-like process), the PowerShell twin under the grammar, the
answer's parsing, and who gets a renewal."""

from __future__ import annotations

import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from cr_orchestrator.act.lease import (
    linux_renewal_script, parse_answer, windows_renewal_script,
)
from cr_orchestrator.decide.lease import renewal_target
from cr_orchestrator.observe.health import Liveness
from test_decide import healthy, primary_down, with_member
from test_powershell_grammar import assert_parses


def run_renewal(directory: Path, *, paused: bool = False) -> str:
    script = linux_renewal_script(cluster="mail", epoch=7, ttl_s=4.3, paused=paused,
                                  directory=str(directory))
    done = subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True,
                          timeout=10, check=True)
    return done.stdout


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


@pytest.fixture
def agent_like(tmp_path):
    """A process whose command line names cr-lease-agent, as the role's agent's does."""
    script = tmp_path / "cr-lease-agent-mail.sh"
    script.write_text("sleep 30\n")
    proc = subprocess.Popen(["sh", str(script)])
    yield proc
    proc.kill()
    proc.wait()


def test_the_lease_is_written_with_the_hosts_own_clock(tmp_path):
    before = uptime()
    answer = run_renewal(tmp_path / "state")
    epoch, renewed, ttl, paused = (tmp_path / "state" / "mail.lease").read_text().split()
    assert (epoch, ttl, paused) == ("7", "4.3", "0")
    assert before <= float(renewed) <= uptime()
    assert not list((tmp_path / "state").glob("*.new"))  # written whole (rename)
    renewal = parse_answer("mail-a", answer)
    # no agent record: none installed here (nothing to report down, nothing to restart)
    assert (renewal.renewed, renewal.agent_up) == (True, None)
    assert "no lease agent installed" in renewal.detail


def test_a_paused_renewal_says_so(tmp_path):
    run_renewal(tmp_path, paused=True)
    assert (tmp_path / "mail.lease").read_text().split()[3] == "1"


def test_two_writers_of_one_lease_at_once_both_succeed(tmp_path):
    """A promotion's first lease (cr_fence) and a round's renewal can land together: with
    one shared file aside, one writer's mv found it moved by the other (a switchover
    failed on that in CI). Two loops of renewals at once: none fails."""
    script = linux_renewal_script(cluster="mail", epoch=7, ttl_s=4.3, paused=False,
                                  directory=str(tmp_path))
    (tmp_path / "renew.sh").write_text(script)
    loop = (f"i=0; fails=0; while [ $i -lt 150 ]; do sh {tmp_path}/renew.sh >/dev/null "
            "2>&1 || fails=$((fails + 1)); i=$((i + 1)); done; echo $fails")
    loops = [subprocess.Popen(["sh", "-c", loop], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    assert [p.communicate(timeout=60)[0].strip() for p in loops] == ["0", "0"]
    assert (tmp_path / "mail.lease").read_text().split()[0] == "7"
    assert not list(tmp_path.glob("mail.lease.new*"))


def test_a_live_agent_that_checked_lately_is_up(tmp_path, agent_like):
    (tmp_path / "mail.lease-agent").write_text(f"{agent_like.pid} {uptime()}\n")
    renewal = parse_answer("mail-a", run_renewal(tmp_path))
    assert renewal.agent_up is True, renewal.detail
    assert f"pid {agent_like.pid}" in renewal.detail


def test_an_agent_that_stopped_checking_is_down(tmp_path, agent_like):
    (tmp_path / "mail.lease-agent").write_text(f"{agent_like.pid} {uptime() - 9}\n")
    renewal = parse_answer("mail-a", run_renewal(tmp_path))
    assert renewal.agent_up is False
    assert "last check was 9" in renewal.detail


def test_an_agent_whose_process_is_gone_is_down(tmp_path, agent_like):
    (tmp_path / "mail.lease-agent").write_text(f"{agent_like.pid} {uptime()}\n")
    agent_like.kill()
    agent_like.wait()
    time.sleep(0.05)
    renewal = parse_answer("mail-a", run_renewal(tmp_path))
    assert renewal.agent_up is False
    assert f"process {agent_like.pid} is gone" in renewal.detail


@pytest.mark.parametrize("directory", [r"C:\ProgramData\cr-orchestrator",
                                       r"D:\O'Brien's data\cr $x"])
@pytest.mark.parametrize("paused", [False, True])
def test_the_windows_renewal_parses(directory, paused):
    assert_parses(f"lease-renewal[{directory}, paused={paused}]", windows_renewal_script(
        cluster="mail", epoch=7, ttl_s=4.3, paused=paused, directory=directory))


@pytest.mark.parametrize("text,renewed,up", [
    ("renewed 812.33 agent 4242 0.2\n", True, True),
    ("noise\nrenewed 812.33 agent-down its process 4242 is gone\n", True, False),
    ("renewed 812.33 agent-none\n", True, None),
    ("", False, None),
    ("Permission denied", False, None),
])
def test_answers(text, renewed, up):
    renewal = parse_answer("mail-a", text)
    assert (renewal.renewed, renewal.agent_up) == (renewed, up)


def test_only_a_primary_the_orchestrator_reaches_is_renewed():
    assert renewal_target(healthy()) == "mail-a"
    suspect = with_member(healthy(), "mail-a", host_liveness=Liveness.SUSPECT, failures=1)
    assert renewal_target(suspect) is None  # the round that first misses it stops renewing
    assert renewal_target(primary_down()) is None
    assert renewal_target(with_member(healthy(), "mail-a", observer_cut_off=True)) is None
    assert renewal_target(replace(healthy(), observer_isolated=True)) is None
    # a reachable primary whose service is down keeps its lease: a restart or the
    # failover's playbook stops or starts it, not its agent
    assert renewal_target(with_member(healthy(), "mail-a", service_liveness=Liveness.DOWN)) \
        == "mail-a"
