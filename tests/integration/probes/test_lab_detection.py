"""The detector fed by real probe rounds against the lab, under the lab's faults.

Every test counts probe ROUNDS, not seconds: a round is one ``probe_cluster`` call (host
probes over SSH, protocol checks, peer checks from mail-b and mail-dr), rounds start one
``probe_interval_s`` apart (or right after the previous one when it overran).
"""

from __future__ import annotations

import time

import pytest

from cr_orchestrator.decide.detector import Assessment, assess
from cr_orchestrator.observe.health import Liveness
from cr_orchestrator.inventory import load_topology
from cr_orchestrator.model import Policy
from cr_orchestrator.observe.round import probe_cluster

pytestmark = pytest.mark.lab

POLICY = Policy(probe_interval_s=1.0, probe_timeout_s=1.5, failures_before_down=3,
                successes_before_up=2, required_vantages=2)
PRIMARY = "mail-a"


class Monitor:
    """Probe rounds in a row, keeping the window the detector reads."""

    def __init__(self, lab):
        self.topology = load_topology(lab.inventory_path)
        self.cluster = self.topology.cluster("mail")
        self.observations = []
        self.last_start = 0.0

    def round(self) -> Assessment:
        wait = self.last_start + POLICY.probe_interval_s - time.time()
        if wait > 0:
            time.sleep(wait)
        self.last_start = time.time()
        self.observations += probe_cluster(topology=self.topology, cluster=self.cluster,
                                           primary=PRIMARY, timeout_s=POLICY.probe_timeout_s)
        return assess(cluster=self.cluster, observations=self.observations, now=time.time(),
                      policy=POLICY)

    def until_up(self, max_rounds: int = 6) -> Assessment:
        for _ in range(max_rounds):
            result = self.round()
            a = result.hosts[PRIMARY]
            if a.machine.liveness is Liveness.UP and a.service.liveness is Liveness.UP:
                return result
        pytest.fail(f"{PRIMARY} never came up: {a.machine.reason}; {a.service.reason}")


@pytest.fixture
def monitor(lab):
    # a crash earlier in the session leaves the primary's service stopped (manual start)
    lab.run_on(PRIMARY, [lab.mailctl, "start"], check=True)
    m = Monitor(lab)
    m.until_up()
    return m


def test_crash_is_down_after_the_configured_number_of_rounds(lab, monitor):
    lab.fail(PRIMARY, "crash")
    verdicts = [monitor.round().hosts[PRIMARY] for _ in range(POLICY.failures_before_down + 1)]
    states = [v.machine.liveness for v in verdicts]
    # Down exactly when the threshold is reached, not before; confirmed by the peers.
    assert states[:POLICY.failures_before_down - 1] == [Liveness.SUSPECT] * (
        POLICY.failures_before_down - 1), [v.machine.reason for v in verdicts]
    assert states[POLICY.failures_before_down - 1] is Liveness.DOWN, verdicts[-1].machine.reason
    down = verdicts[POLICY.failures_before_down - 1].machine
    assert down.confirmed, down.reason
    assert verdicts[-1].service.liveness is Liveness.DOWN


def test_two_second_freeze_is_never_down(lab, monitor):
    lab.fail(PRIMARY, "freeze", for_s=2)
    # the first round starts now: its checks (1.5 s timeout) end inside the freeze; one
    # starting later could get its answer when the host thaws and see nothing at all
    monitor.last_start = 0.0
    seen = []
    for _ in range(6):
        host = monitor.round().hosts[PRIMARY]
        seen.append((host.machine.liveness, host.service.liveness))
    assert all(Liveness.DOWN not in pair for pair in seen), seen
    assert Liveness.SUSPECT in {s for pair in seen for s in pair}, (
        f"the freeze was not even noticed: {seen}")
    assert seen[-1] == (Liveness.UP, Liveness.UP), seen


def test_stopped_service_is_service_down_host_up(lab, monitor):
    lab.fail(PRIMARY, "service")
    for _ in range(POLICY.failures_before_down):
        result = monitor.round()
    host = result.hosts[PRIMARY]
    assert host.machine.liveness is Liveness.UP, host.machine.reason
    service = host.services["mail"]
    assert service.liveness is Liveness.DOWN, service.reason
    assert service.confirmed, service.reason


def test_isolated_orchestrator_does_not_declare_the_primary_down(lab, monitor):
    lab.fail(PRIMARY, "isolate")
    for _ in range(POLICY.failures_before_down + 1):
        result = monitor.round()
        host = result.hosts[PRIMARY]
        assert host.machine.liveness is not Liveness.DOWN, host.machine.reason
        assert host.service.liveness is not Liveness.DOWN, host.service.reason
    assert host.machine.liveness is Liveness.UP and host.machine.observer_cut_off, (
        host.machine.reason)
    assert "orchestrator is cut off" in host.machine.reason
    assert not result.observer_isolated  # it still sees mail-b and mail-dr
    assert result.hosts["mail-b"].machine.liveness is Liveness.UP


def test_orchestrator_cut_off_from_everyone_judges_nobody(lab, monitor):
    for host in ("mail-a", "mail-b", "mail-dr"):
        lab.fail(host, "isolate")
    for _ in range(POLICY.failures_before_down + 1):
        result = monitor.round()
        assert all(a.machine.liveness is not Liveness.DOWN for a in result.hosts.values()), (
            [a.machine.reason for a in result.hosts.values()])
    assert result.observer_isolated, result.reason
    assert all(a.machine.liveness is Liveness.UNKNOWN for a in result.hosts.values())
    assert "observer isolated" in result.hosts[PRIMARY].machine.reason


def test_a_cold_probe_of_a_crashed_host_gives_up_within_the_probe_timeout(lab):
    # ssh's ConnectTimeout counts whole seconds: without the TCP look first, every round
    # after a crash (the master closes with the host's sshd) lasted a second at least
    import shutil
    import tempfile
    from pathlib import Path

    from cr_orchestrator.observe.linux_host import probe_linux_host

    cold = Path(tempfile.mkdtemp(prefix="crcp-", dir="/tmp"))  # a socket path < 108 bytes
    topology = load_topology(lab.inventory_path)
    services = list(topology.cluster("mail").services)
    lab.fail(PRIMARY, "crash")
    try:
        started = time.monotonic()
        obs = probe_linux_host(host=topology.hosts[PRIMARY], services=services, data_paths=[],
                               timeout_s=0.3, control_dir=cold)
        took = time.monotonic() - started
    finally:
        lab.heal(PRIMARY)
    host = next(o for o in obs if o.subject == "host")
    assert host.health.value == "unreachable", host
    assert host.error.startswith("ssh: "), host.error
    assert took < 0.8, (took, host.error)
    # a live host with a cold master still gets the allowance and answers
    live = probe_linux_host(host=topology.hosts["mail-b"], services=services, data_paths=[],
                            timeout_s=0.3, control_dir=cold)
    shutil.rmtree(cold, ignore_errors=True)
    assert next(o for o in live if o.subject == "host").health.value == "ok", live
