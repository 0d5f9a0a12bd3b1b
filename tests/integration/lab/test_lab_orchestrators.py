"""`crctl lab up --orchestrators`: orch-a, orch-b and the witness run a real Redis Sentinel
quorum; whole-site faults do to it what losing or cutting off a site does.

The session lab grows its orchestrator nodes here; the last test takes it down (nothing
may be left) and brings the plain lab back for the tests after this file.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cr_orchestrator.testworld.lab import Lab
from cr_orchestrator.testworld.lab.netns import namespaces, ns_pids, pid_alive, root_links

from .helpers import tcp_from

pytestmark = pytest.mark.lab

NODES = ("orch-a", "orch-b", "witness")
CRCTL = str(Path(sys.executable).with_name("crctl"))


def _wait(predicate, timeout: float, what: str, *, every: float = 0.05) -> float:
    """Seconds until ``predicate`` held; fails the test naming ``what`` after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"timed out after {timeout} s: {what}"
        time.sleep(every)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def olab(lab):
    handle = Lab.up(name=lab.name, base=lab.plan.base, orchestrators=True)
    handle.move_redis_master("orch-a")  # a lab kept from an earlier run may have moved it
    yield handle
    if handle.faults():  # a test that failed half-way
        handle.heal()


def _roles(olab) -> dict[str, str]:
    return {n: olab.redis_role(n) for n in NODES}


