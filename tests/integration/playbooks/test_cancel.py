"""Cancelling a run in the middle of a task leaves no Ansible process behind."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from cr_orchestrator.act.playbook_runner import run_playbook

pytestmark = pytest.mark.lab
SLOW = Path(__file__).with_name("slow.yml")


def processes_matching(*needles: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(n in cmdline for n in needles):
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def test_cancel_in_the_middle_of_a_task_leaves_no_ansible_process(lab, artifacts):
    seconds = f"{random.randint(200, 299)}.{random.randint(10, 99)}"  # unique: findable
    cancel, in_task = threading.Event(), threading.Event()
    outcome = {}

    def on_event(event):
        if event.get("event") == "runner_on_start" and \
                event.get("event_data", {}).get("task") == "Sleep on the host":
            in_task.set()

    def work():
        outcome["result"] = run_playbook(
            playbook=str(SLOW), inventory=lab.inventory_path, timeout_s=120, on_event=on_event,
            cancel=cancel, mark_remote=True, extravars={"cr_new_primary": "mail-a", "cr_test_sleep": seconds})

    thread = threading.Thread(target=work)
    thread.start()
    assert in_task.wait(60), "the slow task never started"
    deadline = time.monotonic() + 30
    while not processes_matching(f"sleep {seconds}") and time.monotonic() < deadline:
        time.sleep(0.1)  # the module runs on mail-a (same process table here)
    assert processes_matching(f"sleep {seconds}"), "the module never ran on mail-a"
    cancel.set()
    thread.join(60)
    assert not thread.is_alive()
    result = outcome["result"]
    assert result.status == "canceled" and not result.ok
    assert "cancelled during task 'Sleep on the host' on mail-a" in result.summary

    # Ansible's processes: ansible-playbook and its workers (their command line names the
    # playbook), the workers' ssh clients and the module wrapper on the host (pipelining
    # runs "/bin/sh -c '<python> && sleep 0'"), the module itself (AnsiballZ).
    needles = (str(SLOW), "&& sleep 0", "AnsiballZ", result.ident)
    leftovers = processes_matching(*needles)
    deadline = time.monotonic() + 5
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.2)
        leftovers = processes_matching(*needles)
    assert leftovers == []
    # What the module had started on the host: sshd does not signal it when the session
    # goes; the runner stops it by its run mark.
    assert processes_matching(f"sleep {seconds}") == []
    assert "stopped its left-overs on mail-a" in result.summary
