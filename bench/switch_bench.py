"""Wall time of a 2-host promotion + shared-IP switch (playbooks/failover.yml) in the lab.

    CR_LAB_NAME=pb CR_LAB_BASE=198.18.32.0/20 .venv/bin/python bench/switch_bench.py [--runs 5]

``--old-down`` crashes the old primary before each run and passes ``cr_old_primary_down``
(the play runs on the new primary alone); ``--crash-old`` crashes it without telling.

Brings the lab up if needed, warms the SSH master connections with one unmeasured run,
then moves the primary role back and forth between mail-a and mail-b (demote the old
primary, release the shared IP, promote the new one, take the shared IP, check that SMTP
answers at the shared IP) through the Python API the orchestrator uses, and prints the
median. ``--slowest N`` lists the slowest tasks of the median run. Machine load is
printed too: the figure means little on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

from cr_orchestrator.testworld.lab import Lab, lab_from_env
from cr_orchestrator.act.playbook_runner import run_playbook


def epoch_records(lab) -> int:
    best = 0
    for host in ("mail-a", "mail-b", "mail-dr"):
        proc = lab.run_on(host, "cat /var/lib/cr-orchestrator/mail.epoch")
        if proc.returncode == 0 and proc.stdout.strip().isdigit():
            best = max(best, int(proc.stdout.strip()))
    return best


def task_times(artifact_dir: Path) -> list[tuple[float, str]]:
    """(seconds, task) per task of a run, from its recorded events: from the task's start
    to the start of the next task (or the end of the play), so every second of the
    playbook is counted once, skipped tasks and includes too."""
    events = [json.loads(p.read_text()) for p in (artifact_dir / "job_events").glob("*.json")]
    events.sort(key=lambda e: e["counter"])
    marks = [(datetime.fromisoformat(e["created"]), e["event"], e.get("event_data", {}))
             for e in events if e["event"] in ("playbook_on_task_start", "playbook_on_stats",
                                              "playbook_on_play_start")]
    times = []
    for (at, kind, data), (after, _, _) in zip(marks, marks[1:]):
        if kind == "playbook_on_task_start":
            times.append(((after - at).total_seconds(), data.get("task", "")))
    return times


def run_overhead(result) -> tuple[float, int]:
    """(seconds outside the play's tasks, number of tasks started) of a run: runner and
    ansible-playbook start-up, parsing, and the end of the run."""
    times = task_times(result.artifact_dir)
    return result.duration_s - sum(t for t, _ in times), len(times)


TRIVIAL = """- name: One raw task on both hosts (how fast is this machine right now)
  hosts: mail-a:mail-b
  gather_facts: false
  tasks:
    - name: Do nothing
      ansible.builtin.raw: "true"
      changed_when: false
"""


def time_trivial(lab) -> float:
    path = Path(os.environ["CR_ARTIFACTS"]) / "trivial.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TRIVIAL)
    started = time.perf_counter()
    run_playbook(playbook=str(path), inventory=lab.inventory_path, timeout_s=60)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--playbook", default="failover")
    parser.add_argument("--slowest", type=int, default=0)
    parser.add_argument("--old-down", action="store_true",
                        help="crash the old primary before each run (not timed) and pass "
                             "cr_old_primary_down=true: the failover the orchestrator orders "
                             "when the detector confirmed the old primary's host down; the "
                             "crashed host is healed (rebooted) after the run, not timed")
    parser.add_argument("--crash-old", action="store_true",
                        help="crash the old primary before each run (not timed) but do NOT "
                             "pass cr_old_primary_down: the play tries it and waits for its SSH "
                             "connection to fail (the failover when the detector is not sure)")
    parser.add_argument("--service-down", action="store_true",
                        help="stop the old primary's service before each run (not timed): "
                             "the failover of a primary whose service died, so no demotion "
                             "stop is waited for (the lab's mail service takes ~2.7 s to stop)")
    args = parser.parse_args(argv)

    os.environ.setdefault("CR_ARTIFACTS", "/tmp/cr-switch-bench")
    name, base = lab_from_env()
    lab = Lab.up(name=name, base=base)
    epoch = epoch_records(lab)
    pair = [("mail-a", "mail-b"), ("mail-b", "mail-a")]  # (new, old)
    timings, results, baselines = [], [], []
    for i in range(args.runs + 1):  # run 0 warms the SSH masters and puts mail-a first
        new, old = pair[i % 2]
        epoch += 1
        if args.service_down:
            lab.run_on(old, f"{lab.mailctl} stop")
        baseline = time_trivial(lab)
        extravars = {"cr_cluster": "mail", "cr_epoch": epoch, "cr_new_primary": new,
                     "cr_old_primary": old}
        if args.old_down or args.crash_old:
            lab.fail(old, "crash")
        if args.old_down:
            extravars["cr_old_primary_down"] = True
            extravars["cr_fast_take_over"] = True  # as the orchestrator decides for the lab
        started = time.perf_counter()
        result = run_playbook(playbook=args.playbook, inventory=lab.inventory_path, timeout_s=120,
                              extravars=extravars)
        wall = time.perf_counter() - started
        if args.old_down or args.crash_old:
            lab.heal(old)
        if not result.ok:
            print(f"run {i} failed: {result.summary}", file=sys.stderr)
            return 1
        label = "warm-up" if i == 0 else f"run {i}"
        overhead, ntasks = run_overhead(result)
        print(f"{label:8} {old} -> {new}: {wall:.2f} s ({result.summary}); {ntasks} tasks, "
              f"{overhead:.2f} s outside tasks; trivial playbook {baseline:.2f} s")
        if i:
            timings.append(wall)
            baselines.append(baseline)
            results.append((wall, result))
    median = statistics.median(timings)
    load = os.getloadavg()
    print(f"median of {args.runs}: {median:.2f} s (min {min(timings):.2f}, max {max(timings):.2f}); "
          f"load average {load[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"trivial 2-host one-task playbook (machine speed now): median "
          f"{statistics.median(baselines):.2f} s")
    if args.slowest:
        _, middle = sorted(results, key=lambda r: r[0])[len(results) // 2]
        for seconds, task in sorted(task_times(middle.artifact_dir), reverse=True)[:args.slowest]:
            print(f"  {seconds:6.3f} s  {task}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
