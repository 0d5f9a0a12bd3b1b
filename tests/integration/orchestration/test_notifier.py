"""The notifier against a real Redis, a real HTTP receiver and a real SMTP server: one
notification per event even with two notifiers, retries with back-off until a flaky
receiver takes it, a hanging receiver that delays nobody else, and a replica behind
told once per episode."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cr_orchestrator.notify.notifier import Notifier, Retry
from cr_orchestrator.notify.targets import NotifyTargets, SmtpTarget, Webhook
from cr_orchestrator.state.cluster import ClusterState, EventKind

from .conftest import make_topology

FAST = Retry(attempts=4, first_delay_s=0.2, timeout_s=1.0)


class Receiver:
    """Answers ``fail_first`` POSTs with 500, then 204; keeps (time, body) of the good ones
    and the time of every try."""

    def __init__(self, fail_first: int = 0) -> None:
        self.got: list[tuple[float, dict]] = []
        self.tries: list[float] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.tries.append(time.time())
                if len(outer.tries) <= fail_first:
                    self.send_response(500)
                else:
                    outer.got.append((time.time(), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/secret-part"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _wait(predicate, timeout_s: float):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
def world(redis_client, prefix):
    made = []

    def notifier(targets: NotifyTargets, *, retry: Retry = FAST, **options) -> Notifier:
        topology = make_topology()
        cluster = replace(topology.clusters["mail"], notify=targets)
        topology = replace(topology, clusters={"mail": cluster})
        n = Notifier(client=redis_client, prefix=prefix, topology_of=lambda: topology,
                     retry=retry, behind_every_s=0.2, **options)
        n.start()
        made.append(n)
        _wait(lambda: n._ready, 5)  # its consumer group exists: events from now on count
        return n

    yield notifier
    for n in made:
        n.stop()


def _promote(state: ClusterState, *, new: str, old: str, epoch: int, kind: str = "failover") -> None:
    state.append_event(cluster="mail", kind=EventKind.PROMOTION, data={
        "kind": kind, "new_primary": new, "old_primary": old, "epoch": epoch,
        "reason": f"failing over from {old} to {new}: {old} down for 4 probes"})


def test_two_notifiers_send_each_failover_once_and_quiet_events_not_at_all(world, redis_client, prefix):
    receiver = Receiver()
    targets = NotifyTargets(webhooks=(Webhook(receiver.url),))
    world(targets)
    world(targets)
    state = ClusterState(redis_client, prefix)
    state.append_event(cluster="mail", kind=EventKind.DECISION, data={
        "action": "none", "target": None, "reason": "mail-a is primary and up", "situation": "primary_up"})
    _promote(state, new="mail-b", old="mail-a", epoch=1)
    _promote(state, new="mail-a", old="mail-b", epoch=2, kind="switchover")
    state.append_event(cluster="mail", kind=EventKind.DECISION, data={
        "action": "hold", "target": None, "situation": "failover_budget_spent",
        "reason": "not failing over: 2 failovers in the last 3600 s; an operator must decide"})
    _wait(lambda: len(receiver.got) >= 3, 10)
    time.sleep(0.5)
    kinds = [body["kind"] for _, body in receiver.got]
    assert sorted(kinds) == ["action_needed", "failover", "switchover"], kinds
    failover = next(body for _, body in receiver.got if body["kind"] == "failover")
    assert failover["title"] == "[mail] failover: mail-b is primary at epoch 1 (was mail-a)"
    assert failover["text"].startswith("failing over from mail-a to mail-b")
    receiver.close()


def test_a_flaky_receiver_gets_it_after_backing_off_and_a_hanging_one_delays_nobody(world, redis_client,
                                                                                   prefix):
    from aiosmtpd.controller import Controller

    mails = []

    class Sink:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            mails.append((time.time(), envelope.content.decode()))
            return "250 OK"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        smtp_port = s.getsockname()[1]
    controller = Controller(Sink(), hostname="127.0.0.1", port=smtp_port)
    controller.start()
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(16)  # accepts (the kernel does) and never answers
    flaky, good = Receiver(fail_first=2), Receiver()
    targets = NotifyTargets(
        webhooks=(Webhook(f"http://127.0.0.1:{hanging.getsockname()[1]}/x"), Webhook(flaky.url),
                  Webhook(good.url)),
        smtp=SmtpTarget("127.0.0.1", smtp_port, "cr@example.com", ("ops@example.com",)))
    world(targets)
    state = ClusterState(redis_client, prefix)
    appended = time.time()
    _promote(state, new="mail-b", old="mail-a", epoch=1)
    _wait(lambda: good.got and mails, 5)
    # the good receiver and the mail did not wait for the hanging one (1 s per try)
    assert good.got[0][0] - appended < 0.9 and mails[0][0] - appended < 0.9
    assert "Subject: [mail] failover: mail-b is primary at epoch 1 (was mail-a)" in mails[0][1]
    _wait(lambda: flaky.got, 10)
    gaps = [b - a for a, b in zip(flaky.tries, flaky.tries[1:])]
    assert len(flaky.tries) == 3 and gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps  # backed off
    # the event is acknowledged only after the hanging receiver was given up on
    group = f"{prefix}:notify"
    key = state.key("mail", "events")
    assert redis_client.xpending(key, group)["pending"] == 1
    _wait(lambda: redis_client.xpending(key, group)["pending"] == 0, 15)
    controller.stop()
    hanging.close()
    flaky.close()
    good.close()


def test_a_replica_behind_is_told_once_per_episode(world, redis_client, prefix):
    from cr_orchestrator.state.freshness import FreshnessStore

    receiver = Receiver()
    world(NotifyTargets(webhooks=(Webhook(receiver.url),)))
    fresh = FreshnessStore(redis_client, prefix)
    now = time.time()
    fresh.record_success(cluster="mail", set_name="maildata", host="mail-dr", source="mail-a",
                         epoch=0, started_at=now - 400, ended_at=now - 399, bytes_sent=1, files=1)
    _wait(lambda: receiver.got, 5)
    time.sleep(0.8)  # several checks later: still one
    assert [b["kind"] for _, b in receiver.got] == ["replica_behind"]
    assert re.match(r"mail-dr may miss 40\d s of writes to maildata, more than max_replica_lag "
                    r"\(300 s\)", receiver.got[0][1]["text"]), receiver.got[0][1]["text"]
    fresh.record_success(cluster="mail", set_name="maildata", host="mail-dr", source="mail-a",
                         epoch=0, started_at=time.time(), ended_at=time.time(), bytes_sent=1, files=1)
    time.sleep(0.6)
    fresh.record_success(cluster="mail", set_name="maildata", host="mail-dr", source="mail-a",
                         epoch=0, started_at=now - 500, ended_at=now - 499, bytes_sent=1, files=1)
    _wait(lambda: len(receiver.got) == 2, 5)  # a new episode
    receiver.close()


def test_what_a_dead_notifier_left_unsent_is_taken_over(world, redis_client, prefix):
    receiver = Receiver()
    targets = NotifyTargets(webhooks=(Webhook(receiver.url),))
    state = ClusterState(redis_client, prefix)
    key, group = state.key("mail", "events"), f"{prefix}:notify"
    redis_client.xgroup_create(key, group, id="$", mkstream=True)
    _promote(state, new="mail-b", old="mail-a", epoch=1)
    # a notifier took it and died before sending it (never acknowledged)
    assert redis_client.xreadgroup(group, "dead-host:1", {key: ">"}, count=10)
    time.sleep(0.6)
    world(targets, orphan_idle_s=0.5, claim_every_s=0.2)
    _wait(lambda: receiver.got, 5)
    assert [b["kind"] for _, b in receiver.got] == ["failover"]
    _wait(lambda: redis_client.xpending(key, group)["pending"] == 0, 5)
    receiver.close()
