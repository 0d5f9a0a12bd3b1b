"""Continuous replication benchmark: latency, RPO and CPU, next to the interval mode.

Usage (as root, with a lab up)::

    CR_LAB_NAME=rep CR_LAB_BASE=198.18.32.0/20 .venv/bin/crctl lab up --name rep --base 198.18.32.0/20
    CR_LAB_NAME=rep .venv/bin/python bench/continuous_bench.py [--record]

SMTP load goes to mail-a's mail service (its Maildir, /srv/mail/Maildir, replicated to
mail-b). mail-b's Maildir is listed every 20 ms; a message's latency is the time from
its acknowledgement (the client's 250) to the listing that first shows it on mail-b.

RPO ("crash with disk lost"): at random moments of the load, mail-b's Maildir is
snapshotted by name; every message acknowledged before that moment and absent from the
snapshot would be lost with mail-a's disk. The RPO of a trial is the age of the oldest
such message at that moment (0 when none is missing). A real crash stops mail-a at
that moment; the snapshot stops counting there too (what lands later is not counted),
so no host has to be crashed and rebuilt per trial.

CPU (``--cpu-only`` runs just this part): a writer delivers 20 and 200 messages/s
straight into mail-a's Maildir (tmp/, then a link into new/, as a delivery agent does;
the lab's one-threaded SMTP server does not reach 200/s). Counted: the CPU time of
every process in mail-a's network namespace (sshd and its sessions, inotifywait, the
rsync sender) and the orchestrator's (this process and its ssh children, the writer's
own CPU taken out), each minus the same window without replication.

Modes: ``continuous`` (``batch`` 0.5 s, ``every`` 300 s: no periodic pass in the window)
and ``interval`` (a full pass every ``--every`` seconds, as the periodic mode does).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import resource
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cr_orchestrator.act.changes import Env, sync_sets  # noqa: E402
from cr_orchestrator.act.sync.watcher import SetWatcher  # noqa: E402
from cr_orchestrator.model import ReplicaSet, ReplicaTarget  # noqa: E402
from cr_orchestrator.state.cluster import ClusterState, connect, default_redis_url  # noqa: E402
from cr_orchestrator.state.freshness import FreshnessStore  # noqa: E402
from cr_orchestrator.testworld.lab import Lab, lab_from_env  # noqa: E402
from cr_orchestrator.testworld.lab.mailload import read_attempts  # noqa: E402

PATH = "/srv/mail/Maildir"
POLL_S = 0.02
TICKS = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Run:
    mode: str
    rate: float
    acked: int
    sent: int
    latencies: list[float]
    unseen: int
    rpo: list[tuple[float, int]]  # (seconds of mail lost, messages lost) per trial
    cpu_host_s: float
    cpu_orch_s: float
    seconds: float


def names(root: str) -> set[str]:
    out: set[str] = set()
    for sub in ("new", "cur"):
        try:
            out.update(f"{sub}/{n}" for n in os.listdir(os.path.join(root, sub)))
        except FileNotFoundError:
            pass
    return out


def seq_by_name(root: str, run: str) -> dict[str, int]:
    out = {}
    for name in names(root):
        try:
            with open(os.path.join(root, name), "rb") as fh:
                head = fh.read(600).decode(errors="replace")
        except FileNotFoundError:
            continue
        for line in head.splitlines():
            if line.startswith(f"X-Cr-Load: {run} "):
                out[name] = int(line.split()[2])
    return out


def netns_cpu_s(lab: Lab, host: str) -> float:
    """utime+stime+cutime+cstime of every process in ``host``'s network namespace."""
    want = os.readlink(f"/proc/{lab.pid(f'holder:{host}')}/ns/net")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{pid}/ns/net") != want:
                continue
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / TICKS


