"""Blips that must not move the primary, and why the orchestrator says it did not.

One orchestrator run (fast profile: a probe a second, four failed probes call a host
down) on a Redis of its own, then, one after the other:

- mail-a freezes for 2 s (every process stopped, TCP still accepted by the kernel);
- one probe is lost (mail-a cut off from the orchestrator for about one interval);
- `crctl run` is stopped (SIGTERM, warm) and started again under the same prefix;
- its Redis is restarted (SIGTERM, started again on the same append-only files).

After each, mail-a is still the primary at epoch 0, nothing was restarted or promoted,
and the decisions recorded meanwhile say why (waiting: suspect, not yet down). Then the
orchestrator is cut off from mail-a alone while mail-b still sees it serving: the
orchestrator does not move anything, saying it is cut off from mail-a (its peers still
see mail-a serving).

Run: CR_LAB_NAME=sc CR_LAB_BASE=198.18.192.0/20 pytest -m lab tests/scenarios
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import uuid

import pytest
import redis
from scenario_kit import (  # noqa: F401 - fixtures
    count_mail, orchestrator, running_orchestrator, scenario_inventory, send_mail,
    split_brain_watch, wait_for,
)

pytestmark = pytest.mark.lab

MOVES = {"failover", "restart_service", "demote_rejoined", "failback", "reassert"}


class DedicatedRedis:
    """A redis-server of this story only (never the shared one), persisted in ``directory``."""

    def __init__(self, directory) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                     "--dir", str(directory), "--appendonly", "yes", "--save", "",
                     "--maxmemory-policy", "noeviction"]
        self.log = directory / "redis.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=open(self.log, "a"),
                                     stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url)
        wait_for(lambda: _pings(client), 20, f"redis-server on port {self.port}", every_s=0.1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # a clean shutdown: the AOF is flushed
        self.proc.wait(20)


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


@pytest.fixture
def dedicated_redis(tmp_path):
    (tmp_path / "redis").mkdir()
    server = DedicatedRedis(tmp_path / "redis")
    yield server
    if server.proc.poll() is None:
        server.stop()


def _up(decision: dict) -> bool:
    return decision["reason"].startswith("mail-a is primary (epoch 0) and up")


def _rounds_after(orch, *, fault_at: float, healed_at: float,
                  steady_s: float = 3.0) -> list[dict]:
    """Wait until the rounds since ``healed_at`` have seen mail-a up for ``steady_s``;
    return the decisions recorded since ``fault_at`` (a decision is recorded when the
    situation changes, so these say what the rounds thought of the fault)."""
    def steady():
        last = orch.state.last_decision("mail") or {}
        if last.get("at", 0) < healed_at or not _up(last):
            return None
        changes = [e for e in orch.state.events("mail", count=1000) if e.kind == "decision"]
        up_since = changes[-1].at if changes and _up(changes[-1].data) else last["at"]
        if last["at"] - max(healed_at, up_since) < steady_s:
            return None
        return [e.data for e in changes if e.at >= fault_at] or [last]

    try:
        return wait_for(steady, 90, f"mail-a seen up for {steady_s:.0f} s", every_s=0.3)
    except AssertionError as exc:
        last = [(round(e.at - fault_at, 1), e.kind, e.data.get("action"), e.data.get("reason"))
                for e in orch.state.events("mail", count=8)]
        raise AssertionError(f"{exc}; last events: {last}") from None


def _assert_nothing_moved(orch, made: list[dict]) -> None:
    assert not [d for d in made if d["action"] in MOVES], made
    assert (orch.state.primary("mail"), orch.state.epoch("mail")) == ("mail-a", 0)
    assert not [e for e in orch.state.events("mail", count=1000) if e.kind == "promotion"]


def test_a_freeze_a_lost_probe_and_restarts_of_the_orchestrator_and_redis_do_not_fail_over(
        lab, tmp_path, split_brain_watch, dedicated_redis):
    inventory = scenario_inventory(lab, tmp_path)
    with running_orchestrator(lab, inventory, redis_url=dedicated_redis.url) as orch:
        orch.settle()

        # mail-a freezes for 2 s: suspect for a probe or two, never down.
        frozen_at = time.time()
        lab.fail("mail-a", "freeze", for_s=2)
        made = _rounds_after(orch, fault_at=frozen_at, healed_at=frozen_at + 2)
        _assert_nothing_moved(orch, made)
        waiting = [d["reason"] for d in made if d["action"] == "none"
                   and d["reason"].startswith("waiting: primary mail-a")]
        print("during the freeze:", sorted(set(waiting)))
        assert any("not yet down" in r for r in waiting), made

        # One probe lost: the orchestrator cannot reach mail-a for about one interval.
        lost_at = time.time()
        lab.fail("mail-a", "isolate", for_s=1.2)
        made = _rounds_after(orch, fault_at=lost_at, healed_at=lost_at + 1.2)
        print("around the lost probe:", [d["reason"] for d in made])
        _assert_nothing_moved(orch, made)

        # `crctl run` stopped and started again: same state, no move, rounds go on.
        assert orch.stop() == 0
        restarted_at = time.time()
        orch.start()
        made = _rounds_after(orch, fault_at=restarted_at, healed_at=restarted_at)
        _assert_nothing_moved(orch, made)

        # Its Redis restarts (persisted): the orchestrator reconnects and carries on.
        dedicated_redis.stop()
        time.sleep(1)  # a probe round or so without Redis
        dedicated_redis.start()
        back_at = time.time()
        made = _rounds_after(orch, fault_at=back_at, healed_at=back_at)
        _assert_nothing_moved(orch, made)
        assert orch.proc.poll() is None, "crctl run exited after the Redis restart"

        subject = f"after-the-blips-{uuid.uuid4().hex[:8]}"
        send_mail(lab, subject)
        out = count_mail(lab, subject)
        assert "IMAP 1" in out and "POP3 1" in out, out


def test_orchestrator_cut_off_from_the_primary_alone_does_not_fail_over(lab, orchestrator):
    orchestrator.settle()
    cut_at = time.time()
    lab.fail("mail-a", "isolate")  # the orchestrator cannot reach mail-a; mail-b can
    said = wait_for(lambda: [d["reason"] for d in orchestrator.decided_since(cut_at)
                             if "cut off from it" in d["reason"]], 60,
                    "a decision saying the orchestrator is cut off", every_s=0.3)
    print("while cut off:", said[0])
    assert said[0].startswith("mail-a is primary (epoch 0) and up as its peers see it "
                              "serving; the orchestrator cannot reach it itself"), said
    time.sleep(6)  # longer than failures_before_down probes: still nothing moves
    assert "cut off from it" in orchestrator.state.last_decision("mail")["reason"]
    assert lab.run_on("mail-a", [lab.mailctl, "status"]).returncode == 0  # still serving
    healed_at = time.time()
    lab.heal("mail-a")
    _rounds_after(orchestrator, fault_at=cut_at, healed_at=healed_at)
    _assert_nothing_moved(orchestrator, orchestrator.decided_since(cut_at))
