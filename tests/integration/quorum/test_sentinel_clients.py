"""The orchestrator's Redis clients through a real Sentinel failover (redis-server and
redis-sentinel from Debian, on loopback): the state client, WAIT on the writes that
matter, and the whole orchestrator (`crctl run`: Celery worker, RedBeat beat, probe rounds
recording decisions) carrying on on the new master."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from cr_orchestrator.state.cluster import ClusterState, NotReplicated, connect
from cr_orchestrator.testworld.clientwatch import wait_until
from cr_orchestrator.testworld.redis_quorum import LocalQuorum

from orchestration.conftest import UNREACHABLE_INVENTORY

CRCTL = str(Path(sys.executable).with_name("crctl"))


@pytest.fixture
def quorum(tmp_path_factory):
    base = 17300 + (uuid.uuid4().int % 40) * 5
    q = LocalQuorum(tmp_path_factory.mktemp("quorum"), base).start()
    yield q
    q.stop()


def _wait(predicate, timeout_s: float, what: str):
    return wait_until(what, predicate, timeout_s=timeout_s)


def test_state_follows_a_crashed_master_and_keeps_the_acknowledged_promotion(quorum):
    state = ClusterState(connect(quorum.url), prefix="q")
    assert state.min_acks == 1
    state.ensure(cluster="mail", configured_primary="mail-a")
    epoch = state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0)
    old = quorum.master_port()
    quorum.kill(old)
    started = time.monotonic()
    new = quorum.wait_for_new_master(old)
    # the same client object, no reconfiguration: it re-asks the sentinels
    assert (state.primary("mail"), state.epoch("mail")) == ("mail-b", epoch)
    assert state.promote(cluster="mail", new_primary="mail-a", expected_epoch=epoch) == epoch + 1
    print(f"\nSentinel failover {old} -> {new}; state client writing again after "
          f"{time.monotonic() - started:.1f} s")


def test_a_master_demoted_under_a_live_connection_is_left_on_its_readonly_answer(quorum):
    state = ClusterState(connect(quorum.url), prefix="q")
    state.ensure(cluster="mail", configured_primary="mail-a")
    old = quorum.master_port()
    # a graceful failover: the old master stays up and becomes a replica, so the
    # client's pooled connection to it answers READONLY to the next write
    subprocess.run(["redis-cli", "-p", str(quorum.sentinel_ports[0]), "SENTINEL", "FAILOVER",
                    "cr"], check=True, capture_output=True)
    new = quorum.wait_for_new_master(old)
    _wait(lambda: quorum.role(old) == "slave", 40, f"{old} to become a replica")
    assert state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0) == 1
    direct = redis.Redis(port=new)
    assert direct.hget(state.key("mail"), "primary") == b"mail-b"


def test_a_master_without_replicas_refuses_to_ground_an_action(quorum):
    state = ClusterState(connect(quorum.url), prefix="q")
    state.ensure(cluster="mail", configured_primary="mail-a")
    master = quorum.master_port()
    replicas = [p for p in quorum.redis_ports if p != master]
    for port in replicas:  # the replicas stop answering: this side lost its majority
        quorum.kill(port, signal.SIGSTOP)
    try:
        with pytest.raises(NotReplicated, match="cut off from the majority"):
            state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0)
    finally:
        for port in replicas:
            quorum.kill(port, signal.SIGCONT)


@pytest.mark.parametrize("how", ["crash", "demoted"])
def test_the_orchestrator_keeps_deciding_through_a_master_change(quorum, tmp_path, how):
    """Worker (broker and results), beat and the probe rounds' state writes all on the
    Sentinel URL: rounds go on recording decisions on the new master after the old one
    is SIGKILLed ("crash"), or stays up as a replica answering READONLY to every
    connection still open to it ("demoted": SENTINEL FAILOVER)."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(UNREACHABLE_INVENTORY)
    proc = subprocess.Popen(
        [CRCTL, "run", "-i", str(inventory), "--redis-url", quorum.url, "--prefix", "qrun",
         "--concurrency", "1", "--stop-timeout", "10", "--loglevel", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def last_round(port: int) -> float:
            raw = redis.Redis(port=port).get("qrun:cluster:mail:decision")
            import json
            return json.loads(raw)["at"] if raw else 0.0

        old = quorum.master_port()
        _wait(lambda: last_round(old) > 0, 40, "a first probe round")
        killed_at = time.time()
        if how == "crash":
            quorum.kill(old)
        else:
            subprocess.run(["redis-cli", "-p", str(quorum.sentinel_ports[0]), "SENTINEL",
                            "FAILOVER", "cr"], check=True, capture_output=True)
        new = quorum.wait_for_new_master(old)
        if how == "demoted":
            _wait(lambda: quorum.role(old) == "slave", 40, f"{old} to become a replica")
        _wait(lambda: last_round(new) > killed_at + 1, 60,
              "a probe round recorded on the new master")
        print(f"\nrounds recorded again {last_round(new) - killed_at:.1f} s after the master "
              f"change ({how})")
        assert proc.poll() is None, "crctl run must not exit when its Redis master dies"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
