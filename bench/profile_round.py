"""CPU of one probe round in one process, and where it goes (cProfile).

The round task's own function (``cr.probe_round`` without Celery's dispatch) runs for N
bench clusters of a lab (the clusters of ``bench/scale.py``: same placement, services,
checks, paused), paced at the probe interval, against a private redis-server. It reports
the process's CPU per round (``time.process_time``: every thread of the process, i.e.
the round, the probe pool and the SSH loop; with ``--transports openssh`` the forked ssh
clients are not in it), measured without the profiler, then the same rounds under cProfile
with the functions that cost most (profiler overhead included: read the ranking, not
the absolute figures). cProfile sees only the thread that runs the rounds; ``--py-spy
PATH`` (the py-spy binary) samples every thread of the process during one more pass of
the same rounds and lists the functions by CPU samples, self and inclusive.

Usage (root, a lab with several site-a hosts, e.g. ``crctl lab up --name scb --base
198.18.112.0/20 --secondaries 8``)::

    .venv/bin/python bench/profile_round.py --lab scb --clusters 10 --rounds 20 --top 40
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale  # noqa: E402 - the scale bench's lab, inventory and redis helpers


def print_samples(collapsed: str, top: int) -> None:
    """py-spy's collapsed stacks ("frame;frame;... count") as two rankings."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")[1:]  # the first is the thread
        total += int(count)
        if frames:
            own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    print(f"py-spy: {total} samples of the thread holding the GIL (1 ms each)")
    for title, counter in (("self", own), ("inclusive", inclusive)):
        print(f"-- by {title} samples")
        for frame, count in counter.most_common(top):
            print(f"{100 * count / max(total, 1):6.1f}%  {frame}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default=os.environ.get("CR_LAB_NAME", "scb"))
    parser.add_argument("--clusters", type=int, default=10, help="bench clusters (N)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of every cluster")
    parser.add_argument("--warmup", type=int, default=8, help="rounds before measuring")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=0.8)
    parser.add_argument("--top", type=int, default=35, help="functions listed")
    parser.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumtime)")
    parser.add_argument("--redis-port", type=int, default=6392)
    parser.add_argument("--dump", help="write the raw profile here (pstats/snakeviz)")
    parser.add_argument("--py-spy", help="py-spy binary: sample every thread too")
    args = parser.parse_args()
    # scale.Bench wants its own options; only the lab, hosts and redis parts are used here
    bench = scale.Bench(argparse.Namespace(lab=args.lab, hosts=0, redis_port=args.redis_port,
                                           keep=False))
    try:
        client = bench.start_redis()
        clusters = scale.placement(args.clusters, bench.hosts)
        inventory = bench.work / "inventory.yml"
        fd = os.open(inventory, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # TSIG key
        with os.fdopen(fd, "w") as fh:
            import yaml

            yaml.safe_dump(scale.build_inventory(bench.inv, args.clusters, bench.hosts,
                                                 f"{args.interval}s", f"{args.timeout}s"), fh)
        os.environ.update({"CR_REDIS_URL": f"redis://127.0.0.1:{args.redis_port}/0",
                           "CR_PREFIX": scale.PREFIX, "CR_LAB_NAME": args.lab,
                           "CR_SSH_CONTROL_DIR": str(bench.work / "ssh"),
                           "CR_ARTIFACTS": str(bench.work / "runs")})
        from cr_orchestrator.runtime import tasks
        from cr_orchestrator.runtime.celery_app import app
        from cr_orchestrator.state.cluster import ClusterState

        app.conf.cr_redis_url, app.conf.cr_prefix = os.environ["CR_REDIS_URL"], scale.PREFIX
        state = ClusterState(client, scale.PREFIX)
        for name, _, _ in clusters:
            state.set_paused(name, True)  # decisions recorded, nothing acted on
        bench.start_listeners(clusters)
        names = [name for name, _, _ in clusters]

        def rounds(count: int) -> float:
            """CPU seconds of ``count`` paced rounds of every cluster."""
            cpu = 0.0
            for _ in range(count):
                tick = time.monotonic()
                c0 = time.process_time()
                for name in names:
                    tasks.probe_round.run(name, str(inventory))
                cpu += time.process_time() - c0
                time.sleep(max(0.0, tick + args.interval - time.monotonic()))
            return cpu

        rounds(args.warmup)  # connections, caches, the detector's window filled
        cpu = rounds(args.rounds)
        total = args.rounds * len(names)
        print(f"lab {args.lab}, {len(names)} clusters, {args.rounds} rounds each, load "
              f"average {os.getloadavg()[0]:.1f}: {1000 * cpu / total:.2f} ms CPU per round "
              f"(process, no profiler) -> {total / cpu:.0f} rounds per CPU second", flush=True)
        profile = cProfile.Profile()
        profile.enable()
        cpu = rounds(args.rounds)
        profile.disable()
        print(f"under cProfile: {1000 * cpu / total:.2f} ms CPU per round")
        if args.dump:
            profile.dump_stats(args.dump)
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats(args.sort).print_stats(args.top)
        # per-round figures read easier than totals: the totals are over ``total`` rounds
        print(f"(totals below are over {total} rounds)")
        print(out.getvalue())
        if args.py_spy:
            raw = bench.work / "py-spy.txt"
            spy = subprocess.Popen([args.py_spy, "record", "--pid", str(os.getpid()), "--rate",
                                    "1000", "--gil", "--format", "raw", "--output", str(raw)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2)  # attached
            rounds(args.rounds)
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
            print_samples(raw.read_text(), args.top)
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
