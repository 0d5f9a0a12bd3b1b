"""`lab down` leaves nothing behind, also after an `up` that died half-way.

Runs last in this directory (file order): it takes the session lab down and brings it
back, so tests that run after it still find a lab.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

from cr_orchestrator.testworld.lab import Lab
from cr_orchestrator.testworld.lab.netns import namespaces, ns_pids, pid_alive, root_links

pytestmark = pytest.mark.lab

CRCTL = os.path.join(os.path.dirname(sys.executable), "crctl")


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return [p for p in found if p != os.getpid() and pid_alive(p)]


def _assert_nothing_left(lab, old_pids: set[int]) -> None:
    prefix = f"{lab.name}-"
    assert namespaces(prefix) == [], "namespaces left (the switch namespace holds the bridges)"
    assert root_links(prefix) == [], "veths left in the root namespace"
    assert [p for p in old_pids if pid_alive(p)] == [], "lab processes survived"
    assert _processes_mentioning(lab.state_dir) == [], "processes still use the lab's state dir"
    assert not os.path.exists(lab.state_dir)
    if os.path.isdir("/etc/netns"):
        assert not [e for e in os.listdir("/etc/netns") if e.startswith(prefix)]


def _leftovers_of_a_half_finished_up(lab) -> int:
    """What an `up` killed half-way leaves: a namespace with a process in it, a root veth."""
    ns = f"{lab.name}-mail-a"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "link", "add", f"{lab.name}-apub", "type", "veth", "peer", "name",
                    "eth0", "netns", ns], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "300"], start_new_session=True)
    return sleeper.pid


def test_down_removes_everything_and_up_recovers_from_a_half_finished_run(lab):
    old_pids = {p for h in lab.hosts.values() for p in ns_pids(h.namespace)}
    old_pids |= set(ns_pids(f"{lab.name}-dns"))
    assert old_pids, "the lab had no processes to begin with"
    lab.down()
    _assert_nothing_left(lab, old_pids)

    sleeper = _leftovers_of_a_half_finished_up(lab)
    proc = subprocess.run([CRCTL, "lab", "down", "--name", lab.name], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    _assert_nothing_left(lab, {sleeper})

    sleeper = _leftovers_of_a_half_finished_up(lab)
    again = Lab.up(name=lab.name, base=lab.plan.base)
    assert not pid_alive(sleeper)
    ssh = subprocess.run(again.ssh_argv("mail-a", "hostname"), capture_output=True, text=True,
                         timeout=30)
    assert ssh.stdout.strip() == "mail-a", ssh.stderr


def test_windows_hosts_serve_ws_man_and_take_faults(lab):
    """`--windows 1`: win-1 runs the WS-Man simulator as its service (then the default lab is back)."""
    import winrm  # a dependency of the project: its absence is a failure, not a skip

    from cr_orchestrator.testworld.lab import windows

    assert windows.default_service_argv() is not None, "the WS-Man simulator is missing"
    lab.down()
    wlab = Lab.up(name=lab.name, base=lab.plan.base, windows=1)
    secret = windows.password(wlab.name).encode()
    leaks: list[str] = []
    try:
        addr = wlab.hosts["win-1"].cluster
        session = winrm.Session(f"http://{addr}:5985/wsman", transport="basic",
                                auth=(windows.WSMAN_USER, windows.password(wlab.name)))
        reply = session.run_cmd("ipconfig")  # a full WS-Man shell exchange with the simulator
        assert isinstance(reply.status_code, int)
        wlab.fail("win-1", "service")
        with pytest.raises(Exception):  # noqa: B017 - any failure: the service is gone
            session.run_cmd("ipconfig")
        wlab.heal("win-1")  # returns once the simulator listens again
        assert isinstance(session.run_cmd("ipconfig").status_code, int)
    finally:
        wlab.down()
        # the simulator was killed once (the fault) and stopped once (down): neither may
        # leave the Windows password in a file under the temporary directory
        leaks = _files_holding(secret, tempfile.gettempdir())
        Lab.up(name=lab.name, base=lab.plan.base)
    assert leaks == [], f"the lab's Windows password is still on disk in {leaks}"


def _files_holding(secret: bytes, top: str) -> list[str]:
    found = []
    for root, _dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            try:
                if os.path.isfile(path) and os.path.getsize(path) < 10 << 20:
                    with open(path, "rb") as f:
                        if secret in f.read():
                            found.append(path)
            except OSError:
                pass
    return found
