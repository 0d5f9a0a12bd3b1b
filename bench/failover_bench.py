"""The outage a client sees when the primary crashes: cr-orchestrator vs keepalived.

For each timing profile of cr-orchestrator, and for keepalived moving the same shared IP
in the same lab, crash the current primary N times and measure, from the client
namespace (cr_orchestrator.testworld.clientwatch, a sample every 0.1 s), the time from the last
SMTP greeting through the shared IP before the crash to the first one after it.

    sudo .venv/bin/python bench/failover_bench.py --trials 5
    sudo .venv/bin/python bench/failover_bench.py --only keepalived-v3

Prints p50/p95 per configuration; the figures go to docs/benchmarks.md by hand. Needs
root (the lab). keepalived runs with the mail service up on both hosts (it only moves
the address), which is the comparison point for the address switch alone; cr-orchestrator
also stops/starts the service (one licence), fences by epoch and checks from two vantages.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cr_orchestrator.testworld.clientwatch import WatchProcess, wait_until  # noqa: E402
from cr_orchestrator.testworld.lab import Lab  # noqa: E402

LAB_NAME, LAB_BASE = "fbn", "198.18.144.0/20"
# Every trial is a failover: lift the failover budget (2 per hour by default), nothing else.
BUDGET = {"max_failovers": 1000}
PROFILES = {
    # the timing an inventory gets without cr_policy (1 s rounds, down after 3 failures)
    "default": BUDGET,
    # a faster detector: 0.5 s rounds, down after 2 failed rounds from 2 vantages
    "fast": {"probe_interval": "0.5s", "probe_timeout": "0.4s", "failures_before_down": 2,
             "successes_before_up": 2, **BUDGET},
}
KEEPALIVED = {"keepalived-v2": (2, 1.0), "keepalived-v3": (3, 0.1)}  # (VRRP version, advert_int)


def wait(what: str, predicate, timeout_s: float, every_s: float = 0.1):
    return wait_until(what, predicate, timeout_s=timeout_s, every_s=every_s)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


# ------------------------------------------------------------------------ cr-orchestrator
def profile_inventory(lab: Lab, policy: dict | None, workdir: Path) -> str:
    inv = yaml.safe_load(Path(lab.inventory_path).read_text())
    cluster_vars = inv["all"]["children"]["cr_cluster_mail"]["vars"]
    if policy:
        cluster_vars["cr_policy"] = policy
    # a promotion needs a replica synced recently: sync often so trials need not wait long
    for replica_set in cluster_vars.get("cr_replica_sets", []):
        replica_set["every"] = "5s"
    path = workdir / "hosts.yml"
    path.write_text(yaml.safe_dump(inv))
    path.chmod(0o600)
    return str(path)


def bench_orchestrator(lab: Lab, profile: str, trials: int, workdir: Path) -> list[float]:
    from cr_orchestrator.state.cluster import ClusterState, connect

    prefix = f"crbench-{uuid.uuid4().hex[:6]}"
    redis_client = connect()
    state = ClusterState(redis_client, prefix)
    inventory = profile_inventory(lab, PROFILES[profile], workdir)
    log = (workdir / f"run-{profile}.log").open("ab")
    run = subprocess.Popen([sys.executable, "-m", "cr_orchestrator.cli", "run", "-i", inventory,
                            "--prefix", prefix], stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    outages = []
    try:
        wait("the first decision", lambda: state.last_decision("mail"), 60)
        for trial in range(trials):
            primary = state.primary("mail") or "mail-a"
            other = "mail-b" if primary == "mail-a" else "mail-a"
            wait("a healthy cluster", lambda: state.last_decision("mail")["action"] == "none"
                 and "down" not in state.last_decision("mail")["reason"], 120, 0.5)
            settled = time.time()
            wait(f"a sync to {other}", lambda: any(
                e.kind == "sync" and e.data.get("target") == other and e.data.get("ok")
                for e in state.events("mail", count=200) if e.at > settled), 60, 0.5)
            watch = WatchProcess(lab, workdir / f"watch-{profile}-{trial}.jsonl")
            crash_at = time.time()
            lab.fail(primary, "crash")
            try:
                wait(f"failover to {other}", lambda: state.primary("mail") == other, 120, 0.1)
                outage = watch.outage_after(crash_at, timeout_s=60)
            finally:
                watch.stop()
            outages.append(outage)
            print(f"  {profile} trial {trial + 1}: {primary} crashed -> {other}: "
                  f"client outage {outage:.2f} s ({phases(state, crash_at)})", flush=True)
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
        for key in redis_client.scan_iter(match=f"{prefix}:*", count=1000):
            redis_client.delete(key)
    return outages


def phases(state, crash_at: float) -> str:
    """Where a trial's time went, from the cluster's event stream (times after the crash)."""
    def first(kind: str, **match):
        return next((e for e in state.events("mail", count=300)
                     if e.kind == kind and e.at >= crash_at
                     and all(e.data.get(k) == v for k, v in match.items())), None)

    decided = first("decision", action="failover")
    promoted = first("promotion")
    play = wait("the failover playbook's event", lambda: first("playbook", playbook="failover"),
                30)
    if decided is None or promoted is None:
        return "phases unknown"
    started = play.at - float(play.data["duration_s"])
    return (f"decided +{decided.at - crash_at:.2f} s, promoted +{promoted.at - crash_at:.2f} s, "
            f"playbook {started - crash_at:+.2f}..{play.at - crash_at:+.2f} s")


# ------------------------------------------------------------------------ keepalived
def keepalived_conf(lab: Lab, host: str, version: int, advert: float, priority: int) -> str:
    return f"""global_defs {{
  router_id {host}
  vrrp_version {version}
  enable_script_security
}}
vrrp_instance mail {{
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority {priority}
  nopreempt
  advert_int {advert}
  virtual_ipaddress {{
    {lab.shared_ip}/24 dev eth0
  }}
}}
"""


def start_keepalived(lab: Lab, host: str, version: int, advert: float, workdir: Path) -> None:
    priority = 100 if host == "mail-a" else 50
    conf = workdir / f"keepalived-{host}.conf"
    conf.write_text(keepalived_conf(lab, host, version, advert, priority))
    run = workdir / f"keepalived-{host}"
    for stale in workdir.glob(f"keepalived-{host}*.pid"):
        stale.unlink()  # a crash leaves them behind; keepalived would refuse to start
    lab.run_on(host, ["keepalived", "-f", str(conf), "-p", f"{run}.pid", "-r",
                      f"{run}-vrrp.pid", "-c", f"{run}-chk.pid", "-D", "-l"], check=True)


def bench_keepalived(lab: Lab, name: str, trials: int, workdir: Path) -> list[float]:
    version, advert = KEEPALIVED[name]
    for host in ("mail-a", "mail-b"):
        lab.run_on(host, [lab.mailctl, "start"], check=True)
        lab.run_on(host, f"ip addr del {lab.shared_ip}/24 dev eth0 2>/dev/null; true")
        start_keepalived(lab, host, version, advert, workdir)
    outages = []
    try:
        for trial in range(trials):
            holder = wait("a keepalived master", lambda: next(
                (h for h in ("mail-a", "mail-b") if lab.shared_ip in
                 lab.run_on(h, "ip -o addr show dev eth0").stdout), None), 30)
            other = "mail-b" if holder == "mail-a" else "mail-a"
            time.sleep(4 * advert + 2)  # the backup must have heard the master a few times
            watch = WatchProcess(lab, workdir / f"watch-{name}-{trial}.jsonl")
            crash_at = time.time()
            lab.fail(holder, "crash")
            try:
                outage = watch.outage_after(crash_at, timeout_s=60)
            finally:
                watch.stop()
            outages.append(outage)
            print(f"  {name} trial {trial + 1}: {holder} crashed -> {other}: "
                  f"client outage {outage:.2f} s", flush=True)
            lab.heal(holder)
            lab.run_on(holder, [lab.mailctl, "start"], check=True)
            start_keepalived(lab, holder, version, advert, workdir)
    finally:
        for pidfile in workdir.glob("keepalived-*.pid"):
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
    return outages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--only", action="append",
                        choices=[*PROFILES, *KEEPALIVED], help="run only this configuration")
    parser.add_argument("--lab", default=LAB_NAME, help=f"lab name ({LAB_NAME})")
    parser.add_argument("--base", default=LAB_BASE, help=f"lab base ({LAB_BASE})")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("failover_bench: needs root (the lab)", file=sys.stderr)
        return 2
    configs = args.only or [*PROFILES, *KEEPALIVED]
    results = {}
    for config in configs:
        workdir = Path(f"/tmp/cr-failover-bench/{config}")
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        lab = Lab.up(name=args.lab, base=args.base)
        try:
            if config in PROFILES:
                results[config] = bench_orchestrator(lab, config, args.trials, workdir)
            else:
                results[config] = bench_keepalived(lab, config, args.trials, workdir)
        finally:
            lab.down()
    print(f"\nclient-seen outage after a primary crash, {args.trials} trials each:")
    print(f"{'configuration':16} {'p50 s':>7} {'p95 s':>7} {'max s':>7}")
    for config, outages in results.items():
        print(f"{config:16} {statistics.median(outages):7.2f} {percentile(outages, 95):7.2f} "
              f"{max(outages):7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
