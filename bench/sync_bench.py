"""Replication benchmark: orchestrated sync vs bare rsync on the same trees.

Usage (as root, with a lab up)::

    CR_LAB_NAME=sy CR_LAB_BASE=198.18.64.0/20 .venv/bin/crctl lab up
    CR_LAB_NAME=sy .venv/bin/python bench/sync_bench.py [--files 20000] [--rounds 5] [--record]

A tree of ``--files`` small files (1-3 KiB) is made on mail-a (/srv/crbench/src) and
copied in full to two directories of mail-b. Each round changes 1 % of the files, then
syncs them to mail-b three ways, in rotating order:

- ``orchestrated``: ``sync_replica_set`` (plan, epoch fence in Redis, path lock, a
  thread, ssh to the primary, rsync pushed by the primary, ``--stats`` parsed,
  freshness recorded) into /srv/crbench/orch;
- ``orchestrated, ssh mux``: the same with ``ssh_control_dir`` (one persistent ssh
  connection to the primary, ControlMaster) into /srv/crbench/orch2;
- ``bare (ssh)``: the same rsync command line, started over the same ssh hop by hand,
  into /srv/crbench/bare;
- ``bare (on host)``: ``rsync -a --delete`` typed on mail-a itself (no outer ssh) into
  /srv/crbench/bare2 — what an administrator's cron job would do.

Prints median and range; ``--record`` writes the "Replication" section of
docs/benchmarks.md (only that section).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cr_orchestrator.inventory import load_topology  # noqa: E402
from cr_orchestrator.testworld.lab import Lab, lab_from_env  # noqa: E402
from cr_orchestrator.model import ReplicaSet, ReplicaTarget  # noqa: E402
from cr_orchestrator.state.cluster import connect  # noqa: E402
from cr_orchestrator.act.sync import FreshnessStore, sync_replica_set  # noqa: E402
from cr_orchestrator.act.sync import rsync as rs  # noqa: E402

SRC = "/srv/crbench/src"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def make_tree(root: str, count: int) -> list[str]:
    rng = random.Random(7)
    names = []
    for i in range(count):
        rel = f"d{i % 100:02d}/f{i:06d}.msg"
        os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(root, rel), "wb") as fh:
            fh.write(os.urandom(rng.randint(1024, 3072)))
        names.append(rel)
    return names


def change(root: str, names: list[str], fraction: float, rnd: int) -> int:
    picked = random.Random(rnd).sample(names, max(1, int(len(names) * fraction)))
    for rel in picked:
        with open(os.path.join(root, rel), "r+b") as fh:
            fh.write(os.urandom(64))
    return len(picked)


def run(argv: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode not in (0, 24):
        raise SystemExit(f"{argv[0]} failed ({done.returncode}): {done.stderr[-400:]}")
    return time.perf_counter() - started


def bench_topology(lab: Lab):
    """The lab's topology with two one-target sets from mail-a: orch and orch2 (mux)."""
    topo = load_topology(lab.inventory_path)
    sets = tuple(ReplicaSet(name=name, path=SRC, every_s=30,
                            targets=(ReplicaTarget("mail-b", f"/srv/crbench/{sub}"),))
                 for name, sub in (("bench", "orch"), ("benchmux", "orch2")))
    mail = topo.cluster("mail")
    return dataclasses.replace(topo, clusters={"mail": dataclasses.replace(mail, replica_sets=sets)})


def bare_commands(lab: Lab, topo) -> tuple[list[str], list[str]]:
    """(the same rsync over the same ssh hop, rsync typed on mail-a itself)."""
    a, b = topo.hosts["mail-a"], topo.hosts["mail-b"]
    job = rs.RsyncJob(source_path=SRC, target_user="root", target_address=b.cluster_address,
                      target_path="/srv/crbench/bare")
    bare_cmd = rs.remote_command(rs.rsync_argv(job, inner_ssh=rs.ssh_options(b.ssh)), deadline_s=600)
    bare_ssh = rs.outer_ssh_argv(ssh=a.ssh, address=a.management_address, command=bare_cmd)
    inner = shlex.join(["ssh", *rs.ssh_options(b.ssh)])
    bare_host = lab.host_argv("mail-a", f"rsync -a --delete -e {shlex.quote(inner)} {SRC}/ "
                                        f"root@{b.cluster_address}:/srv/crbench/bare2/")
    return bare_ssh, bare_host


def table_of(times: dict[str, list[float]]) -> str:
    base = statistics.median(times["bare (ssh)"])
    host = statistics.median(times["bare (on host)"])
    lines = ["| way | median s | min – max s | vs bare (ssh) | vs bare (on host) |", "|---|---|---|---|---|"]
    for name, ts in times.items():
        med = statistics.median(ts)
        lines.append(f"| {name} | {med:.2f} | {min(ts):.2f} – {max(ts):.2f} | {med / base:.2f}× | "
                     f"{med / host:.2f}× |")
    return "\n".join(lines)


