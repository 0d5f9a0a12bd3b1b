"""Does a notification receiver that is down delay a failover? Crash the primary N times
with no ``cr_notify`` and N times with ``cr_notify`` naming a webhook that accepts
connections and never answers (every try costs the notifier its whole 5 s timeout, six
tries per note), and compare crash → promotion, crash → failover playbook done and the
client-seen outage (a sample every 0.1 s from the client namespace).

    sudo .venv/bin/python bench/notify_failover_bench.py --trials 3

Prints each trial and the medians; the figures go to docs/console.md by hand. Needs root
(the lab; its own name and addresses, set with --lab/--base).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cr_orchestrator.testworld.clientwatch import WatchProcess, wait_until  # noqa: E402
from cr_orchestrator.testworld.lab import Lab  # noqa: E402


class Hanging:
    """Accepts, never answers; counts the tries."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.tries: list[float] = []
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.tries.append(time.time())
            self.held.append(conn)


def wait(what: str, predicate, timeout_s: float, every_s: float = 0.1):
    return wait_until(what, predicate, timeout_s=timeout_s, every_s=every_s)


def inventory(lab: Lab, workdir: Path, notify: dict | None) -> str:
    inv = yaml.safe_load(Path(lab.inventory_path).read_text())
    group = inv["all"]["children"]["cr_cluster_mail"]["vars"]
    group["cr_policy"] = {"max_failovers": 1000}  # every trial is a failover
    for replica_set in group.get("cr_replica_sets", []):
        replica_set["every"] = "5s"
    if notify:
        group["cr_notify"] = notify
    path = workdir / f"hosts-{'notify' if notify else 'plain'}.yml"
    path.write_text(yaml.safe_dump(inv))
    path.chmod(0o600)
    return str(path)


def trials(lab: Lab, config: str, n: int, workdir: Path, hanging: Hanging) -> list[dict]:
    from cr_orchestrator.state.cluster import ClusterState, connect

    notify = {"webhooks": [{"url": hanging.url}]} if config == "hanging-receiver" else None
    prefix = f"crbench-{uuid.uuid4().hex[:6]}"
    client = connect()
    state = ClusterState(client, prefix)
    log = (workdir / f"run-{config}.log").open("ab")
    run = subprocess.Popen([sys.executable, "-m", "cr_orchestrator.cli", "run", "-i",
                            inventory(lab, workdir, notify), "--prefix", prefix],
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    out = []
    try:
        wait("the first decision", lambda: state.last_decision("mail"), 60)
        for trial in range(n):
            primary = state.primary("mail") or "mail-a"
            other = "mail-b" if primary == "mail-a" else "mail-a"
            wait("a healthy cluster", lambda: state.last_decision("mail")["action"] == "none"
                 and "down" not in state.last_decision("mail")["reason"], 120, 0.5)
            settled = time.time()
            wait(f"a sync to {other}", lambda: any(
                e.kind == "sync" and e.data.get("target") == other and e.data.get("ok")
                for e in state.events("mail", count=200) if e.at > settled), 60, 0.5)
            watch = WatchProcess(lab, workdir / f"watch-{config}-{trial}.jsonl")
            tries_before = len(hanging.tries)
            crash_at = time.time()
            lab.fail(primary, "crash")
            try:
                wait(f"failover to {other}", lambda: state.primary("mail") == other, 120)
                outage = watch.outage_after(crash_at, timeout_s=60)
            finally:
                watch.stop()
            play = wait("the failover playbook", lambda: next(
                (e for e in state.events("mail", count=300) if e.kind == "playbook"
                 and e.data.get("playbook") == "failover" and e.at > crash_at), None), 60)
            promoted = next(e for e in state.events("mail", count=300)
                            if e.kind == "promotion" and e.at > crash_at)
            row = {"promoted": promoted.at - crash_at, "done": play.at - crash_at,
                   "outage": outage, "hanging_tries": len(hanging.tries) - tries_before}
            out.append(row)
            print(f"  {config} trial {trial + 1}: {primary} -> {other}: promoted "
                  f"+{row['promoted']:.2f} s, playbook done +{row['done']:.2f} s, client outage "
                  f"{outage:.2f} s; tries at the hanging receiver so far: {row['hanging_tries']}",
                  flush=True)
            healed_at = time.time()
            lab.heal(primary)
            wait(f"{primary} resynced", lambda: any(
                e.kind == "sync" and e.data.get("target") == primary and e.data.get("ok")
                for e in state.events("mail", count=200) if e.at > healed_at), 180, 0.5)
    finally:
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
        log.close()
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--lab", default="nfb")
    parser.add_argument("--base", default="198.18.160.0/20")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("notify_failover_bench: needs root (the lab)", file=sys.stderr)
        return 2
    workdir = Path(f"/tmp/cr-notify-bench-{args.lab}")
    workdir.mkdir(parents=True, exist_ok=True)
    already = Path(f"/var/lib/cr-lab/{args.lab}/lab.json").exists()
    lab = Lab.up(name=args.lab, base=args.base)
    hanging = Hanging()
    results = {}
    try:
        for config in ("no-notify", "hanging-receiver"):
            results[config] = trials(lab, config, args.trials, workdir, hanging)
    finally:
        if not already:
            lab.down()
    print(f"\nmedians over {args.trials} crashes of the primary each (seconds after the crash):")
    print(f"{'configuration':18} {'promoted':>9} {'done':>7} {'outage':>7}")
    for config, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("promoted", "done", "outage")}
        print(f"{config:18} {med['promoted']:9.2f} {med['done']:7.2f} {med['outage']:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
