"""Each fault mode does what it says, and heal undoes it (one lab, faults healed in between)."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from cr_orchestrator.errors import ConfigError, LabError

from .helpers import banner, ping_loss, tcp_from, tcp_open

pytestmark = pytest.mark.lab

VICTIM = "mail-b"
PEER = "mail-a"


def _ssh_ok(lab, host: str) -> bool:
    proc = subprocess.run(lab.ssh_argv(host, "true"), capture_output=True, timeout=20)
    return proc.returncode == 0


def _smtp_ok(address: str) -> bool:
    return (banner(address, 25, timeout=1.5) or "").startswith("220")


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def victim(lab):
    """mail-b serving (a secondary does not serve by default), put back afterwards."""
    addrs = lab.hosts[VICTIM]
    lab.run_on(VICTIM, [lab.mailctl, "start"], check=True)
    assert _smtp_ok(addrs.public) and tcp_open(addrs.cluster, 22), "victim not healthy before"
    yield addrs
    lab.heal(VICTIM)
    lab.run_on(VICTIM, [lab.mailctl, "disable"], check=True)
    lab.run_on(VICTIM, [lab.mailctl, "stop"], check=True)


def test_crash_kills_ssh_and_smtp_and_heal_reboots_the_host(lab, victim):
    lab.fail(VICTIM, "crash")
    assert not _ssh_ok(lab, VICTIM)
    assert not tcp_open(victim.public, 25)
    row = next(r for r in lab.status()["hosts"] if r["host"] == VICTIM)
    assert row["addresses"] == [] and row["service"] == "down"
    lab.heal(VICTIM)
    assert _ssh_ok(lab, VICTIM)
    # start mode manual (the default, as for any cluster-managed service): after the
    # reboot the service stays stopped until the orchestrator starts it
    assert not _smtp_ok(victim.public)
    # after the reboot the host still sees its own data under /srv
    assert lab.run_on(VICTIM, "test -d /srv/mail/Maildir && hostname", check=True).stdout.strip() == VICTIM


def test_a_service_with_start_mode_automatic_comes_back_serving_after_a_crash(lab, victim):
    lab.run_on(VICTIM, [lab.mailctl, "enable"], check=True)
    lab.fail(VICTIM, "crash")
    assert not tcp_open(victim.public, 25)
    lab.heal(VICTIM)
    assert _smtp_ok(victim.public)


def test_link_cut_makes_the_host_unreachable_from_its_peers(lab, victim):
    assert tcp_from(lab, PEER, victim.cluster, 22)
    lab.fail(VICTIM, "link")
    assert not tcp_from(lab, PEER, victim.cluster, 22)
    assert not tcp_from(lab, "client", victim.public, 25)
    assert not tcp_open(victim.cluster, 22)
    lab.heal(VICTIM)
    assert _wait(lambda: tcp_from(lab, PEER, victim.cluster, 22))


def test_service_fault_stops_smtp_but_not_ssh(lab, victim):
    lab.fail(VICTIM, "service")
    assert _ssh_ok(lab, VICTIM)
    assert not tcp_open(victim.public, 25)
    assert lab.run_on(VICTIM, [lab.mailctl, "status"]).returncode != 0
    lab.heal(VICTIM)
    assert _smtp_ok(victim.public)


def test_freeze_stalls_connections_until_heal(lab, victim):
    lab.fail(VICTIM, "freeze")
    # the kernel still accepts the connection, but the frozen server never greets
    assert tcp_open(victim.public, 25)
    assert banner(victim.public, 25, timeout=1.0) is None
    stalled: list[str | None] = []
    waiter = threading.Thread(target=lambda: stalled.append(banner(victim.public, 25, timeout=8)))
    waiter.start()
    time.sleep(0.5)
    lab.heal(VICTIM)
    waiter.join()
    assert (stalled[0] or "").startswith("220"), "the stalled connection did not resume"
    assert _smtp_ok(victim.public)


def test_loss_drops_a_measurable_share_of_packets(lab, victim):
    assert ping_loss(lab, src=PEER, dst=victim.cluster, count=20) == 0.0
    lab.fail(VICTIM, "loss", loss_pct=50)
    assert ping_loss(lab, src=PEER, dst=victim.cluster) >= 10.0
    lab.heal(VICTIM)
    assert ping_loss(lab, src=PEER, dst=victim.cluster, count=20) == 0.0


def test_isolate_cuts_the_orchestrator_off_while_peers_still_reach_the_host(lab, victim):
    lab.fail(VICTIM, "isolate")
    assert not tcp_open(victim.cluster, 22, timeout=1.0)
    assert not tcp_open(victim.public, 25, timeout=1.0)
    assert tcp_from(lab, PEER, victim.cluster, 22)
    assert tcp_from(lab, "client", victim.public, 25)
    lab.heal(VICTIM)
    assert tcp_open(victim.cluster, 22)


def test_a_fault_given_for_seconds_heals_itself(lab, victim):
    lab.fail(VICTIM, "service", for_s=1)
    assert not tcp_open(victim.public, 25)
    assert _wait(lambda: _smtp_ok(victim.public), timeout=15)
    assert _wait(lambda: not lab.faults(), timeout=5)


def test_a_second_fault_of_the_same_mode_is_refused(lab, victim):
    lab.fail(VICTIM, "link")
    with pytest.raises(LabError, match="already has fault link"):
        lab.fail(VICTIM, "link")
    with pytest.raises(ConfigError, match="no host"):
        lab.fail("nosuch", "link")
