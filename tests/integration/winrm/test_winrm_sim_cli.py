"""`python -m cr_orchestrator.testworld.wsman_sim` as the lab runs it: a separate process and a state file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cr_orchestrator.observe.health import Health
from cr_orchestrator.observe.windows_host import probe_windows_host
from cr_orchestrator.remote.winrm import WinRMShellPool
from winrm_testlib import PASSWORD, windows_host, winrm_settings


def write_state(path, **state) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)  # atomic: the server never reads half a file


@pytest.fixture
def sim_process(tmp_path, free_port):
    state = tmp_path / "win1.json"
    write_state(state, hostname="WIN1", services={"MDaemon": "Running"},
                volumes={"D:\\": {"free": 1 << 40, "size": 2 << 40}})
    cert = tmp_path / "win1.crt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cr_orchestrator.testworld.wsman_sim", "--listen", f"127.0.0.1:{free_port}",
         "--state", str(state), "--https", "--cert-out", str(cert)],
        env={**os.environ, "CR_WSMAN_SIM_PASSWORD": PASSWORD}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        line = proc.stdout.readline()
        assert "serving https://127.0.0.1:" in line, line + proc.stderr.read()
        yield proc, state, free_port, cert
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def test_cli_serves_the_state_file_and_follows_its_changes(sim_process):
    proc, state, port, cert = sim_process
    host = windows_host(winrm_settings(port=port, https=True, validate=True, ca=str(cert)))
    pool = WinRMShellPool()

    def probe():
        obs = probe_windows_host(host=host, services=["MDaemon"], data_paths=["D:\\MDaemon"], timeout_s=3,
                                 pool=pool)
        return {o.subject: o for o in obs}

    first = probe()
    assert first["host"].health is Health.OK and first["service:MDaemon"].health is Health.OK
    time.sleep(0.01)  # a distinct mtime
    write_state(state, hostname="WIN1", services={"MDaemon": "Stopped"},
                volumes={"D:\\": {"free": 1 << 40, "size": 2 << 40}})
    assert probe()["service:MDaemon"].health is Health.DOWN
    pool.close_all()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0


def test_cli_refuses_to_start_without_a_password(tmp_path):
    state = tmp_path / "s.json"
    state.write_text("{}")
    env = {k: v for k, v in os.environ.items() if k != "CR_WSMAN_SIM_PASSWORD"}
    run = subprocess.run([sys.executable, "-m", "cr_orchestrator.testworld.wsman_sim", "--listen", "127.0.0.1:0",
                          "--state", str(state)], env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert "set the password in the environment variable CR_WSMAN_SIM_PASSWORD" in run.stderr


def test_cli_names_a_bad_state_file(tmp_path):
    state = tmp_path / "s.json"
    state.write_text('{"servics": {}}')
    run = subprocess.run([sys.executable, "-m", "cr_orchestrator.testworld.wsman_sim", "--listen", "127.0.0.1:0",
                          "--state", str(state)], env={**os.environ, "CR_WSMAN_SIM_PASSWORD": "x"},
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert f"{state}: unknown host state keys: servics" in run.stderr
