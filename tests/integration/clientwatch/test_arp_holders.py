"""The client watcher really sees two hosts answering ARP for one address.

Builds its own three namespaces on a bridge (independent of the lab), gives the same
address to two of them, and asks the watcher from the third.
"""

import os
import subprocess
import sys
import uuid

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

SUBNET = "198.19.250"


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


@pytest.fixture
def segment():
    tag = uuid.uuid4().hex[:4]
    bridge, names = f"cwbr{tag}", [f"cw{tag}{i}" for i in range(3)]
    try:
        sh("ip", "link", "add", bridge, "type", "bridge")
        sh("ip", "link", "set", bridge, "up")
        for i, ns in enumerate(names):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", f"{ns}h", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", f"{ns}h", "master", bridge, "up")
            sh("ip", "-n", ns, "addr", "add", f"{SUBNET}.{10 + i}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield names
    finally:
        for ns in names:
            sh("ip", "netns", "del", ns, check=False)
            sh("ip", "link", "del", f"{ns}h", check=False)
        sh("ip", "link", "del", bridge, check=False)


def holders_seen_from(ns: str, address: str) -> list[str]:
    code = (
        "import json; from cr_orchestrator.testworld.clientwatch import arp_holders; "
        f"print(json.dumps(sorted(arp_holders('eth0', '{address}', wait_s=0.5))))"
    )
    out = sh("ip", "netns", "exec", ns, sys.executable, "-c", code).stdout
    return __import__("json").loads(out)


def test_one_holder_then_two_holders_of_the_shared_ip(segment):
    client, host_a, host_b = segment
    shared = f"{SUBNET}.100"
    sh("ip", "-n", host_a, "addr", "add", f"{shared}/24", "dev", "eth0")
    assert len(holders_seen_from(client, shared)) == 1
    # Duplicate address detection is off for IPv4: the second add succeeds, as on a
    # misbehaving cluster, and both answer ARP.
    sh("ip", "-n", host_b, "addr", "add", f"{shared}/24", "dev", "eth0")
    assert len(holders_seen_from(client, shared)) == 2
    sh("ip", "-n", host_a, "addr", "del", f"{shared}/24", "dev", "eth0")
    sh("ip", "-n", host_b, "addr", "del", f"{shared}/24", "dev", "eth0")
    assert holders_seen_from(client, shared) == []


def test_a_handover_between_two_overlapping_samples_is_not_two_holders(segment):
    """The watch's samples overlap: one still listening when the next probes. A move of
    the address in between must not make the first count the second's answer."""
    import threading

    client, host_a, host_b = segment
    shared = f"{SUBNET}.101"
    sh("ip", "-n", host_a, "addr", "add", f"{shared}/24", "dev", "eth0")
    code = ("import json, threading, time; from cr_orchestrator.testworld.clientwatch import "
            "arp_holders; first = {}; "
            "t = threading.Thread(target=lambda: first.update(h=sorted(arp_holders("
            f"'eth0', '{shared}', wait_s=1.5)))); t.start(); time.sleep(0.5); "
            "print(input(), flush=True); input(); "
            f"second = sorted(arp_holders('eth0', '{shared}', wait_s=0.3)); t.join(); "
            "print(json.dumps([first['h'], second]))")
    proc = subprocess.Popen(["ip", "netns", "exec", client, sys.executable, "-c", code],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    proc.stdin.write("first probe answered\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "first probe answered"
    # the first sample still listens: the address moves, and a second sample probes
    sh("ip", "-n", host_a, "addr", "del", f"{shared}/24", "dev", "eth0")
    sh("ip", "-n", host_b, "addr", "add", f"{shared}/24", "dev", "eth0")
    proc.stdin.write("moved\n")
    proc.stdin.close()
    first, second = __import__("json").loads(proc.stdout.readline())
    proc.wait(timeout=10)
    sh("ip", "-n", host_b, "addr", "del", f"{shared}/24", "dev", "eth0")
    assert len(first) == 1 and len(second) == 1, (first, second)
    assert first != second  # each sample saw the holder of its own moment