def own_cpu_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def start_load(lab: Lab, to: str, rate: float, run: str, out_dir: Path) -> list[tuple[subprocess.Popen, Path]]:
    """Enough sequential senders for ``rate`` messages/s (one SMTP connection each)."""
    senders = max(1, round(rate / 20))
    every = senders / rate
    procs = []
    for i in range(senders):
        out = out_dir / f"load-{run}-{i}.jsonl"
        argv = [sys.executable, "-m", "cr_orchestrator.testworld.lab.mailload", "--to", to,
                "--every", f"{every:.4f}", "--timeout", "2", "--run", f"{run}", "--out", str(out)]
        procs.append((subprocess.Popen(lab.host_argv("client", argv), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL), out))
    return procs


def one_run(lab, topo, redis_client, *, mode: str, rate: float, seconds: float, trials: int,
            every_s: float, out_dir: Path) -> Run:
    cluster = topo.cluster("mail")
    rs = ReplicaSet(name="maildir", path=PATH, every_s=300.0 if mode == "continuous" else every_s,
                    continuous=mode == "continuous", batch_s=0.5,
                    targets=(ReplicaTarget("mail-b", PATH),))
    cluster = dataclasses.replace(cluster, replica_sets=(rs,))
    topo = dataclasses.replace(topo, clusters={**topo.clusters, "mail": cluster})
    prefix = f"crbench-{uuid.uuid4().hex[:8]}"
    state = ClusterState(redis_client, prefix)
    state.ensure(cluster="mail", configured_primary="mail-a")
    env = Env(topology=topo, redis=redis_client, prefix=prefix)
    store = FreshnessStore(redis_client, prefix)
    stop = threading.Event()
    sync_sets(env, cluster, sets=["maildir"])  # both modes start from a copy
    worker: threading.Thread | None = None
    watcher = None
    if mode == "continuous":
        watcher = SetWatcher(topology=topo, cluster=cluster, replica_set=rs, state=state,
                             store=store, full_pass=lambda: sync_sets(env, cluster, sets=["maildir"]))
        worker = threading.Thread(target=watcher.run, daemon=True)
        worker.start()
        deadline = time.monotonic() + 60
        while not (watcher.watching_since and store.get(cluster="mail", set_name="maildir",
                                                        host="mail-b").last_success_started_at
                   and store.get(cluster="mail", set_name="maildir", host="mail-b")
                   .last_success_started_at > watcher.watching_since):
            if time.monotonic() > deadline:
                raise SystemExit("the watch was not established within 60 s")
            time.sleep(0.1)
    elif mode == "interval":
        def periodic() -> None:
            while not stop.wait(every_s):
                sync_sets(env, cluster, sets=["maildir"])
        worker = threading.Thread(target=periodic, daemon=True)
        worker.start()
    run = uuid.uuid4().hex[:8]
    secondary = lab.data_dir("mail-b") + "/mail/Maildir"
    primary = lab.data_dir("mail-a") + "/mail/Maildir"
    host0, orch0 = netns_cpu_s(lab, "mail-a"), own_cpu_s()
    t0 = time.time()
    load = start_load(lab, topo.hosts["mail-a"].service_address, rate, run, out_dir)
    # trial moments: after a warm-up of 2 s, at random through the window
    rng = random.Random(run)
    moments = sorted(t0 + 2 + rng.random() * (seconds - 2) for _ in range(trials))
    snapshots: list[tuple[float, set[str]]] = []
    seen_at: dict[str, float] = {}
    try:
        while time.time() < t0 + seconds:
            now = time.time()
            current = names(secondary)
            for name in current - seen_at.keys():
                seen_at[name] = now
            while moments and moments[0] <= now:
                snapshots.append((moments.pop(0), current))
            time.sleep(POLL_S)
    finally:
        for proc, _out in load:
            proc.terminate()
        for proc, _out in load:
            proc.wait(20)
    host_cpu, orch_cpu = netns_cpu_s(lab, "mail-a") - host0, own_cpu_s() - orch0
    window = time.time() - t0
    # the last messages of the window still get their latency (not counted for CPU)
    drain_until = time.time() + 5
    while time.time() < drain_until:
        now = time.time()
        for name in names(secondary) - seen_at.keys():
            seen_at[name] = now
        time.sleep(POLL_S)
    stop.set()
    if watcher is not None:
        watcher.stop()
    if worker is not None:
        worker.join(120)
    attempts = [a for _p, out in load for a in read_attempts(out)]
    acked = [a for a in attempts if a.acknowledged]
    by_seq = {seq: name for name, seq in seq_by_name(primary, run).items()}
    latencies, unseen = [], 0
    for a in acked:
        name = by_seq.get(a.seq)
        if name is None or name not in seen_at:
            unseen += 1
            continue
        latencies.append(max(0.0, seen_at[name] - a.done))
    rpo = []
    for moment, snap in snapshots:
        lost = [a for a in acked if a.done < moment and by_seq.get(a.seq) not in snap]
        rpo.append((moment - min(a.done for a in lost) if lost else 0.0, len(lost)))
    for key in redis_client.scan_iter(match=f"{prefix}:*"):
        redis_client.delete(key)
    return Run(mode, rate, len(acked), len(attempts), latencies, unseen, rpo, host_cpu,
               orch_cpu, window)


