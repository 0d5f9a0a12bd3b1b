"""Scale bench: the real orchestrator (``crctl run``: worker + beat) over N clusters.

For each N (default 1, 10, 50, 100) and each SSH transport (asyncssh: kept connections,
the default; openssh: one ssh process per probe), it writes an inventory of N clusters
over the Linux hosts of site-a of a lab, starts ``crctl run`` on it against a private
redis-server (so every Redis command and byte counted is the orchestrator's), lets it
warm up, then measures for ``--seconds``:

- CPU per round: utime+stime (+ reaped children) from /proc of the worker (main process
  and its pool children, which wait for the ssh processes they fork), the beat, the
  ``crctl run`` supervisor, and the OpenSSH ControlMaster processes of the run's control
  directory (they daemonise out of the tree). CPU time, not wall time: other work on a
  shared machine slows rounds down but does not bill them;
- round duration p50/p99: of the worker's tasks (``Task cr.probe_rounds[..] succeeded in
  Xs``): a task runs a group of up to 50 clusters' rounds at once, so this is the group's
  time, its slowest round's and a little more;
- rounds skipped: per cluster, the ticks of the window it ran no round for (more than
  one tick short: the window's two edges may each cut one), plus rounds that said they
  skipped because the previous one still ran;
- Redis commands per round and per cluster (INFO stats of the private server), used
  memory per cluster;
- at the largest N (``--crash``): the lab crashes the first host (every process killed,
  links down) and the bench waits for every cluster whose primary it was to decide
  "primary down" (the clusters are paused, so the decision is recorded and no failover
  runs: the bench measures detection and decision, not 100 playbooks).

Each cluster: a primary and a secondary (site-a hosts taken in turn, so each host is in
about 2N/H clusters), one service whose status is a marker file on the primary (a shell
builtin test: the host-side cost stays the probe script's own) and a TCP check of a port
only the primary listens on (one small listener process per host, in its namespace), a
DNS switch (nothing in a round touches it), probe every 1 s, timeout 0.8 s.

Usage (root, a lab with several site-a hosts, e.g. ``crctl lab up --name scb --base
198.18.112.0/20 --secondaries 8``)::

    .venv/bin/python bench/scale.py --lab scb --ns 1,10,50,100 --seconds 20 \\
        --transports asyncssh,openssh --crash --plot docs/scale.png --json /tmp/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis
import yaml

REPO = Path(__file__).resolve().parent.parent
PORT0 = 20000  # cluster k's service port on its primary: PORT0 + k
PREFIX = "scale"
HOST_STATE = "/var/lib/cr-orchestrator"  # inside a lab host (bind-mounted per host)
ROUND_LINE = re.compile(r"^\[(?P<ts>[\d-]+ [\d:,]+): \w+/[^\]]+\] Task cr\.probe_rounds?\[[^\]]+\] "
                        r"succeeded in (?P<s>[\d.e-]+)s: (?P<result>.*)$")
SKIPPED = re.compile(r"'skipped': (\d+)")
LISTENER = r"""
import asyncio, sys
async def main():
    async def hello(reader, writer):
        writer.close()
    servers = [await asyncio.start_server(hello, "0.0.0.0", int(p)) for p in sys.argv[1:]]
    print("listening", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


# ---------------------------------------------------------------- inventory
def lab_inventory(lab: str) -> dict:
    return yaml.safe_load(Path(f"/var/lib/cr-lab/{lab}/inventory/hosts.yml").read_text())


def site_a_hosts(inv: dict) -> list[str]:
    hosts = inv["all"]["children"]["lab_linux"]["hosts"]
    return [h for h, v in hosts.items() if v.get("cr_site") == "site-a"]


def placement(n: int, hosts: list[str]) -> list[tuple[str, str, str]]:
    """(cluster, primary, secondary) for each of ``n`` clusters, hosts taken in turn."""
    return [(f"s{k:03d}", hosts[k % len(hosts)], hosts[(k + 1) % len(hosts)]) for k in range(n)]


def build_inventory(inv: dict, n: int, hosts: list[str], interval: str, timeout: str) -> dict:
    children = inv["all"]["children"]
    dns = next(v["vars"]["cr_switch"]["dns"] for g, v in children.items()
               if g.startswith("cr_cluster_") and "dns" in v["vars"].get("cr_switch", {}))
    out: dict = {"lab_linux": children["lab_linux"]}
    for k, (name, primary, secondary) in enumerate(placement(n, hosts)):
        out[f"cr_cluster_{name}"] = {"hosts": {primary: {}, secondary: {}}, "vars": {
            "cr_cluster": name,
            "cr_members": {primary: {"role": "primary", "priority": 100},
                           secondary: {"role": "secondary", "priority": 50}},
            "cr_services": [{"name": f"svc{k:03d}", "checks": [{"tcp": PORT0 + k}],
                             "control": {"start": "true", "stop": "true",
                                         "status": f"[ -e {HOST_STATE}/bench-{name} ]"}}],
            "cr_switch": {"dns": {**dns, "record": f"{name}.{dns['zone'].rstrip('.')}"}},
            "cr_policy": {"probe_interval": interval, "probe_timeout": timeout},
        }}
    return {"all": {"children": out}}


# ---------------------------------------------------------------- /proc
def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime+stime+cutime+cstime in seconds) of ``pid``, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def cpu_by_role(root: int, control_dir: str) -> dict[str, float]:
    """CPU seconds so far of the supervisor, the worker's main process, its pool
    processes, the beat tree, ssh masters."""
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(int(p)))}
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        kids.setdefault(ppid, []).append(pid)

    def tree(pid: int) -> float:
        return stats.get(pid, (0, 0.0))[1] + sum(tree(c) for c in kids.get(pid, []))

    out = {"supervisor": stats.get(root, (0, 0.0))[1], "worker": 0.0, "pool": 0.0,
           "beat": 0.0, "ssh masters": 0.0}
    for child in kids.get(root, []):
        if " beat " in _cmdline(child):
            out["beat"] += tree(child)
            continue
        # the worker's main process (Celery: consuming, dispatching, acks) apart from its
        # pool processes (the rounds themselves)
        out["worker"] += stats.get(child, (0, 0.0))[1]
        out["pool"] += sum(tree(c) for c in kids.get(child, []))
    out["ssh masters"] = sum(cpu for pid, (ppid, cpu) in stats.items()
                             if ppid not in stats or ppid == 1
                             if control_dir in _cmdline(pid))
    return out


