"""bench/scale.py at CI size (1 and 5 clusters, a few seconds each) on the session's lab:
it runs the real orchestrator, measures, and writes its figures and plot. Speed is not
asserted here (docs/benchmarks.md has the figures); that the bench works is."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_scale_bench_runs_the_orchestrator_over_n_clusters(lab, tmp_path):
    plot, figures = tmp_path / "scale.png", tmp_path / "scale.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench/scale.py"), "--lab", lab.name, "--ns", "1,5",
         "--seconds", "4", "--settle", "2", "--transports", "asyncssh", "--concurrency", "2",
         "--redis-port", str(_free_port()), "--plot", str(plot), "--json", str(figures)],
        capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads(figures.read_text())
    assert [r["n"] for r in results] == [1, 5]
    for r in results:
        # every cluster ran rounds and decided; the CPU of its processes was counted
        assert r["rounds"] >= r["n"], r
        # (the pool processes run the rounds; the worker's main process dispatches one
        # task a second per group: at N = 5 over 4 s it may stay under a clock tick)
        assert r["cpu_ms_per_round"] > 0 and r["cpu_s"]["pool"] > 0, r
        assert r["redis_ops_per_round"] > 0 and r["p50_ms"] > 0, r
    assert "N=5" in run.stdout and "clusters/core" in run.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing of the bench is left on the lab's hosts
    assert not list(Path(lab.state_dir).glob("hosts/*/state/bench-*"))
