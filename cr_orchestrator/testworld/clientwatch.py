"""What a client sees: outage through the shared IP, and split brain, watched continuously.

Run inside the lab's client namespace (needs root for the raw ARP socket)::

    ip netns exec NS python -m cr_orchestrator.testworld.clientwatch \\
        --shared-ip 198.18.0.100 --host mail-a=198.18.0.11 --host mail-b=198.18.0.12 \\
        --out watch.jsonl --interval 0.1

Every interval it starts one sample and writes it as one JSON line when done: the time it
started, whether the service answered through the shared IP (SMTP greeting ``220``),
which MAC addresses answered ARP for the shared IP, and which hosts greet on their own
service address. Samples overlap: one that waits for a timeout (a connection to an
address nobody answers for) does not hold back the next, so the end of an outage is seen
within one interval, not one timeout (sampling one after the other measured outages in
steps of ~1.2 s). Lines may come out of start order; :func:`read_samples` sorts them.
Two MACs for the shared IP, or two hosts greeting at once, is split brain. :func:`summarise`
turns the lines into the outage and violation figures that the demo, the scenario tests and the benchmark report.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ETH_P_ARP = 0x0806


def smtp_greets(address: str, *, port: int = 25, timeout_s: float = 0.5) -> bool:
    """True when a server at ``address`` sends an SMTP ``220`` greeting in time."""
    try:
        with socket.create_connection((address, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            return sock.recv(512).startswith(b"220")
    except OSError:
        return False


def _arp_probe(src_mac: bytes, target_ip: str) -> bytes:
    ether = b"\xff" * 6 + src_mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)  # ethernet/IPv4, request
    arp += src_mac + b"\x00" * 4 + b"\x00" * 6 + socket.inet_aton(target_ip)  # sender IP 0
    return ether + arp


# Each probe's own MAC (locally administered; this process's prefix, so that two watchers
# on one segment never share one), from a small ring: a few bridge entries, never two
# probes in flight with the same one (samples overlap by a handful at most).
_PROBE_PREFIX = bytes([0x02]) + os.urandom(4)
_PROBE_MACS = itertools.count()


def arp_holders(iface: str, target_ip: str, *, wait_s: float = 0.15) -> set[str]:
    """MAC addresses that answer an ARP probe for ``target_ip`` on ``iface``.

    The probe (RFC 5227: sender IP 0.0.0.0, so no holder's neighbour cache changes) is
    sent from a MAC address of its own, and holders answer to that address: a reply
    counted here answers this probe. Counting every ARP reply seen in the window also
    counted replies to an overlapping sample's probe or to the client kernel's own
    requests, and a handover between two of those looked like two holders at once."""
    own = _PROBE_PREFIX + bytes([next(_PROBE_MACS) % 64])
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((iface, ETH_P_ARP))
        sock.send(_arp_probe(own, target_ip))
        holders: set[str] = set()
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                frame = sock.recv(128)
            except TimeoutError:
                break
            opcode = struct.unpack("!H", frame[20:22])[0]
            sender_ip = socket.inet_ntoa(frame[28:32])
            if opcode == 2 and sender_ip == target_ip and frame[32:38] == own:
                holders.add(frame[22:28].hex(":"))
        return holders


def default_interface() -> str:
    names = [name for _, name in socket.if_nameindex() if name != "lo"]
    if len(names) != 1:
        raise SystemExit(f"clientwatch: pass --iface (interfaces here: {', '.join(names)})")
    return names[0]


def watch_once(*, iface: str, shared_ip: str, hosts: dict[str, str], port: int) -> dict:
    """One sample: what the client sees right now."""
    started = time.time()
    return {
        "t": started,
        "shared_ip_serves": smtp_greets(shared_ip, port=port),
        "arp_holders": sorted(arp_holders(iface, shared_ip)),
        "serving_hosts": sorted(h for h, a in hosts.items() if smtp_greets(a, port=port)),
    }


@dataclass(frozen=True)
class WatchSummary:
    samples: int
    longest_outage_s: float  # longest run without a greeting through the shared IP
    outage_started_at: float | None
    outage_ended_at: float | None
    split_brain_samples: int  # samples with two ARP holders or two serving hosts

    def sentence(self) -> str:
        brain = "never" if not self.split_brain_samples else f"{self.split_brain_samples} samples"
        return (
            f"{self.samples} samples; longest outage through the shared IP "
            f"{self.longest_outage_s:.2f} s; two holders or two serving hosts: {brain}"
        )


def summarise(samples: list[dict]) -> WatchSummary:
    """Longest client-seen outage and split-brain count from watch samples."""
    longest, start, best = 0.0, None, (None, None)
    samples = sorted(samples, key=lambda s: s["t"])
    for sample in samples:
        if not sample["shared_ip_serves"]:
            start = sample["t"] if start is None else start
        elif start is not None:
            if sample["t"] - start > longest:
                longest, best = sample["t"] - start, (start, sample["t"])
            start = None
    if start is not None and samples and samples[-1]["t"] - start > longest:
        longest, best = samples[-1]["t"] - start, (start, None)
    split = sum(
        1 for s in samples if len(s["arp_holders"]) > 1 or len(s["serving_hosts"]) > 1
    )
    return WatchSummary(len(samples), longest, best[0], best[1], split)


def read_samples(path: Path) -> list[dict]:
    samples = []
    for line in path.read_text().splitlines():
        try:
            samples.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the last line may be cut by a stop mid-write
    return sorted(samples, key=lambda s: s["t"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clientwatch", description=__doc__.split("\n")[0])
    parser.add_argument("--shared-ip", required=True)
    parser.add_argument("--host", action="append", default=[], metavar="NAME=ADDRESS")
    parser.add_argument("--iface")
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--duration", type=float, default=600.0, help="stop after this long")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    hosts = {}
    for item in args.host:
        name, sep, address = item.partition("=")
        if not sep:
            parser.error(f"--host {item!r}: expected NAME=ADDRESS")
        hosts[name] = address
    iface = args.iface or default_interface()
    end = time.monotonic() + args.duration
    # enough workers for every sample in flight: each lasts at most ~0.5 s per timeout
    with args.out.open("a", buffering=1) as out, ThreadPoolExecutor(max_workers=32) as pool:
        pending = []
        while time.monotonic() < end:
            tick = time.monotonic()
            pending.append(pool.submit(watch_once, iface=iface, shared_ip=args.shared_ip,
                                       hosts=hosts, port=args.port))
            for done in [f for f in pending if f.done()]:
                pending.remove(done)
                out.write(json.dumps(done.result()) + "\n")
            time.sleep(max(0.0, args.interval - (time.monotonic() - tick)))
        for last in pending:
            out.write(json.dumps(last.result()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def wait_until(what: str, predicate, *, timeout_s: float, every_s: float = 0.2):
    """Poll ``predicate`` until it returns something truthy; return it, or raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise TimeoutError(f"gave up waiting {timeout_s:.0f} s for {what}")


def outage_around(samples: list[dict], t: float) -> float | None:
    """The outage that began at or after ``t`` (a crash): seconds from the last answer
    through the shared IP before its first failed sample to the first answer after that
    (None until the service answers again). Samples that started just after ``t``, before
    the fault took hold, still answered: they are before the outage, not its end."""
    ordered = sorted(samples, key=lambda s: s["t"])
    first_fail = next((s["t"] for s in ordered
                       if s["t"] >= t and not s["shared_ip_serves"]), None)
    if first_fail is None:
        return None
    before = [s["t"] for s in ordered if s["t"] < first_fail and s["shared_ip_serves"]]
    after = [s["t"] for s in ordered if s["t"] > first_fail and s["shared_ip_serves"]]
    return (min(after) - max(before)) if before and after else None


class WatchProcess:
    """This watcher running in a lab's client namespace, writing to ``out``."""

    def __init__(self, lab, out: Path, *, interval_s: float = 0.1) -> None:
        self.out = out
        hosts = [f"--host={name}={addr.public}" for name, addr in lab.hosts.items()]
        argv = [sys.executable, "-m", "cr_orchestrator.testworld.clientwatch", "--shared-ip",
                lab.shared_ip, "--out", str(out), "--interval", str(interval_s), *hosts]
        import subprocess

        self.proc = subprocess.Popen(lab.host_argv("client", argv), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_until("the client watch to start", lambda: len(self.samples()) >= 3,
                   timeout_s=20, every_s=0.1)

    def samples(self) -> list[dict]:
        return read_samples(self.out) if self.out.exists() else []

    def outage_after(self, t: float, *, timeout_s: float) -> float:
        """Wait until the service answers through the shared IP after ``t``; the outage."""
        return wait_until("the service through the shared IP",
                          lambda: outage_around(self.samples(), t), timeout_s=timeout_s,
                          every_s=0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