# ---------------------------------------------------------------- one run
@dataclass
class Result:
    transport: str
    n: int
    seconds: float
    rounds: int
    expected: int
    skipped: int
    cpu_s: dict[str, float]
    cpu_ms_per_round: float
    cores: float
    clusters_per_core: float
    p50_ms: float
    p99_ms: float
    redis_ops_per_round: float
    redis_kib_per_cluster: float
    crash_to_decision_s: list[float] = field(default_factory=list)
    crash_command_s: float = 0.0  # how long `crctl lab fail` took: the crash lands within
    crash_undecided: int = 0
    load_1m: list[float] = field(default_factory=list)  # at the window's start and end


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lab = args.lab
        self.inv = lab_inventory(self.lab)
        self.hosts = site_a_hosts(self.inv)[:args.hosts or None]
        if len(self.hosts) < 2:
            sys.exit(f"lab {self.lab} has fewer than 2 site-a hosts")
        self.work = Path(tempfile.mkdtemp(prefix="cr-scale-"))
        self.redis_port = args.redis_port
        self.listeners: dict[str, subprocess.Popen] = {}

    # -- private Redis
    def start_redis(self) -> redis.Redis:
        self.redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.work), "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.redis_port)
        for _ in range(100):
            try:
                client.ping()
                return client
            except redis.ConnectionError:
                time.sleep(0.05)
        sys.exit(f"redis-server on port {self.redis_port} did not start")

    # -- the hosts' side
    def host_dir(self, host: str) -> Path:
        return Path(f"/var/lib/cr-lab/{self.lab}/hosts/{host}/state")

    def start_listeners(self, clusters: list[tuple[str, str, str]]) -> None:
        self.stop_listeners()
        ports: dict[str, list[str]] = {}
        for k, (name, primary, _) in enumerate(clusters):
            ports.setdefault(primary, []).append(str(PORT0 + k))
            (self.host_dir(primary) / f"bench-{name}").touch()
        for host, plist in ports.items():
            proc = subprocess.Popen(["ip", "netns", "exec", f"{self.lab}-{host}", sys.executable,
                                     "-c", LISTENER, *plist], stdout=subprocess.PIPE, text=True)
            proc.stdout.readline()
            self.listeners[host] = proc

    def stop_listeners(self) -> None:
        for proc in self.listeners.values():
            proc.kill()
            proc.wait()
        self.listeners.clear()
        for host in self.hosts:
            for marker in self.host_dir(host).glob("bench-s*"):
                marker.unlink()

    # -- one measurement
    def run(self, transport: str, n: int, crash: bool, client: redis.Redis) -> Result:
        args = self.args
        client.flushall()  # the bench's own redis-server, never the shared one
        clusters = placement(n, self.hosts)
        inventory = self.work / f"inventory-{n}.yml"
        fd = os.open(inventory, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the TSIG key
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(build_inventory(self.inv, n, self.hosts, f"{args.interval}s",
                                           f"{args.timeout}s"), fh)
        from cr_orchestrator.state.cluster import ClusterState

        state = ClusterState(client, PREFIX)
        for name, _, _ in clusters:
            state.set_paused(name, True)  # decisions recorded, nothing acted on
        self.start_listeners(clusters)
        used0 = int(client.info("memory")["used_memory"])
        control_dir = str(self.work / f"ssh-{transport}")
        log_path = self.work / f"run-{transport}-{n}.log"
        env = {**os.environ, "CR_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
               "CR_PREFIX": PREFIX, "CR_SSH_TRANSPORT": transport,
               "CR_SSH_CONTROL_DIR": control_dir, "CR_ARTIFACTS": str(self.work / "runs"),
               "CR_LAB_NAME": self.lab}
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [str(REPO / ".venv/bin/crctl"), "run", "--inventory", str(inventory),
                 "--concurrency", str(args.concurrency), "--loglevel", "INFO"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._warm_up(state, clusters)
            time.sleep(args.settle)
            counts0 = self._round_counts(client, clusters)
            cpu0, ops0 = cpu_by_role(proc.pid, control_dir), self._ops(client)
            offset0, t0 = log_path.stat().st_size, time.time()
            load0 = os.getloadavg()[0]
            time.sleep(args.seconds)
            cpu1, ops1 = cpu_by_role(proc.pid, control_dir), self._ops(client)
            load1 = os.getloadavg()[0]
            t1, counts1 = time.time(), self._round_counts(client, clusters)
            used1 = int(client.info("memory")["used_memory"])
            durations, lock_skips = self._rounds(log_path, offset0, t0, t1)
            crash_times: list[float] = []
            undecided, crash_command = 0, 0.0
            if crash:
                crash_times, undecided, crash_command = self._crash(state, clusters)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            self.stop_listeners()
            if crash:
                subprocess.run([str(REPO / ".venv/bin/crctl"), "lab", "heal", "--name", self.lab],
                               check=False, capture_output=True)
        window = t1 - t0
        ticks = int(window / args.interval)
        per_cluster = [counts1[c] - counts0[c] for c in counts1]
        skipped = sum(max(0, ticks - 1 - r) for r in per_cluster) + lock_skips
        rounds = sum(per_cluster)
        cpu = {k: cpu1[k] - cpu0[k] for k in cpu1}
        total = sum(cpu.values())
        cores = total / window
        ms = sorted(1000 * d for d in durations) or [0.0]
        return Result(
            transport=transport, n=n, seconds=round(window, 1), rounds=rounds,
            expected=n * ticks, skipped=skipped,
            cpu_s={k: round(v, 2) for k, v in cpu.items()},
            cpu_ms_per_round=round(1000 * total / max(rounds, 1), 2), cores=round(cores, 3),
            # what one core could run if every round ran: skipped rounds cost nothing, so
            # N / cores used would flatter a run that skipped
            clusters_per_core=round(1000 * args.interval * max(rounds, 1) / (1000 * total), 1)
            if total else 0.0,
            p50_ms=round(statistics.median(ms), 1), p99_ms=round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1),
            redis_ops_per_round=round((ops1 - ops0) / max(rounds, 1), 1),
            redis_kib_per_cluster=round((used1 - used0) / 1024 / n, 1),
            crash_to_decision_s=crash_times, crash_undecided=undecided,
            crash_command_s=round(crash_command, 2),
            load_1m=[round(load0, 1), round(load1, 1)])

    def _warm_up(self, state, clusters) -> None:
        """Until every cluster decided its primary is up (first connections, adoption,
        the backlog of a cold start worked off), at most 90 s."""
        deadline = time.time() + 90
        while time.time() < deadline:
            if all(str((state.last_decision(name) or {}).get("situation")).endswith("primary_up")
                   for name, _, _ in clusters):
                return
            time.sleep(0.5)
        print("  (warm-up: not every cluster saw its primary up within 90 s)", flush=True)

    @staticmethod
    def _ops(client: redis.Redis) -> int:
        return int(client.info("stats")["total_commands_processed"])

    @staticmethod
    def _round_counts(client: redis.Redis, clusters) -> dict[str, int]:
        pipe = client.pipeline(transaction=False)
        for name, _, _ in clusters:
            pipe.hget(f"{PREFIX}:metrics:round:{name}", "count")
        return {name: int(v or 0) for (name, _, _), v in zip(clusters, pipe.execute())}

    @staticmethod
    def _rounds(log_path: Path, offset: int, t0: float, t1: float) -> tuple[list[float], int]:
        durations, skips = [], 0
        with open(log_path) as fh:
            fh.seek(offset)
            for line in fh:
                m = ROUND_LINE.match(line.strip())
                if not m:
                    continue
                at = time.mktime(time.strptime(m["ts"].split(",")[0], "%Y-%m-%d %H:%M:%S"))
                if at > t1 + 1:
                    break
                durations.append(float(m["s"]))
                # a group's task (cr.probe_rounds) counts its skipped rounds; a task of
                # one cluster (cr.probe_round, before groups) said so in its summary
                counted = SKIPPED.search(m["result"])
                skips += int(counted[1]) if counted else "'summary': 'skipped:" in m["result"]
        return durations, skips

    def _crash(self, state, clusters) -> tuple[list[float], int, float]:
        """Seconds from the end of the crash command (every process of the host killed,
        its links down) to each decision; the command's own duration (it took 1-5 s on a
        loaded machine: the crash lands somewhere within it)."""
        victim = self.hosts[0]
        mine = [name for name, primary, _ in clusters if primary == victim]
        begun = time.time()
        subprocess.run([str(REPO / ".venv/bin/crctl"), "lab", "fail", victim, "--mode", "crash",
                        "--name", self.lab], check=True, capture_output=True)
        started = time.time()
        decided: dict[str, float] = {}
        while time.time() < started + 30 and len(decided) < len(mine):
            for name in mine:
                if name in decided:
                    continue
                for event in state.events(name, count=5):
                    data = event.data if hasattr(event, "data") else {}
                    if (str(data.get("situation") or "").endswith("primary_down")
                            and event.at >= begun):
                        decided[name] = event.at - started
                        break
            time.sleep(0.2)
        return (sorted(round(v, 2) for v in decided.values()), len(mine) - len(decided),
                started - begun)

    def close(self) -> None:
        self.stop_listeners()
        if getattr(self, "redis_proc", None):
            self.redis_proc.terminate()
            self.redis_proc.wait(10)
        if self.args.keep:
            print(f"kept {self.work} (logs, inventories)")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


# ---------------------------------------------------------------- output
def print_result(r: Result) -> None:
    crash = ""
    if r.crash_to_decision_s or r.crash_undecided:
        times = r.crash_to_decision_s or [float("nan")]
        crash = (f"  crash->decision: {len(r.crash_to_decision_s)} clusters, "
                 f"p50 {statistics.median(times):.2f}s max {max(times):.2f}s"
                 + (f", {r.crash_undecided} undecided after 30 s" if r.crash_undecided else "")
                 + f" (after the crash command, which took {r.crash_command_s:.1f} s)")
    print(f"{r.transport:<9} N={r.n:<4} rounds {r.rounds}/{r.expected} skipped {r.skipped:<4} "
          f"CPU/round {r.cpu_ms_per_round:6.2f} ms ({', '.join(f'{k} {v}s' for k, v in r.cpu_s.items())}) "
          f"cores {r.cores:.2f} -> {r.clusters_per_core:.0f} clusters/core  "
          f"round p50 {r.p50_ms:.0f} ms p99 {r.p99_ms:.0f} ms  Redis {r.redis_ops_per_round:.0f} ops/round "
          f"{r.redis_kib_per_cluster:.1f} KiB/cluster  load {r.load_1m}{crash}", flush=True)


def plot(results: list[Result], path: str, interval: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 4))
    for transport in sorted({r.transport for r in results}):
        rs = sorted((r for r in results if r.transport == transport), key=lambda r: r.n)
        ns = [r.n for r in rs]
        left.plot(ns, [r.cpu_ms_per_round for r in rs], marker="o", label=transport)
        middle.plot(ns, [r.p99_ms for r in rs], marker="o", label=transport)
        right.plot(ns, [100 * r.skipped / max(r.expected, 1) for r in rs], marker="o",
                   label=transport)
    left.set(xlabel="clusters", ylabel="CPU ms per round (worker + beat + ssh)",
             title="CPU per round (1000 / this = clusters per core at 1 s)")
    middle.axhline(1000 * interval, color="grey", linestyle="--", label="probe interval")
    middle.set(xlabel="clusters", ylabel="round p99 (ms)", title="Round (group task) p99")
    right.set(xlabel="clusters", ylabel="% of the ticks' rounds", title="Rounds skipped")
    for ax in (left, middle, right):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default=os.environ.get("CR_LAB_NAME", "scb"))
    parser.add_argument("--ns", default="1,10,50,100", help="numbers of clusters")
    parser.add_argument("--transports", default="asyncssh,openssh")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per N")
    parser.add_argument("--settle", type=float, default=5.0, help="after every cluster decided")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=0.8)
    parser.add_argument("--concurrency", type=int, default=2,
                        help="worker processes (2: crctl run's default)")
    parser.add_argument("--hosts", type=int, default=0, help="use only this many site-a hosts")
    parser.add_argument("--crash", action="store_true", help="crash a primary at the largest N")
    parser.add_argument("--redis-port", type=int, default=6391)
    parser.add_argument("--plot", help="PNG of CPU and p99 round time against N")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    parser.add_argument("--replot", metavar="JSON", help="only draw --plot from a --json file")
    args = parser.parse_args()
    if args.replot:
        plot([Result(**r) for r in json.loads(Path(args.replot).read_text())], args.plot,
             args.interval)
        return 0
    ns = [int(x) for x in args.ns.split(",")]
    bench = Bench(args)
    results: list[Result] = []
    try:
        client = bench.start_redis()
        print(f"lab {args.lab}: {len(bench.hosts)} site-a hosts; worker concurrency "
              f"{args.concurrency}; {args.seconds:.0f} s per N; load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        for transport in args.transports.split(","):
            for n in ns:
                result = bench.run(transport, n, args.crash and n == max(ns), client)
                print_result(result)
                results.append(result)
    finally:
        bench.close()
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    if args.plot:
        plot(results, args.plot, args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
