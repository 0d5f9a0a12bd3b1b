"""The console's HTTP side against a real Redis and a real uvicorn: what a browser or a
scraper gets, what an action needs (the page's CSRF token and the console token), what
lands in history, and /metrics read from Redis at scrape time (names used by the shipped
alert rules and dashboard all exported)."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import uvicorn

from cr_orchestrator.console.app import ConsoleConfig, make_app
from cr_orchestrator.metrics import record_round
from cr_orchestrator.state.cluster import ClusterState, EventKind

from .conftest import make_topology

TOKEN = "tok-" + "x" * 20
PROMETHEUS_DOCS = Path(__file__).resolve().parents[3] / "docs" / "prometheus"


class Server:
    def __init__(self, app) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def get(self, path: str, headers: dict | None = None) -> tuple[int, dict, str]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read().decode()

    def post(self, path: str, body: dict, headers: dict) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         method="POST",
                                         headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture
def console(redis_client, prefix, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    topology = make_topology()
    servers = []

    def start(*, token: bool = True) -> Server:
        config = ConsoleConfig(inventory="/nonexistent", redis_url=None, prefix=prefix,
                               token_file=token_file if token else None)
        server = Server(make_app(config, client=redis_client, topology_of=lambda: topology))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _csrf(server: Server) -> tuple[str, dict]:
    """Open the cluster page as a browser would: the cookie and the page's token."""
    status, headers, page = server.get("/cluster/mail")
    assert status == 200
    cookie = re.search(r"cr_csrf=([^;]+)", headers["set-cookie"]).group(1)
    meta = re.search(r'<meta name="csrf" content="([^"]+)"', page).group(1)
    assert cookie == meta and "samesite=strict" in headers["set-cookie"].lower()
    return cookie, {"Cookie": f"cr_csrf={cookie}", "X-CSRF-Token": meta}


def test_an_action_needs_the_page_token_and_the_console_token(console, redis_client, prefix):
    server = console()
    state = ClusterState(redis_client, prefix)
    state.ensure(cluster="mail", configured_primary="mail-a")
    _, headers = _csrf(server)
    pause = {"command": "pause", "seen_primary": "mail-a", "seen_epoch": 0, "operator": "alice"}

    status, out = server.post("/api/cluster/mail/action", pause, {"X-CR-Token": TOKEN})
    assert (status, out["ok"]) == (403, False) and "CSRF" in out["summary"]
    status, out = server.post("/api/cluster/mail/action", pause,
                              {**headers, "X-CR-Token": TOKEN, "Origin": "http://evil.example"})
    assert status == 403 and "CSRF" in out["summary"]
    for wrong in ({}, {"X-CR-Token": "tok-guess"}):
        status, out = server.post("/api/cluster/mail/action", pause, {**headers, **wrong})
        assert status == 403
        assert out["summary"] == "refused: the console token is missing or wrong; nothing was done"
    assert not state.paused("mail") and state.events("mail") == []

    status, out = server.post("/api/cluster/mail/action", pause,
                              {**headers, "X-CR-Token": TOKEN, "Origin": server.url})
    assert (status, out["ok"]) == (200, True), out
    assert state.paused("mail")
    asked = [e for e in state.events("mail") if e.data.get("via") == "console"]
    assert [e.data["by"] for e in asked] == ["alice via console from 127.0.0.1"]
    assert asked[0].data["reason"].startswith("console: pause of mail asked by alice via console")
    _, _, clusters = server.get("/api/clusters")
    assert json.loads(clusters)["clusters"][0]["paused"] is True
    state.append_event(cluster="mail", kind=EventKind.DECISION, data={
        "action": "hold", "target": None, "reason": "paused: not acting", "situation": "primary_up"})
    _, _, timeline = server.get("/api/cluster/mail/events?kind=operator")
    events = json.loads(timeline)["events"]
    assert [e["kind"] for e in events] == ["operator", "operator"]  # the console's, then pause's
    assert events[0]["text"] == "operator: mail paused: no automatic action until resumed"
    _, _, timeline = server.get("/api/cluster/mail/events")
    assert [e["kind"] for e in json.loads(timeline)["events"]] == ["decision", "operator", "operator"]
    # the token is nowhere in Redis
    for key in redis_client.scan_iter(match=f"{prefix}*"):
        kind = redis_client.type(key)
        dump = redis_client.dump(key)
        assert TOKEN.encode() not in dump, (key, kind)


