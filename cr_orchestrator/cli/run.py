"""``crctl run``: the orchestrator for one inventory, as one process tree.

Starts two children, each in its own process group: a Celery worker consuming the site
queues (``site.<name>``; one site with ``--site``) and a Celery beat with the RedBeat
scheduler (several beats may run: RedBeat's lock keeps one active, the others stand by).
Before that, and whenever a file of the inventory changes, the RedBeat schedule is
regenerated from the inventory. Ctrl-C or SIGTERM stops the children (warm shutdown:
SIGTERM, then SIGKILL of their process groups after ``--stop-timeout``) so nothing is
left behind; if a child dies, the others are stopped and the exit code says so.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cr_orchestrator.errors import ConfigError

log = logging.getLogger("crctl.run")


def register(subparsers) -> None:
    from cr_orchestrator.cli.control import add_redis_options
    from cr_orchestrator.cli.validate import add_inventory_options

    parser = subparsers.add_parser(
        "run", help="run the orchestrator (Celery worker + RedBeat beat) for an inventory",
        description=__doc__.split("\n\n")[1])
    add_inventory_options(parser)
    add_redis_options(parser)
    parser.add_argument("--site", action="append", default=None,
                        help="only do this site's work (queue site.SITE); repeatable; "
                             "default: every site of the inventory")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--no-beat", action="store_true",
                        help="run the worker only (a beat runs elsewhere)")
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--stop-timeout", type=float, default=20.0,
                        help="seconds the children get to stop before SIGKILL (20)")
    parser.add_argument("--watch-interval", type=float, default=5.0,
                        help="seconds between checks of the inventory files (5)")
    parser.set_defaults(handler=run)


@dataclass(frozen=True)
class Child:
    name: str
    argv: list[str]


def child_commands(*, queues: list[str], concurrency: int, loglevel: str, beat: bool,
                   node: str) -> list[Child]:
    """Pure: the command lines of the children (asserted exactly in tests)."""
    celery = [sys.executable, "-m", "celery", "-A", "cr_orchestrator.celery_app"]
    children = [Child("worker", celery + [
        "worker", "-Q", ",".join(queues), "-n", f"{node}@%h", "--concurrency",
        str(concurrency), "-O", "fair", "--loglevel", loglevel, "--without-gossip",
        "--without-mingle"])]
    if beat:
        children.append(Child("beat", celery + [
            # RedBeat, riding out a Redis restart (plain RedBeat exits on one)
            "beat", "-S", "cr_orchestrator.schedule.RedisTolerantScheduler",
            "--max-interval", "1", "--loglevel", loglevel]))
    return children


class Supervisor:
    """Runs the children; stops them all, by process group, on a signal or a death."""

    def __init__(self, children: list[Child], *, env: dict[str, str], stop_timeout_s: float):
        self.children = children
        self.env = env
        self.stop_timeout_s = stop_timeout_s
        self.procs: dict[str, subprocess.Popen] = {}
        self.stopping = threading.Event()

    def start(self) -> None:
        for child in self.children:
            # Own session: a terminal's Ctrl-C reaches us only, and we stop the children in
            # order; killpg then also reaches the worker's pool processes.
            self.procs[child.name] = subprocess.Popen(child.argv, env=self.env,
                                                      start_new_session=True)
            log.info("started %s (pid %d)", child.name, self.procs[child.name].pid)

    def dead(self) -> list[str]:
        return [f"{name} exited with {p.returncode}" for name, p in self.procs.items()
                if p.poll() is not None]

    def stop(self) -> None:
        self.stopping.set()
        for name, proc in self.procs.items():
            if proc.poll() is None:
                # The main process only: a Celery worker then stops its pool itself (warm
                # shutdown, current tasks finish); a signal to the pool kills tasks midway.
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for name, proc in self.procs.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s: killing it", name,
                            self.stop_timeout_s)
            # Whatever is left in the group (pool children, a stuck task) goes too.
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _sites(topology, wanted: list[str] | None) -> list[str]:
    sites = list(topology.sites)
    if not wanted:
        return sites
    unknown = [s for s in wanted if s not in sites]
    if unknown:
        raise ConfigError(f"--site {', '.join(unknown)}: not a site of {topology.source} "
                          f"(sites: {', '.join(sites)})")
    return wanted


def run(args: argparse.Namespace) -> int:
    from cr_orchestrator.celery_app import make_app, site_queue
    from cr_orchestrator.cli.control import prefix_of
    from cr_orchestrator.cli.validate import inventory_of
    from cr_orchestrator.inventory import load_topology
    from cr_orchestrator.schedule import live_primaries, sync_schedule
    from cr_orchestrator.state import connect
    from cr_orchestrator.tasks import inventory_signature

    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s crctl run: %(message)s")
    app = make_app(redis_url=args.redis_url, prefix=prefix_of(args))
    inventory = str(Path(inventory_of(args)).resolve())
    topology = load_topology(inventory, vault_password_file=args.vault_password_file)
    queues = [site_queue(s) for s in _sites(topology, args.site)]
    client = connect(app.conf.cr_redis_url)

    def resync_schedule(topo) -> None:
        change = sync_schedule(app, topo, inventory, primaries=live_primaries(
            topology=topo, redis_client=client, prefix=app.conf.cr_prefix))
        log.info("%s", change)

    resync_schedule(topology)
    env = dict(os.environ, CR_REDIS_URL=app.conf.cr_redis_url, CR_PREFIX=app.conf.cr_prefix,
               CR_INVENTORY=inventory)
    if args.vault_password_file:
        env["CR_VAULT_PASSWORD_FILE"] = str(Path(args.vault_password_file).resolve())
    node = "cr-" + "-".join(s.removeprefix("site.") for s in queues)
    supervisor = Supervisor(child_commands(queues=queues, concurrency=args.concurrency,
                                           loglevel=args.loglevel, beat=not args.no_beat,
                                           node=node),
                            env=env, stop_timeout_s=args.stop_timeout)
    return _supervise(supervisor, inventory, args, resync_schedule, load_topology,
                      inventory_signature)


def _supervise(supervisor: Supervisor, inventory: str, args, resync_schedule, load_topology,
               inventory_signature) -> int:
    def on_signal(signum, _frame):
        log.info("got %s: stopping", signal.Signals(signum).name)
        supervisor.stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    signature = inventory_signature(inventory)
    supervisor.start()
    code = 0
    try:
        checked = time.monotonic()
        while not supervisor.stopping.wait(0.5):
            if dead := supervisor.dead():
                log.error("stopping: %s", "; ".join(dead))
                code = 1
                break
            if time.monotonic() - checked < args.watch_interval:
                continue
            checked = time.monotonic()
            now_sig = inventory_signature(inventory)
            if now_sig != signature:
                signature = now_sig
                try:
                    resync_schedule(load_topology(
                        inventory, vault_password_file=args.vault_password_file))
                except ConfigError as exc:
                    log.error("inventory changed but is invalid; keeping the schedule: %s",
                              "; ".join(exc.problems))
    finally:
        supervisor.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(f"crctl run: stopped ({'a child died' if code else 'on request'})", file=sys.stderr)
    return code