def test_the_sentinels_agree_on_orch_a_and_its_replicas_take_no_writes(olab):
    assert olab.sentinel_views() == {n: "orch-a" for n in NODES}
    assert _roles(olab) == {"orch-a": "master", "orch-b": "slave", "witness": "slave"}
    assert olab.redis_write_refusal("orch-a") is None
    assert "READONLY" in (olab.redis_write_refusal("orch-b") or "")
    assert len(olab.sentinels) == 3 and all(s.endswith(":26379") for s in olab.sentinels)
    # the witness sits on its own segment, reached from both sites through the router
    witness_net = ipaddress.ip_network(olab.plan.net("wit").network)
    assert ipaddress.ip_address(olab.quorum_address("witness")) in witness_net
    assert tcp_from(olab, "orch-a", olab.quorum_address("witness"), 26379)
    assert tcp_from(olab, "orch-b", olab.quorum_address("witness"), 26379)
    shown = subprocess.run([CRCTL, "lab", "orch", "master", "--name", olab.name],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "majority: orch-a" in shown.stdout, shown.stderr


def test_killing_the_master_makes_orch_b_master_within_seconds(olab):
    killed = olab.kill_redis_master()
    assert killed == "orch-a"
    took = _wait(lambda: olab.redis_master() == "orch-b"
                 and olab.redis_write_refusal("orch-b") is None, 30,
                 "orch-b to become a master that takes writes")
    print(f"Sentinel failover after a master crash: orch-b takes writes {took:.2f} s after "
          "the kill")
    olab.start_redis("orch-a")
    # it comes back believing it is master, refusing writes (no replica); Sentinel demotes it
    _wait(lambda: olab.redis_role("orch-a") == "slave", 40, "orch-a to rejoin as replica",
          every=0.2)
    assert olab.sentinel_views() == {n: "orch-b" for n in NODES}


def test_an_isolated_site_a_stops_taking_writes_while_site_b_promotes(olab):
    olab.move_redis_master("orch-a")
    started = time.monotonic()
    olab.fail("site-a", "isolate")
    # cut off at the router: site-a's nodes still talk among themselves, not across
    assert tcp_from(olab, "orch-a", olab.hosts["mail-a"].cluster, 22)
    assert not tcp_from(olab, "orch-a", olab.hosts["mail-dr"].cluster, 22)
    assert not tcp_from(olab, "client-b", olab.hosts["mail-a"].public, 22)
    assert tcp_from(olab, "client-b", olab.dns_server, 53)  # the outside world's DNS
    _wait(lambda: "NOREPLICAS" in (olab.redis_write_refusal("orch-a") or ""), 20,
          "orch-a's master to refuse writes (min-replicas-to-write)")
    refused = time.monotonic() - started
    _wait(lambda: olab.redis_role("orch-b") == "master"
          and olab.redis_write_refusal("orch-b") is None, 30, "site-b's side to promote orch-b")
    promoted = time.monotonic() - started
    print(f"isolated site-a: orch-a refuses writes within {refused:.2f} s, orch-b is a "
          f"master taking writes within {promoted:.2f} s (both upper bounds)")
    views = olab.sentinel_views()
    assert (views["orch-b"], views["witness"]) == ("orch-b", "orch-b")
    assert views["orch-a"] == "orch-a"  # alone, it cannot fail over: no majority
    assert olab.faults()["site-a"].keys() == {"isolate"}

    olab.heal("site-a")
    assert "site-a" not in olab.faults()
    _wait(lambda: olab.redis_role("orch-a") == "slave", 40,
          "orch-a to become a replica of orch-b after the heal", every=0.2)
    assert olab.sentinel_views() == {n: "orch-b" for n in NODES}
    assert tcp_from(olab, "orch-a", olab.hosts["mail-dr"].cluster, 22)


def test_a_site_crash_takes_hosts_node_and_orchestrator_and_heal_brings_them_back(olab):
    olab.move_redis_master("orch-a")
    olab.start_orchestrator("orch-a", env={"CR_PREFIX": f"crlabt-{olab.name}"})
    try:
        _wait(lambda: olab.orchestrator_pid("orch-a", "worker")
              and olab.orchestrator_pid("orch-a", "beat"), 60, "crctl run's worker and beat",
              every=0.3)
        worker = olab.kill_orchestrator_child("orch-a", "worker")
        assert not pid_alive(worker)
        _wait(lambda: olab.orchestrator_pid("orch-a", "worker") not in (None, worker), 30,
              "crctl run to start its worker again", every=0.3)

        node_pids = ns_pids(olab.plan.quorum_node("orch-a").namespace)
        olab.fail("site-a", "crash")
        assert not [p for p in node_pids if pid_alive(p)]
        assert olab.orchestrator_pid("orch-a") is None
        ssh = subprocess.run(olab.ssh_argv("mail-a", "true"), capture_output=True, timeout=20)
        assert ssh.returncode != 0
        _wait(lambda: olab.redis_master() == "orch-b"
              and olab.redis_write_refusal("orch-b") is None, 30,
              "the witness and orch-b to promote orch-b")

        olab.heal("site-a")
        assert olab.orchestrator_pid("orch-a") is not None  # its service came back at boot
        ssh = subprocess.run(olab.ssh_argv("mail-a", "hostname"), capture_output=True,
                             text=True, timeout=20)
        assert ssh.stdout.strip() == "mail-a"
        _wait(lambda: olab.redis_role("orch-a") == "slave", 40, "orch-a to rejoin as replica",
              every=0.2)
    finally:
        olab.stop_orchestrator("orch-a")
    left = set(ns_pids(olab.plan.quorum_node("orch-a").namespace))
    assert left == {olab.pid("redis:orch-a"), olab.pid("sentinel:orch-a")}
    # the as-built mail service: a crashed primary's comes back stopped (manual start)
    olab.run_on("mail-a", [olab.mailctl, "start"], check=True)


def test_down_leaves_nothing_of_the_orchestrator_nodes(olab):
    pids = [p for k, p in olab.read_state()["pids"].items()
            if k.split(":")[0] in ("redis", "sentinel")]
    assert len(pids) == 6 and all(pid_alive(p) for p in pids)
    olab.down()
    assert namespaces(f"{olab.name}-") == []
    assert root_links(f"{olab.name}-") == []
    assert not [p for p in pids if pid_alive(p)]
    # the plain lab again, for the tests after this file
    again = Lab.up(name=olab.name, base=olab.plan.base)
    assert not again.plan.quorum_nodes()
