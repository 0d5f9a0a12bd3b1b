"""Probe round timings: a whole lab cluster round (warm and cold SSH), and a batch of
concurrent protocol checks on loopback.

- round:  probe_cluster() against the lab's `mail` cluster (3 host probes over SSH, the
          protocol checks of every member and the shared IP, peer checks from 2 peers).
          "cold" removes the ControlMaster sockets first (new SSH connections); "warm"
          reuses them. Median and max of N rounds.
- checks: N SMTP greeting checks run concurrently by protocol.run_checks against one
          loopback banner server: wall time of the batch.

Usage: CR_LAB_NAME=pr .venv/bin/python bench/probe_round.py [--rounds 10] [--checks 200]
       (the round part needs the lab; it is skipped when the inventory is missing)
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import threading
import time

from cr_orchestrator.model import Check, CheckKind
from cr_orchestrator.observe.round import probe_cluster, protocol, linux_host


def bench_rounds(inventory: str, rounds: int) -> None:
    from cr_orchestrator.inventory import load_topology

    topology = load_topology(inventory)
    cluster = topology.cluster("mail")
    primary = cluster.configured_primary
    for mode in ("cold", "warm"):
        times, counts = [], []
        for _ in range(rounds if mode == "warm" else 3):
            if mode == "cold":
                shutil.rmtree(linux_host.default_control_dir(), ignore_errors=True)
                time.sleep(0.5)
            started = time.monotonic()
            obs = probe_cluster(topology=topology, cluster=cluster, primary=primary,
                                timeout_s=cluster.policy.probe_timeout_s)
            times.append(time.monotonic() - started)
            counts.append(sum(o.health.value == "ok" for o in obs))
        print(f"round {mode}: {len(times)} rounds, median {statistics.median(times):.3f}s, "
              f"max {max(times):.3f}s, ok observations per round {min(counts)}-{max(counts)} "
              f"of {len(obs)}")


def bench_checks(n: int) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(512)
    port = server.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"220 bench ESMTP\r\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    targets = [protocol.CheckTarget(f"h{i}", "127.0.0.1", Check(CheckKind.SMTP, port))
               for i in range(n)]
    protocol.run_checks(targets=targets[:10], timeout_s=5)  # warm the interpreter
    started = time.monotonic()
    obs = protocol.run_checks(targets=targets, timeout_s=5)
    wall = time.monotonic() - started
    ok = sum(o.health.value == "ok" for o in obs)
    print(f"checks: {n} concurrent SMTP greeting checks in {wall:.3f}s ({ok} ok)")
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--checks", type=int, default=200)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    bench_checks(args.checks)
    inventory = f"/var/lib/cr-lab/{os.environ.get('CR_LAB_NAME', 'crlab')}/inventory/hosts.yml"
    if os.path.exists(inventory):
        bench_rounds(inventory, args.rounds)
    else:
        print(f"round: skipped, no lab inventory at {inventory}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
