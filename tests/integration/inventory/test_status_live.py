"""``crctl status`` merges the live state another process wrote to the real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from cr_orchestrator.state.cluster import ClusterState, connect

REPO = Path(__file__).parents[3]
CRCTL = str(Path(sys.executable).with_name("crctl"))


@pytest.fixture
def state():
    client = connect()
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at CR_REDIS_URL / 127.0.0.1:6379: {exc}")
    prefix = f"crtest-{uuid.uuid4().hex[:8]}"
    yield ClusterState(client, prefix)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def test_status_shows_primary_epoch_pause_and_last_decision_from_redis(state):
    state.ensure(cluster="app", configured_primary="app1")
    epoch = state.promote(cluster="app", new_primary="app2", expected_epoch=0)
    state.set_paused("app", True)
    state.record_decision(cluster="app", action="hold", target=None, epoch=epoch, now=time.time(),
                          reason="paused by the operator", members={"app1": "down", "app2": "up"})
    done = subprocess.run(
        [CRCTL, "status", "-i", "inventory/cluster-plus-dr", "--vault-password-file",
         "inventory/.vault-pass-example", "--prefix", state.prefix],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("primary now app2, epoch 1, PAUSED")
    assert lines[2].split()[:6] == ["app1", "primary", "tokyo", "windows", "123.123.123.123", "down"]
    assert lines[3].split()[5] == "up"
    assert "  last decision: hold: paused by the operator" in lines
