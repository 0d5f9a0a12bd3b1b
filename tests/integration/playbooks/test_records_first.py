"""A new primary never serves without its records: on every path that starts the mail
service (the roles' failover, the one-script take-over, a restart in place, and a
failover run again at the same epoch after its first run was killed), the host's epoch
record and its "primary N" role record are on its disk before the first SMTP greeting.

A watcher runs on the new primary itself: it connects to its own port 25 every few
milliseconds and, at the first connection that succeeds, reads the two records.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.lab

WATCH = r"""
import json, socket, sys, time
address, epoch_file, role_file = sys.argv[1], sys.argv[2], sys.argv[3]
deadline = time.monotonic() + float(sys.argv[4])

def read(path):
    try:
        return open(path).read().strip()
    except FileNotFoundError:
        return None

print("ready", flush=True)
while time.monotonic() < deadline:
    try:
        socket.create_connection((address, 25), timeout=0.05).close()
    except OSError:
        time.sleep(0.003)
        continue
    print(json.dumps({"epoch": read(epoch_file), "role": read(role_file)}), flush=True)
    sys.exit(0)
print(json.dumps({"timeout": True}), flush=True)
"""


class FirstGreeting:
    """What ``host``'s records held when its SMTP port first accepted a connection."""

    def __init__(self, lab, host: str, *, limit_s: float = 120) -> None:
        address = lab.hosts[host].public
        argv = lab.host_argv(host, [sys.executable, "-c", WATCH, address,
                                    "/var/lib/cr-orchestrator/mail.epoch",
                                    "/var/lib/cr-orchestrator/mail.role", str(limit_s)])
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def records(self) -> dict:
        out, _ = self.proc.communicate(timeout=150)
        return json.loads(out.strip().splitlines()[-1])


def stopped_without_records(lab, host: str) -> None:
    lab.run_on(host, [lab.mailctl, "stop"], check=True)
    for name in ("mail.epoch", "mail.role"):
        lab.run_on(host, f"rm -f /var/lib/cr-orchestrator/{name}")


def test_failover_through_the_roles_records_before_the_new_primary_greets(lab, orders):
    start = orders.run("failover", new="mail-a", old="mail-b")
    assert start.ok, start.summary
    stopped_without_records(lab, "mail-b")
    watch = FirstGreeting(lab, "mail-b")
    moved = orders.run("failover", new="mail-b", old="mail-a")
    assert moved.ok, moved.summary
    assert watch.records() == {"epoch": str(orders.epoch), "role": f"primary {orders.epoch}"}
    assert orders.recorded_role("mail-a") == f"secondary {orders.epoch}"


def test_the_one_script_take_over_records_before_the_new_primary_greets(lab, orders):
    start = orders.run("failover", new="mail-a", old="mail-b")
    assert start.ok, start.summary
    stopped_without_records(lab, "mail-b")
    lab.fail("mail-a", "crash")
    try:
        watch = FirstGreeting(lab, "mail-b")
        moved = orders.run("failover", new="mail-b", old="mail-a", cr_old_primary_down=True, cr_fast_take_over=True)
        assert moved.ok, moved.summary
        assert watch.records() == {"epoch": str(orders.epoch),
                                   "role": f"primary {orders.epoch}"}
    finally:
        lab.heal("mail-a")


def test_a_restart_in_place_records_before_the_service_greets(lab, orders):
    start = orders.run("failover", new="mail-b", old="mail-a")
    assert start.ok, start.summary
    stopped_without_records(lab, "mail-b")  # as a failover killed before its fence step
    watch = FirstGreeting(lab, "mail-b")
    restarted = orders.run("service", new="mail-b", epoch=orders.epoch,
                           cr_service_action="restarted")
    assert restarted.ok, restarted.summary
    assert watch.records() == {"epoch": str(orders.epoch), "role": f"primary {orders.epoch}"}


def test_a_failover_killed_before_its_fence_step_then_resumed_records_first(lab, orders):
    """The resumed run (the same playbook at the same epoch, what ``resume`` does) writes
    the records that the killed run never reached, before the service greets."""
    from cr_orchestrator.act.playbook_runner import run_playbook

    start = orders.run("failover", new="mail-a", old="mail-b")
    assert start.ok, start.summary
    stopped_without_records(lab, "mail-b")
    epoch = orders.next_epoch()
    kill = threading.Event()
    threading.Timer(0.2, kill.set).start()  # long before Ansible reaches a host
    killed = run_playbook(playbook="failover", inventory=lab.inventory_path, extravars={
        "cr_cluster": "mail", "cr_new_primary": "mail-b", "cr_old_primary": "mail-a",
        "cr_epoch": epoch}, timeout_s=120, cancel=kill)
    assert not killed.ok
    time.sleep(0.5)
    assert orders.recorded_role("mail-b") is None and not orders.service_runs("mail-b")
    watch = FirstGreeting(lab, "mail-b")
    resumed = orders.run("failover", new="mail-b", old="mail-a", epoch=epoch)
    assert resumed.ok, resumed.summary
    assert watch.records() == {"epoch": str(epoch), "role": f"primary {epoch}"}
