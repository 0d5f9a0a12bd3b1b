"""The lease renewal of a Windows host at the protocol level: real pywinrm against the
WS-Man simulator (the PowerShell is checked by the grammar in tests/unit)."""

from __future__ import annotations

from cr_orchestrator.act.lease import send_renewal
from cr_orchestrator.testworld.wsman_sim import Reply
from winrm_testlib import PASSWORD


def test_a_renewal_is_one_powershell_command_and_its_answer_is_read(sim, make_settings,
                                                                       make_host):
    sim.register(r"mail\.lease", Reply(stdout="renewed 812.5 agent 4242 0.3\r\n"))
    renewal = send_renewal(host=make_host(make_settings(sim)), cluster="mail", epoch=7,
                           ttl_s=3.8, paused=False, deadline_s=5.0)
    assert (renewal.renewed, renewal.agent_up) == (True, True), renewal.detail
    assert "pid 4242" in renewal.detail
    script = sim.commands[-1].script
    # the line the agent reads: epoch, the host's own clock, ttl, not paused
    assert "TickCount64" in script and "'7 {0} 3.8 0' -f" in script
    assert "Move-Item -Force" in script  # written whole


def test_an_agent_reported_down_and_a_paused_renewal(sim, make_settings, make_host):
    sim.register(r"mail\.lease", Reply(stdout="renewed 812.5 agent-down its process 4242 is gone\r\n"))
    renewal = send_renewal(host=make_host(make_settings(sim)), cluster="mail", epoch=7,
                           ttl_s=3.8, paused=True, deadline_s=5.0)
    assert (renewal.renewed, renewal.agent_up) == (True, False)
    assert "its process 4242 is gone" in renewal.detail
    assert "'7 {0} 3.8 1' -f" in sim.commands[-1].script


def test_a_failed_renewal_is_a_value_without_the_password(sim, make_settings, make_host,
                                                           free_port):
    sim.register(r"mail\.lease", Reply(stderr="Access to the path is denied.", rc=1))
    failed = send_renewal(host=make_host(make_settings(sim)), cluster="mail", epoch=7,
                          ttl_s=3.8, paused=False, deadline_s=5.0)
    assert (failed.renewed, failed.agent_up) == (False, None), failed.detail
    nobody = send_renewal(host=make_host(make_settings(sim, port=free_port)), cluster="mail",
                          epoch=7, ttl_s=3.8, paused=False, deadline_s=2.0)
    assert (nobody.renewed, nobody.agent_up) == (False, None)
    assert "renewal not written" in nobody.detail
    assert PASSWORD not in failed.detail + nobody.detail
