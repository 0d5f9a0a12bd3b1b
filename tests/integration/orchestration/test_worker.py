"""A real Celery worker process takes a real task from its site queue in Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from cr_orchestrator.runtime.celery_app import make_app
from cr_orchestrator.state.cluster import ClusterState

from .conftest import REDIS_URL


@pytest.fixture
def worker(prefix):
    env = dict(os.environ, CR_REDIS_URL=REDIS_URL, CR_PREFIX=prefix)
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "cr_orchestrator.runtime.celery_app", "worker",
         "-Q", "site.site-a", "-c", "1", "--without-gossip", "--without-mingle",
         "--loglevel", "WARNING"],
        env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_probe_round_runs_in_the_worker_and_records_its_decision(
        worker, prefix, redis_client, unreachable_inventory):
    import time

    app = make_app(redis_url=REDIS_URL, prefix=prefix)
    app.send_task("cr.probe_round", args=["mail", unreachable_inventory], queue="site.site-a")
    # a round stores no Celery result (nobody waits for one): its decision in Redis is
    # what it leaves
    state = ClusterState(redis_client, prefix)
    deadline = time.monotonic() + 60
    while state.last_decision("mail") is None and time.monotonic() < deadline:
        time.sleep(0.2)
    answer = state.last_decision("mail")
    assert answer is not None, "the worker recorded no decision within 60 s"
    # One round of hosts that refuse everything: too early to act, whatever the verdict.
    assert answer["action"] in ("none", "hold"), answer
    assert state.primary("mail") == "mail-a" and state.epoch("mail") == 0
    assert [(e.data["action"], e.data["reason"]) for e in state.events("mail")] == [
        (answer["action"], answer["reason"])]
    assert state.last_decision("mail")["reason"] == answer["reason"]
    # the queue lives under our prefix only: nothing leaked into the default key space
    assert redis_client.exists(f"{prefix}:celery:_kombu.binding.site.site-a")
    assert not redis_client.exists("_kombu.binding.site.site-a")
