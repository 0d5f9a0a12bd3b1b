"""`crctl run`: worker + RedBeat beat as one process tree, working, and stopped cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cr_orchestrator.runtime.celery_app import make_app
from cr_orchestrator.cli.run import child_commands, restart_delay
from cr_orchestrator.runtime.schedule import existing_entries, probe_entry_of
from cr_orchestrator.state.cluster import ClusterState

from .conftest import REDIS_URL, UNREACHABLE_INVENTORY

CRCTL = str(Path(sys.executable).with_name("crctl"))


def process_groups() -> dict[int, list[int]]:
    """pgid -> pids of every process on the machine (from /proc)."""
    groups: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        groups.setdefault(int(fields[2]), []).append(int(entry.name))
    return groups


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_child_command_lines():
    worker, beat = child_commands(queues=["site.a", "site.b"], concurrency=2, loglevel="INFO",
                                  beat=True, node="cr-a-b")
    assert worker.argv[1:] == ["-m", "celery", "-A", "cr_orchestrator.runtime.celery_app", "worker",
                               "-Q", "site.a,site.b", "-n", "cr-a-b@%h", "--concurrency", "2",
                               "-O", "fair", "--loglevel", "INFO", "--without-gossip",
                               "--without-mingle"]
    assert beat.argv[5:] == ["beat", "-S", "cr_orchestrator.runtime.schedule.RedisTolerantScheduler",
                             "--max-interval", "1", "--loglevel", "INFO"]
    assert [c.name for c in child_commands(queues=["site.a"], concurrency=1, loglevel="INFO",
                                           beat=False, node="n")] == ["worker"]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_run_probes_on_schedule_follows_the_inventory_and_stops_without_orphans(
        tmp_path, prefix, redis_client, stop_signal):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(UNREACHABLE_INVENTORY)
    proc = subprocess.Popen(
        [CRCTL, "run", "-i", str(inventory), "--redis-url", REDIS_URL, "--prefix", prefix,
         "--concurrency", "1", "--stop-timeout", "15", "--watch-interval", "1",
         "--loglevel", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        state = ClusterState(redis_client, prefix)
        # beat fires cr.probe_round every second; the worker probes, decides and records
        events = wait_for(lambda: state.events("mail"), 45, "a decision from the scheduled round")
        assert events[0].kind == "decision" and events[0].data["action"] in ("none", "hold")
        children = wait_for(lambda: children_of(proc.pid) if len(children_of(proc.pid)) == 2
                            else None, 10, "worker and beat")
        if stop_signal is signal.SIGTERM:
            app = make_app(redis_url=REDIS_URL, prefix=prefix)
            inventory.write_text(UNREACHABLE_INVENTORY.replace("probe_interval: 1s",
                                                               "probe_interval: 3s"))
            wait_for(lambda: (e := existing_entries(app)).get(probe_entry_of(e, "mail") or "")
                     and e[probe_entry_of(e, "mail")].schedule.run_every.total_seconds() == 3.0,
                     20, "the schedule to follow the inventory")
        before = process_groups()
        tree = [pid for pgid in children for pid in before.get(pgid, [])]
        assert len(tree) >= 3  # worker, its pool process, beat
        proc.send_signal(stop_signal)
        output, _ = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            for pgid in children_of(proc.pid):
                os.killpg(pgid, signal.SIGKILL)
    assert proc.returncode == 0, output
    after = process_groups()
    assert [pgid for pgid in children if pgid in after] == [], "orphans left behind"
    assert "crctl run: stopped (on request)" in output
    assert "WorkerLostError" not in output  # tasks were not killed midway


def test_restart_back_off_doubles_up_to_a_bound():
    assert [restart_delay(n) for n in (1, 2, 3, 4, 5, 6, 9)] == [1, 2, 4, 8, 16, 30, 30]


class RunningCrctl:
    """`crctl run` over the unreachable inventory, stopped with SIGTERM by ``stop()``
    (which returns everything it printed), or killed with its children if a test fails."""

    def __init__(self, tmp_path, prefix: str) -> None:
        inventory = tmp_path / "hosts.yml"
        inventory.write_text(UNREACHABLE_INVENTORY)
        self.proc = subprocess.Popen(
            [CRCTL, "run", "-i", str(inventory), "--redis-url", REDIS_URL, "--prefix", prefix,
             "--concurrency", "1", "--stop-timeout", "15", "--loglevel", "WARNING"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> str:
        assert self.proc.poll() is None, "crctl run stopped on its own"
        self.proc.send_signal(signal.SIGTERM)
        output, _ = self.proc.communicate(timeout=40)
        assert self.proc.returncode == 0, output
        return output

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            for pgid in children_of(self.proc.pid):
                os.killpg(pgid, signal.SIGKILL)


def test_a_killed_worker_is_started_again_and_rounds_go_on(tmp_path, prefix, redis_client):
    """SIGKILL of the worker and its pool (as an OOM killer or an operator's mistake
    would): `crctl run` keeps running, starts a new worker, and rounds are decided again."""
    run = RunningCrctl(tmp_path, prefix)
    try:
        state = ClusterState(redis_client, prefix)
        wait_for(lambda: state.last_decision("mail"), 45, "a first decision")
        groups = wait_for(lambda: children_of(run.proc.pid)
                          if len(children_of(run.proc.pid)) == 2 else None, 10, "worker and beat")
        worker = next(pid for pid in groups if "worker" in Path(f"/proc/{pid}/cmdline")
                      .read_text())
        os.killpg(worker, signal.SIGKILL)
        killed_at = time.time()
        wait_for(lambda: len(children_of(run.proc.pid)) == 2
                 and worker not in children_of(run.proc.pid), 20, "a new worker")
        wait_for(lambda: (state.last_decision("mail") or {}).get("at", 0) > killed_at + 1, 45,
                 "a round decided by the new worker")
        output = run.stop()
    finally:
        run.kill()
    assert "worker exited with -9; starting it again in 1 s" in output, output


def test_a_redis_that_lost_every_key_does_not_stop_the_orchestrator(tmp_path, prefix,
                                                                     redis_client):
    """Every key of the prefix deleted (a Redis restarted without persistence) while
    `crctl run` runs: beat loses its lock and is started again, the schedule is written
    again from the inventory, and rounds are decided again within 30 s."""
    run = RunningCrctl(tmp_path, prefix)
    try:
        state = ClusterState(redis_client, prefix)
        wait_for(lambda: state.last_decision("mail"), 45, "a first decision")
        redis_client.delete(*redis_client.scan_iter(match=f"{prefix}:*"))
        lost_at = time.time()
        # a round already probing when the keys went read the old state before: it may
        # record its decision without seeding; the round after it seeds
        wait_for(lambda: state.seeded("mail")
                 and (state.last_decision("mail") or {}).get("at", 0) > lost_at, 30,
                 "a round decided on the state written again from the inventory")
        output = run.stop()
    finally:
        run.kill()
    assert "writing it again from the inventory" in output, output