def measure(ways: dict, *, rounds: int, before_round) -> dict[str, list[float]]:
    """Warm up once, then time every way per round in rotating order."""
    for fn in ways.values():  # warm-up: caches, first ssh, rsync file lists
        fn()
    times: dict[str, list[float]] = {k: [] for k in ways}
    for rnd in range(rounds):
        before_round(rnd)
        order = list(ways)[rnd % len(ways):] + list(ways)[:rnd % len(ways)]
        for name in order:
            times[name].append(ways[name]())
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    lab = Lab.load(name=lab_from_env()[0])
    a_root, b_root = lab.data_dir("mail-a") + "/crbench", lab.data_dir("mail-b") + "/crbench"
    for root in (a_root, b_root):
        shutil.rmtree(root, ignore_errors=True)
    names = make_tree(a_root + "/src", args.files)
    for sub in ("orch", "orch2", "bare", "bare2"):
        shutil.copytree(a_root + "/src", f"{b_root}/{sub}", copy_function=shutil.copy2)
    topo = bench_topology(lab)
    store = FreshnessStore(connect(), f"crbench-{uuid.uuid4().hex[:8]}")
    bare_ssh, bare_host = bare_commands(lab, topo)
    mux_dir = f"/tmp/crbench-mux-{os.getpid()}"

    def orchestrated(control_dir: str | None = None) -> float:
        started = time.perf_counter()
        report = sync_replica_set(topology=topo, cluster="mail", source="mail-a",
                                  replica_set="benchmux" if control_dir else "bench",
                                  epoch=1, store=store, deadline_s=600, ssh_control_dir=control_dir)
        if not report.ok:
            raise SystemExit(f"orchestrated sync failed: {report}")
        return time.perf_counter() - started

    ways = {"orchestrated": orchestrated, "orchestrated, ssh mux": lambda: orchestrated(mux_dir),
            "bare (ssh)": lambda: run(bare_ssh), "bare (on host)": lambda: run(bare_host)}
    try:
        times = measure(ways, rounds=args.rounds,
                        before_round=lambda rnd: change(a_root + "/src", names, args.changed, rnd))
    finally:
        for key in store.keys():
            store.redis.delete(key)
        for root in (a_root, b_root):
            shutil.rmtree(root, ignore_errors=True)
    load = os.getloadavg()[0]
    table = table_of(times)
    print(f"{args.files} files, {args.changed:.0%} changed per round, {args.rounds} rounds, "
          f"load average {load:.1f}\n{table}")
    if args.record:
        record(table, files=args.files, changed=args.changed, rounds=args.rounds, load=load)
    return 0


def reading(table: str) -> str:
    """The sentences that interpret the table (numbers and verdicts taken from it)."""
    rows = {line.split("|")[1].strip(): line.split("|") for line in table.splitlines()[2:]}
    orch_ssh, orch_host = rows["orchestrated"][4].strip(), rows["orchestrated"][5].strip()
    mux_host = rows["orchestrated, ssh mux"][5].strip()

    def verdict(ratio: str) -> str:
        return "met" if float(ratio.rstrip("×")) <= 1.15 else "not met"

    return textwrap.fill(
        f"Reading: the orchestration's own work (plan, Redis fence and lock, thread, `--stats` "
        f"parsing, freshness record) is small next to rsync: orchestrated is {orch_ssh} the same "
        f"rsync started over the same ssh hop. The rest of the gap to rsync typed on the primary "
        f"({orch_host}) is the ssh session to the primary, constant per run, not per file; "
        f"reusing one connection (`ssh_control_dir`, ControlMaster) gives {mux_host}. Goal "
        f"≤ 1.15× bare rsync: against the same ssh hop {verdict(orch_ssh)}; against rsync on "
        f"the primary {verdict(orch_host)} by default, {verdict(mux_host)} with connection "
        f"reuse.", width=90)


def record(table: str, *, files: int, changed: float, rounds: int, load: float) -> None:
    section = f"""## Replication

`bench/sync_bench.py` (`CR_LAB_NAME=sy .venv/bin/python bench/sync_bench.py --record`, lab
up): {files} files of 1–3 KiB on mail-a, {changed:.0%} of them changed before each of
{rounds} rounds, synced to mail-b four ways in rotating order (see the script's
docstring): `sync_replica_set` (Redis epoch fence, path lock, freshness record, ssh to
the primary, rsync pushed from there, `--stats` parsed), the same with ssh connection reuse,
the same rsync started by hand
over the same ssh hop; and rsync typed on mail-a itself. Goal: orchestrated ≤ 1.15× bare
rsync. Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average
{load:.1f} on 2 shared cores (other helpers' tests running): expect noise.

{table}

{reading(table)}

"""
    text = DOCS.read_text()
    match = re.search(r"^## Replication\n.*?(?=^## |\Z)", text, flags=re.S | re.M)
    text = text[:match.start()] + section + text[match.end():] if match else text + "\n" + section
    DOCS.write_text(text)
    print(f"recorded in {DOCS}")


if __name__ == "__main__":
    sys.exit(main())