def test_an_action_on_a_cluster_that_moved_since_the_operator_looked_is_refused(console, redis_client,
                                                                               prefix):
    server = console()
    state = ClusterState(redis_client, prefix)
    state.ensure(cluster="mail", configured_primary="mail-a")
    state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0)
    _, headers = _csrf(server)
    status, out = server.post("/api/cluster/mail/action",
                              {"command": "pause", "seen_primary": "mail-a", "seen_epoch": 0},
                              {**headers, "X-CR-Token": TOKEN})
    assert (status, out["ok"]) == (409, False)
    assert "the cluster has moved since: mail-b is primary at epoch 1" in out["summary"]
    assert not state.paused("mail")


def test_a_console_without_token_file_is_read_only(console):
    server = console(token=False)
    _, headers = _csrf(server)
    status, out = server.post("/api/cluster/mail/action",
                              {"command": "pause", "seen_primary": "mail-a", "seen_epoch": 0},
                              {**headers, "X-CR-Token": TOKEN})
    assert status == 405 and "read-only" in out["summary"]
    _, _, page = server.get("/cluster/mail")
    assert "This console is read-only" in page


def _samples(text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name + json.dumps(s.labels, sort_keys=True)] = s.value
    return out


def test_metrics_are_read_from_redis_at_scrape_time(console, redis_client, prefix):
    from types import SimpleNamespace

    from cr_orchestrator.observe.health import ORCHESTRATOR, Health, Observation
    from cr_orchestrator.observe.store import ObservationStore
    from cr_orchestrator.state.freshness import FreshnessStore

    server = console()
    state = ClusterState(redis_client, prefix)
    state.ensure(cluster="mail", configured_primary="mail-a")
    now = time.time()
    FreshnessStore(redis_client, prefix).record_success(
        cluster="mail", set_name="maildata", host="mail-b", source="mail-a", epoch=0,
        started_at=now - 42, ended_at=now - 40, bytes_sent=10, files=1)
    ObservationStore(client=redis_client, prefix=prefix).add(observations=[
        Observation("mail-a", ORCHESTRATOR, "service:mail", Health.OK, now),
        Observation("mail-b", ORCHESTRATOR, "service:mail", Health.DOWN, now)])
    # what the round task records (here by hand: another process's worker would)
    failover = SimpleNamespace(ok=True, decision=SimpleNamespace(action=SimpleNamespace(value="failover")))
    record_round(redis_client, prefix, cluster="mail", started=now - 0.3, outcome=failover)

    _, _, before = server.get("/metrics")
    got = _samples(before)
    assert got['cr_cluster_primary{"cluster": "mail", "host": "mail-a"}'] == 1
    assert got['cr_cluster_primary{"cluster": "mail", "host": "mail-b"}'] == 0
    assert got['cr_probe_up{"check": "service:mail", "cluster": "mail", "host": "mail-b"}'] == 0
    assert got['cr_probe_up{"check": "service:mail", "cluster": "mail", "host": "mail-a"}'] == 1
    assert 41 < got['cr_replication_lag_seconds{"cluster": "mail", "set": "maildata", "target": "mail-b"}'] < 60
    assert got['cr_failovers_total{"cluster": "mail", "result": "ok"}'] == 1
    assert got['cr_decision_total{"action": "failover", "cluster": "mail"}'] == 1
    assert got['cr_probe_round_seconds_bucket{"cluster": "mail", "le": "0.5"}'] == 1
    assert got['cr_probe_round_seconds_bucket{"cluster": "mail", "le": "0.25"}'] == 0
    assert abs(got["cr_beat_last_tick_timestamp{}"] - (now - 0.3)) < 1

    state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0)  # another worker
    after = _samples(server.get("/metrics")[2])
    assert after['cr_cluster_primary{"cluster": "mail", "host": "mail-b"}'] == 1
    assert after['cr_cluster_epoch{"cluster": "mail"}'] == 1
    # the new primary's own old record is no lag of a target any more
    assert not any(k.startswith("cr_replication_lag_seconds") for k in after)

    # every metric the shipped alerts and dashboard use is exported
    exported = {k.split("{")[0] for k in got} | {k.split("{")[0] for k in after}
    used = set()
    for name in ("alerts.yml", "grafana-dashboard.json"):
        used |= set(re.findall(r"\bcr_[a-z_]+", (PROMETHEUS_DOCS / name).read_text()))
    used -= {"cr_orchestrator"}  # the dashboard's uid and tag
    assert used and used <= exported, used - exported
