"""``crctl run``: the orchestrator for one inventory, as one process tree.

Starts two children, each in its own process group: a Celery worker consuming the site
queues (``site.<name>``; one site with ``--site``) and a Celery beat with the RedBeat
scheduler (several beats may run: RedBeat's lock keeps one active, the others stand by).
Before that, and whenever a file of the inventory changes, the RedBeat schedule is
regenerated from the inventory. Ctrl-C or SIGTERM stops the children (warm shutdown:
SIGTERM, then SIGKILL of their process groups after ``--stop-timeout``) so nothing is
left behind. A child that dies (killed, out of memory, a crash) is started again, after
a back-off that doubles from 1 s up to 30 s while it keeps dying young; the orchestrator
never stops on its own (a change its worker was making is resumed by the next round).
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
    celery = [sys.executable, "-m", "celery", "-A", "cr_orchestrator.runtime.celery_app"]
    children = [Child("worker", celery + [
        "worker", "-Q", ",".join(queues), "-n", f"{node}@%h", "--concurrency",
        str(concurrency), "-O", "fair", "--loglevel", loglevel, "--without-gossip",
        "--without-mingle"])]
    if beat:
        children.append(Child("beat", celery + [
            # RedBeat, riding out a Redis restart (plain RedBeat exits on one)
            "beat", "-S", "cr_orchestrator.runtime.schedule.RedisTolerantScheduler",
            "--max-interval", "1", "--loglevel", loglevel]))
    return children


RESTART_BACKOFF_S = (1.0, 30.0)  # first and longest wait before starting a dead child
RAN_LONG_ENOUGH_S = 60.0  # a child that ran this long before dying starts the back-off anew


def restart_delay(deaths_in_a_row: int) -> float:
    """Pure: the wait before starting a child that died ``deaths_in_a_row`` times young."""
    first, longest = RESTART_BACKOFF_S
    return min(longest, first * 2 ** max(0, deaths_in_a_row - 1))


class Supervisor:
    """Runs the children, starts a dead one again (with back-off), and stops them all, by
    process group, on a signal."""

    def __init__(self, children: list[Child], *, env: dict[str, str], stop_timeout_s: float):
        self.children = {child.name: child for child in children}
        self.env = env
        self.stop_timeout_s = stop_timeout_s
        self.procs: dict[str, subprocess.Popen] = {}
        self.started_at: dict[str, float] = {}
        self.deaths: dict[str, int] = {}
        self.restart_at: dict[str, float] = {}
        self.stopping = threading.Event()

    def start(self) -> None:
        for name in self.children:
            self._start(name)

    def _start(self, name: str) -> None:
        # Own session: a terminal's Ctrl-C reaches us only, and we stop the children in
        # order; killpg then also reaches the worker's pool processes.
        self.procs[name] = subprocess.Popen(self.children[name].argv, env=self.env,
                                            start_new_session=True)
        self.started_at[name] = time.monotonic()
        log.info("started %s (pid %d)", name, self.procs[name].pid)

    def running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def revive(self) -> None:
        """Start again every child that died, once its back-off has passed."""
        now = time.monotonic()
        for name, proc in self.procs.items():
            if proc.poll() is None or self.stopping.is_set():
                continue
            if name not in self.restart_at:
                # what it left in its group (a pool process) goes first
                _signal_group(proc, signal.SIGKILL)
                young = now - self.started_at[name] < RAN_LONG_ENOUGH_S
                self.deaths[name] = self.deaths.get(name, 0) + 1 if young else 1
                delay = restart_delay(self.deaths[name])
                self.restart_at[name] = now + delay
                log.error("%s exited with %s; starting it again in %.0f s", name,
                          proc.returncode, delay)
            elif now >= self.restart_at[name]:
                del self.restart_at[name]
                self._start(name)

    def stop(self) -> None:
        self.stopping.set()
        for proc in self.procs.values():
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
    from cr_orchestrator.runtime.celery_app import make_app, site_queue
    from cr_orchestrator.cli.control import prefix_of
    from cr_orchestrator.cli.validate import inventory_of
    from cr_orchestrator.runtime.config import child_environ
    from cr_orchestrator.inventory import load_topology
    from cr_orchestrator.runtime.schedule import (
        follow_primaries, mark_sites_alive, missing_entries, routing)
    from redis.exceptions import RedisError

    from cr_orchestrator.state.cluster import connect, persistence_warning, release_dead_holders
    from cr_orchestrator.runtime.tasks import inventory_signature

    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s crctl run: %(message)s")
    app = make_app(redis_url=args.redis_url, prefix=prefix_of(args))
    inventory = str(Path(inventory_of(args)).resolve())
    topology = load_topology(inventory, vault_password_file=args.vault_password_file)
    queues = [site_queue(s) for s in _sites(topology, args.site)]
    client = connect(app.conf.cr_redis_url)
    if warning := persistence_warning(client):
        log.warning("%s", warning)

    current = {"topology": topology}

    def resync_schedule(topo) -> None:
        current["topology"] = topo
        change = follow_primaries(app, topo, inventory, redis_client=client,
                                  prefix=app.conf.cr_prefix)
        current["routing"] = routing(topo, inventory, redis_client=client,
                                     prefix=app.conf.cr_prefix)
        log.info("%s", change)
        groups = sum(1 for name, queue in current["routing"].items()
                     if name.startswith("cr.probe.") and queue in queues)
        if groups >= args.concurrency:
            # a group's task holds a process for its whole round (0.2-0.9 s with 50
            # clusters) and for a change it carries out: the next ticks need another
            log.warning("%d groups of clusters run their rounds here on %d worker "
                        "process(es): while a change holds one, rounds will wait and be "
                        "skipped; give --concurrency %d or more", groups, args.concurrency,
                        groups + 1)

    resync_schedule(topology)
    env = child_environ(CR_REDIS_URL=app.conf.cr_redis_url, CR_PREFIX=app.conf.cr_prefix,
                        CR_INVENTORY=inventory)
    if args.vault_password_file:
        env["CR_VAULT_PASSWORD_FILE"] = str(Path(args.vault_password_file).resolve())
    node = "cr-" + "-".join(s.removeprefix("site.") for s in queues)
    own_sites = [q.removeprefix("site.") for q in queues]
    supervisor = Supervisor(child_commands(queues=queues, concurrency=args.concurrency,
                                           loglevel=args.loglevel, beat=not args.no_beat,
                                           node=node),
                            env=env, stop_timeout_s=args.stop_timeout)
    def keep_up() -> None:
        # A worker killed mid-change leaves its locks until their lease runs out (8 s of
        # outage for a failover): free the ones whose holding process is gone. A Redis
        # that lost its keys lost the schedule too: write it again from the inventory.
        try:
            # Only while our worker runs: its sites' rounds may be routed here.
            if supervisor.running("worker"):
                mark_sites_alive(client, app.conf.cr_prefix, own_sites, node)
            if routing(current["topology"], inventory, redis_client=client,
                       prefix=app.conf.cr_prefix) != current.get("routing"):
                log.warning("re-routing rounds: a site's orchestrator node came or went, "
                            "or a primary moved")
                resync_schedule(current["topology"])
            for key in release_dead_holders(client, app.conf.cr_prefix):
                log.warning("freed %s: the process holding it is gone", key)
            if missing := missing_entries(app, current["topology"], inventory):
                log.warning("the schedule lost %d entries (%s): writing it again from the "
                            "inventory", len(missing), ", ".join(missing[:3]))
                resync_schedule(current["topology"])
        except RedisError as exc:
            log.warning("could not check locks and schedule in Redis: %s", exc)

    # cr_notify: sent from this process's own threads, never from the worker's (notify/)
    from cr_orchestrator.notify.notifier import Notifier

    Notifier(client=client, prefix=app.conf.cr_prefix,
             topology_of=lambda: current["topology"]).start()
    # continuous replica sets: their watchers are threads of this process (act/sync/watcher)
    watchers = _watchers(client, app.conf.cr_prefix, node, lambda: current["topology"],
                         args.vault_password_file)

    def keep_up_and_watch() -> None:
        keep_up()
        try:
            watchers.tick()
        except RedisError as exc:
            log.warning("could not check the continuous replication watchers: %s", exc)

    try:
        return _supervise(supervisor, inventory, args, resync_schedule, load_topology,
                          inventory_signature, keep_up_and_watch)
    finally:
        watchers.stop()


def _watchers(client, prefix: str, node: str, topology_of, vault_password_file):
    from cr_orchestrator.act.changes import Env, sync_sets
    from cr_orchestrator.errors import StateError
    from cr_orchestrator.runtime.cycle import serving_elsewhere
    from cr_orchestrator.act.sync.watcher import (SetWatcher, WatcherSupervisor,
                                                  WindowsSetWatcher, is_linux_set)
    from cr_orchestrator.state.cluster import ClusterState
    from cr_orchestrator.state.freshness import FreshnessStore

    def make(topology, cluster, rs) -> SetWatcher | WindowsSetWatcher:
        env = Env(topology=topology, redis=client, prefix=prefix,
                  vault_password_file=vault_password_file)
        def full_pass() -> object:
            if serving := serving_elsewhere(env, cluster):  # as the scheduled sync_set task
                raise StateError(f"{', '.join(serving)} serve(s) without being primary "
                                 "(waiting for the demotion)")
            return sync_sets(env, cluster, sets=[rs.name])

        common = dict(topology=topology, cluster=cluster, replica_set=rs,
                      state=ClusterState(client, prefix), store=FreshnessStore(client, prefix),
                      full_pass=full_pass)
        if not is_linux_set(topology, cluster, rs):
            return WindowsSetWatcher(**common)
        # as the scheduled sync: nothing is copied into a member that serves undemoted
        return SetWatcher(**common, serving_elsewhere=lambda: serving_elsewhere(env, cluster))

    return WatcherSupervisor(topology_of=topology_of, make_watcher=make, redis_client=client,
                             prefix=prefix, node=node)


def _supervise(supervisor: Supervisor, inventory: str, args, resync_schedule, load_topology,
               inventory_signature, keep_up) -> int:
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
            supervisor.revive()
            keep_up()
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
    print("crctl run: stopped (on request)", file=sys.stderr)
    return code