WRITER = r"""
import os, sys, time
root, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
body = b"From: w@lab.test\r\nSubject: cpu bench\r\n\r\n" + b"x" * 2000 + b"\r\n"
end, i, next_at = time.monotonic() + seconds, 0, time.monotonic()
while time.monotonic() < end:
    i += 1
    name = f"{time.time():.6f}.W{i}P{os.getpid()}.mail-a"
    tmp = os.path.join(root, "tmp", name)
    with open(tmp, "wb") as fh:
        fh.write(body)
    os.link(tmp, os.path.join(root, "new", name))  # as Maildir delivery does
    os.unlink(tmp)
    next_at += 1 / rate
    time.sleep(max(0.0, next_at - time.monotonic()))
print(i)
"""


def cpu_run(lab, topo, redis_client, *, mode: str, rate: float, seconds: float,
            every_s: float) -> tuple[float, float, int, float]:
    """(mail-a CPU s, orchestrator CPU s, batches or passes, messages written/s) while a
    writer delivers ``rate`` messages/s straight into mail-a's Maildir (tmp/, link into
    new/, as a delivery agent does), from the root namespace: neither side counts it."""
    cluster = topo.cluster("mail")
    rs = ReplicaSet(name="maildir", path=PATH, every_s=300.0 if mode == "continuous" else every_s,
                    continuous=mode == "continuous", batch_s=0.5,
                    targets=(ReplicaTarget("mail-b", PATH),))
    cluster = dataclasses.replace(cluster, replica_sets=(rs,))
    topo = dataclasses.replace(topo, clusters={**topo.clusters, "mail": cluster})
    prefix = f"crbench-{uuid.uuid4().hex[:8]}"
    state = ClusterState(redis_client, prefix)
    state.ensure(cluster="mail", configured_primary="mail-a")
    env = Env(topology=topo, redis=redis_client, prefix=prefix)
    store = FreshnessStore(redis_client, prefix)
    sync_sets(env, cluster, sets=["maildir"])
    stop = threading.Event()
    passes = [0]
    watcher = None
    worker = None
    if mode == "continuous":
        watcher = SetWatcher(topology=topo, cluster=cluster, replica_set=rs, state=state,
                             store=store, full_pass=lambda: sync_sets(env, cluster, sets=["maildir"]))
        worker = threading.Thread(target=watcher.run, daemon=True)
        worker.start()
        def caught_up() -> bool:
            since = watcher.watching_since if watcher else None
            fresh = store.get(cluster="mail", set_name="maildir",
                              host="mail-b").last_success_started_at
            return bool(since and fresh and fresh > since)
        while not caught_up():
            time.sleep(0.1)
    elif mode == "interval":
        def periodic() -> None:
            while not stop.wait(every_s):
                sync_sets(env, cluster, sets=["maildir"])
                passes[0] += 1
        worker = threading.Thread(target=periodic, daemon=True)
        worker.start()
    primary = lab.data_dir("mail-a") + "/mail/Maildir"
    host0, orch0, t0 = netns_cpu_s(lab, "mail-a"), own_cpu_s(), time.time()
    batches0 = watcher.batches if watcher else 0
    writer = subprocess.Popen([sys.executable, "-c", WRITER, primary, str(rate), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    written = int(writer.stdout.read().strip() or 0)
    _pid, _status, usage = os.wait4(writer.pid, 0)
    writer.returncode = 0
    window = time.time() - t0
    host_cpu = netns_cpu_s(lab, "mail-a") - host0
    # the writer is a waited child now: its own CPU is not the replication's
    orch_cpu = own_cpu_s() - orch0 - (usage.ru_utime + usage.ru_stime)
    stop.set()
    count = (watcher.batches - batches0) if watcher else passes[0]
    if watcher is not None:
        watcher.stop()
    if worker is not None:
        worker.join(120)
    for key in redis_client.scan_iter(match=f"{prefix}:*"):
        redis_client.delete(key)
    return host_cpu / window, orch_cpu / window, count, written / window


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="load window per run (30)")
    parser.add_argument("--trials", type=int, default=10, help="RPO moments per run (10)")
    parser.add_argument("--every", type=float, default=30.0,
                        help="the interval mode's every, in seconds (30)")
    parser.add_argument("--cpu-seconds", type=float, default=30.0,
                        help="window of each CPU run (30)")
    parser.add_argument("--cpu-only", action="store_true", help="only the CPU runs")
    parser.add_argument("--no-cpu", action="store_true", help="only latency and RPO")
    args = parser.parse_args()
    lab = Lab.load(name=lab_from_env()[0])
    from cr_orchestrator.inventory import load_topology

    topo = load_topology(lab.inventory_path)
    redis_client = connect(default_redis_url())
    out_dir = Path(f"/tmp/crbench-continuous-{uuid.uuid4().hex[:6]}")
    out_dir.mkdir()
    lines = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    say(f"lab {lab.name}, {os.cpu_count()} cores; load 20 msg/s to mail-a, mail-b's Maildir "
        f"listed every {POLL_S * 1000:.0f} ms")
    for mode in () if args.cpu_only else ("continuous", "interval"):
        r = one_run(lab, topo, redis_client, mode=mode, rate=20.0, seconds=args.seconds,
                    trials=args.trials, every_s=args.every, out_dir=out_dir)
        rpos = [s for s, _n in r.rpo]
        label = "continuous (batch 0.5 s)" if mode == "continuous" else f"interval (every {args.every:g} s)"
        say(f"{label}: {r.acked}/{r.sent} acknowledged in {r.seconds:.0f} s; latency ack→mail-b "
            f"p50 {pct(r.latencies, 0.5):.2f} s, p95 {pct(r.latencies, 0.95):.2f} s, max "
            f"{max(r.latencies, default=float('nan')):.2f} s ({r.unseen} not on mail-b within "
            f"the window + 5 s)")
        say(f"  RPO over {len(r.rpo)} disk-lost moments: p50 {pct(rpos, 0.5):.2f} s, p95 "
            f"{pct(rpos, 0.95):.2f} s, max {max(rpos, default=float('nan')):.2f} s of mail; "
            f"messages lost per moment: {', '.join(str(n) for _s, n in r.rpo)}")
    for rate in () if args.no_cpu else (20.0, 200.0):
        base_host = base_orch = 0.0
        for mode in ("none", "continuous", "interval"):
            host, orch, count, got = cpu_run(lab, topo, redis_client, mode=mode, rate=rate,
                                             seconds=args.cpu_seconds, every_s=10.0)
            if mode == "none":
                base_host, base_orch = host, orch
                say(f"{rate:g} msg/s written into mail-a's Maildir ({got:.0f}/s reached), "
                    f"{args.cpu_seconds:g} s: without replication mail-a {host * 100:.1f} % "
                    f"of a core, orchestrator {orch * 100:.1f} %")
                continue
            label = (f"continuous ({count} batches)" if mode == "continuous"
                     else f"interval every 10 s ({count} full passes)")
            parts = "inotifywait, sshd, rsync sender" if mode == "continuous" else "sshd, rsync sender"
            say(f"  {label}: mail-a +{(host - base_host) * 100:.1f} % of a core ({parts}), "
                f"orchestrator +{(orch - base_orch) * 100:.1f} %")
    print(f"(load logs in {out_dir})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
