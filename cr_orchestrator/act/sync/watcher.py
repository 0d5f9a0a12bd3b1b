"""Continuous replication of one replica set: the watch on the primary and its batches.

:class:`SetWatcher` runs in a thread of the orchestrator (``crctl run`` starts one per
``continuous: true`` set, see :class:`WatcherSupervisor`). It

1. reads the live primary and epoch from Redis, and starts ``inotifywait -m -r`` there
   over ssh (the same transport and connection as the periodic pass);
2. once every directory is watched, runs a full pass (``full_pass``: the periodic sync,
   under the set lock): what changed before the watch began is copied, and from then
   on the watch covers everything;
3. gathers the changed paths for at most ``batch`` and sends them from the primary with
   ``rsync --files-from`` through the epoch fence, under the set lock and each target
   path's lock, then records per target the time up to which the target has every
   change (the batch's cut);
4. stops, and starts again from 1, when the primary or the epoch moved (a failover), the
   inotify queue overflowed, or the ssh session ended. A batch cut before a failover
   carries the old epoch: the new primary's fence refuses it.

Nothing here decides a topology change; it copies, and says what it copied.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import redis as redis_lib

from cr_orchestrator.errors import CrError
from cr_orchestrator.model import Cluster, Platform, ReplicaSet, Topology
from cr_orchestrator.act.sync import continuous, rsync
from cr_orchestrator.act.sync.linux import run_ssh
from cr_orchestrator.act.sync.plan import SyncPlan, TargetPlan, plan_sync
from cr_orchestrator.state.cluster import ClusterState
from cr_orchestrator.state.freshness import FreshnessStore, TargetPathLock

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0  # a huge tree takes a while to watch; past this, start again
IDLE_RECORD_S = 1.0  # how often a quiet watch says "nothing changed" to the freshness
BATCH_DEADLINE_S = 60.0
LOCK_TTL_S = 30.0
# A batch every half second cannot pay two ssh handshakes (~0.3 s each, NOTES.md): the
# orchestrator's ssh to the primary and the primary's to each target stay open.
INNER_MUX = ("-o", "ControlMaster=auto", "-o", "ControlPath=/tmp/cr-batch-%C",
             "-o", "ControlPersist=60")
PRIMARY_CHECK_S = 0.5  # how often a quiet watch asks Redis whether the primary moved


@dataclass(frozen=True)
class BatchResult:
    """One batch sent to one target."""

    host: str
    ok: bool
    files: int | None
    cut_at: float
    error: str | None = None


class SetWatcher:
    """Watch one continuous replica set and send its changes (see the module docstring)."""

    def __init__(self, *, topology: Topology, cluster: Cluster, replica_set: ReplicaSet,
                 state: ClusterState, store: FreshnessStore,
                 full_pass: Callable[[], object], inner_key_file: str | None = None,
                 ssh_control_dir: str | None = None,
                 on_batch: Callable[[list[BatchResult]], None] | None = None,
                 serving_elsewhere: Callable[[], list[str]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.topology, self.cluster, self.rs = topology, cluster, replica_set
        self.state, self.store, self.full_pass = state, store, full_pass
        self.inner_key_file = inner_key_file
        self.control_dir = ssh_control_dir or default_control_dir()
        self.on_batch = on_batch or (lambda results: None)
        # members serving without being the primary (not demoted yet): no batch goes there
        self.serving_elsewhere = serving_elsewhere or (lambda: [])
        # host -> the cut of a batch it did not get: only a full pass started later
        # vouches for it again
        self.missed_at: dict[str, float] = {}
        self.clock = clock
        self.locks = TargetPathLock(store.redis, store.prefix)
        self.stopping = threading.Event()
        self.proc: subprocess.Popen[str] | None = None
        self.watching_since: float | None = None
        self.batches = 0
        self.plan: SyncPlan | None = None
        self.restarts = 0

    # -- lifecycle ----------------------------------------------------------------------
    def stop(self) -> None:
        self.stopping.set()
        self._end_watch()

    def run(self) -> None:
        """Watch until :meth:`stop`; each ended watch starts again after a short pause."""
        while not self.stopping.is_set():
            try:
                why = self._watch_once()
            except (CrError, OSError, ConnectionError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive one bad batch
                log.exception("%s/%s: watcher failed", self.cluster.name, self.rs.name)
                why = f"unexpected {type(exc).__name__}: {exc}"
            self._end_watch()
            if self.stopping.is_set():
                break
            self.restarts += 1
            log.warning("%s/%s: watch ended (%s); starting again", self.cluster.name,
                        self.rs.name, why)
            self.stopping.wait(1.0)

    def _end_watch(self) -> None:
        proc, self.proc = self.proc, None
        self.watching_since = None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    # -- one watch ----------------------------------------------------------------------
    def _plan(self) -> SyncPlan:
        if self.plan is None:
            raise RuntimeError("no watch started: no plan")
        return self.plan

    def _primary(self) -> tuple[str, int]:
        primary = self.state.primary(self.cluster.name) or self.cluster.configured_primary
        return primary, self.state.epoch(self.cluster.name)

    def _watch_once(self) -> str:
        source, epoch = self._primary()
        host = self.topology.hosts[source]
        if host.ssh is None:
            return f"{source} has no ssh settings"
        # the targets follow the primary: every other member of the set
        self.plan = plan_sync(topology=self.topology, cluster=self.cluster.name,
                              replica_set=self.rs.name, source=source)
        root = self.plan.source_path
        os.makedirs(self.control_dir, mode=0o700, exist_ok=True)
        argv = rsync.outer_ssh_argv(ssh=host.ssh, address=host.management_address,
                                    command=continuous.watch_command(root),
                                    control_dir=self.control_dir)
        # stdin stays open and unwritten: its EOF on the primary ends the watch there
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        lines: queue.Queue[tuple[float, str | None]] = queue.Queue()
        threading.Thread(target=_read_lines, args=(self.proc, lines, self.clock),
                         name=f"watch-{self.cluster.name}-{self.rs.name}", daemon=True).start()
        batch = continuous.Batch(self.rs.batch_s)
        started = self.clock()
        caught_up = False
        checked_at = started
        last_idle_record = 0.0
        while not self.stopping.is_set():
            now = self.clock()
            if self.watching_since is None and now - started > READY_TIMEOUT_S:
                return f"the watch on {source} was not established within {READY_TIMEOUT_S:.0f} s"
            # every line already read goes into the batch before it may be cut
            for at, line in _drain(lines, timeout_s=batch.wait_s(now, 0.25)):
                if line is None:
                    return f"the watch session to {source} ended"
                change = continuous.parse_line(line, root)
                if change.kind == "ready":
                    self.watching_since = at
                    log.info("%s/%s: watching %s:%s", self.cluster.name, self.rs.name,
                             source, root)
                elif change.kind == "overflow":
                    return change.why + "; a full pass follows the new watch"
                elif change.kind == "full":
                    caught_up = False  # a moved tree: the full pass copies it
                elif change.kind == "path" and change.path:
                    batch.add(change.path, at)
            if self.watching_since is None:
                continue
            now = self.clock()
            if now - checked_at >= PRIMARY_CHECK_S or batch.due(now):
                # before every batch, and while quiet: a failover ends this watch
                if (source, epoch) != self._primary():
                    return "the primary or the epoch changed: watching the new primary"
                checked_at = now
            if not caught_up:
                caught_up = self._full_pass()
                continue
            if batch.due(now):
                paths = batch.paths.copy()
                if self._send(source, epoch, batch.take(), cut_at=now) is False:
                    for path in paths:  # the set lock was busy: keep them for the next try
                        batch.add(path, now)
                    self.stopping.wait(0.05)
            elif batch.first_at is None and now - last_idle_record >= IDLE_RECORD_S:
                # Quiet: the reader has read every line; one written more than a batch
                # ago on the primary has arrived (a link that slow ends the watch anyway)
                self._record_quiet(source, epoch, fresh_from=now - self.rs.batch_s)
                last_idle_record = now
        return "stopped"

    def _full_pass(self) -> bool:
        """The catch-up pass after a (re)started watch; False: the set lock was busy."""
        try:
            self.full_pass()
        except CrError as exc:
            log.info("%s/%s: catch-up pass not run now (%s)", self.cluster.name, self.rs.name,
                     exc)
            self.stopping.wait(0.5)
            return False
        return True

    # -- one batch ----------------------------------------------------------------------
    def _send(self, source: str, epoch: int, paths: list[str], *, cut_at: float) -> bool:
        """Send ``paths`` to every target; False when the set lock is held (a full pass
        runs: the batch waits for it)."""
        from cr_orchestrator.state.cluster import LockBusy

        try:
            with self.state.lock(cluster=self.cluster.name, replica_set=self.rs.name,
                                 ttl_s=LOCK_TTL_S, wait_s=0.0):
                serving = set(self.serving_elsewhere())
                targets = self._plan().targets

                def one(target: TargetPlan) -> BatchResult:
                    if target.host in serving:
                        return self._hold(target, cut_at)
                    return self._send_one(source, epoch, target, paths, cut_at=cut_at)

                # targets in parallel, as the full pass: a slow one must not delay the others
                with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
                    results = list(pool.map(one, targets))
        except LockBusy:
            return False
        for result in results:
            if not result.ok:  # whatever failed (lock, ssh, rsync, a hold)
                self.missed_at[result.host] = result.cut_at
        self.batches += 1
        self.on_batch(results)
        return True

    def _hold(self, target: TargetPlan, cut_at: float) -> BatchResult:
        return BatchResult(target.host, False, None, cut_at,
                           f"{target.host} serves without being the primary: no batch goes "
                           "there before its demotion")

    def _send_one(self, source: str, epoch: int, target: TargetPlan, paths: list[str], *,
                  cut_at: float) -> BatchResult:
        host = self.topology.hosts[target.host]
        src = self.topology.hosts[source]
        owner = f"{self.cluster.name}/{self.rs.name} batch from {source}"
        try:
            token = self.locks.acquire(host=target.host, path=target.path, owner=owner,
                                       ttl_s=BATCH_DEADLINE_S * 2)
        except CrError as exc:
            return BatchResult(target.host, False, None, cut_at, str(exc))
        try:
            if host.ssh is None:
                return BatchResult(target.host, False, None, cut_at, "no ssh settings")
            argv = continuous.files_from_argv(
                source_path=self._plan().source_path, target_user=host.ssh.user,
                target_address=target.address, target_path=target.path,
                cluster=self.cluster.name, epoch=epoch,
                inner_ssh=[*rsync.ssh_options(host.ssh, key_file=self.inner_key_file),
                           *INNER_MUX],
                excludes=self.rs.excludes, checksum=self.rs.checksum,
                bandwidth_limit_kbps=self.rs.bandwidth_limit_kbps)
            done = run_ssh(src, rsync.remote_command(argv, deadline_s=BATCH_DEADLINE_S),
                           deadline_s=BATCH_DEADLINE_S, stdin=continuous.stdin_of(paths),
                           control_dir=self.control_dir)
        finally:
            self.locks.release(host=target.host, path=target.path, token=token)
        if done.timed_out or done.rc not in rsync.TOLERATED_CODES:
            error = (f"batch of {len(paths)} path(s) {source} → {target.host} failed: "
                     f"{rsync.describe_exit(-1 if done.rc is None else done.rc)}; "
                     f"{done.stderr.strip().splitlines()[-1:] or 'no message'}")
            self.store.record_failure(cluster=self.cluster.name, set_name=self.rs.name,
                                      host=target.host, source=source, epoch=epoch,
                                      started_at=cut_at, ended_at=self.clock(), error=error,
                                      every_s=self.rs.every_s)
            return BatchResult(target.host, False, None, cut_at, error)
        stats = rsync.parse_stats(done.stdout)
        # every change made a batch before the cut had reached the orchestrator by then
        # (the same margin as a quiet watch): a line still on its way is not claimed
        self._advance(source, epoch, target.host, fresh_from=cut_at - self.rs.batch_s,
                      files=stats.files_transferred, bytes_sent=stats.bytes_sent)
        return BatchResult(target.host, True, stats.files_transferred, cut_at)

    def _advance(self, source: str, epoch: int, host: str, *, fresh_from: float,
                 files: int | None = None, bytes_sent: int | None = None) -> None:
        record = self.store.get(cluster=self.cluster.name, set_name=self.rs.name, host=host)
        ok, why = continuous.may_advance_freshness(
            watching_since=self.watching_since, target_fresh_from=record.last_success_started_at)
        if not ok:
            log.debug("%s/%s → %s: freshness not advanced: %s", self.cluster.name,
                      self.rs.name, host, why)
            return
        if record.last_success_started_at is not None and fresh_from <= record.last_success_started_at:
            return
        missed = self.missed_at.get(host)
        if missed is not None:
            if (record.last_success_started_at or 0.0) <= missed:
                return  # a batch it did not get: waiting for a full pass
            del self.missed_at[host]
        self.store.record_success(cluster=self.cluster.name, set_name=self.rs.name, host=host,
                                  source=source, epoch=epoch, started_at=fresh_from,
                                  ended_at=self.clock(), bytes_sent=bytes_sent, files=files)

    def _record_quiet(self, source: str, epoch: int, *, fresh_from: float) -> None:
        for target in self._plan().targets:
            record = self.store.get(cluster=self.cluster.name, set_name=self.rs.name,
                                    host=target.host)
            if record.last_error is None:  # a failed target waits for its next good batch
                self._advance(source, epoch, target.host, fresh_from=fresh_from,
                              files=0, bytes_sent=0)


def default_control_dir() -> str:
    """Where the orchestrator keeps its shared ssh connections to the primaries."""
    return os.path.join(tempfile.gettempdir(), f"cr-watch-ssh-{os.getuid()}")


def _drain(lines: queue.Queue[tuple[float, str | None]], *,
           timeout_s: float) -> list[tuple[float, str | None]]:
    """The lines waiting (at least one, if it comes within ``timeout_s``)."""
    try:
        got = [lines.get(timeout=timeout_s)]
    except queue.Empty:
        return []
    while True:
        try:
            got.append(lines.get_nowait())
        except queue.Empty:
            return got


def _read_lines(proc: subprocess.Popen[str], out: queue.Queue[tuple[float, str | None]],
                clock: Callable[[], float]) -> None:
    """Each line of the watch with the time it was read; None at the end."""
    assert proc.stdout is not None
    for line in proc.stdout:
        out.put((clock(), line))
    out.put((clock(), None))


class WindowsSetWatcher:
    """The Windows counterpart of :class:`SetWatcher`: back-to-back windows of the
    FileSystemWatcher script on the live primary (:mod:`windows_continuous`), a full pass
    after a window that overflowed or never started, each window at the epoch read from
    Redis when it starts (the script stops by itself when its host's epoch moves on)."""

    WINDOW_S = 60

    def __init__(self, *, topology: Topology, cluster: Cluster, replica_set: ReplicaSet,
                 state: ClusterState, store: FreshnessStore,
                 full_pass: Callable[[], object]) -> None:
        self.topology, self.cluster, self.rs = topology, cluster, replica_set
        self.state, self.store, self.full_pass = state, store, full_pass
        self.stopping = threading.Event()
        self.windows = 0

    def stop(self) -> None:
        self.stopping.set()  # the window running ends at its own end (WINDOW_S at most)

    def run(self) -> None:
        from cr_orchestrator.act.sync.windows_continuous import run_window

        while not self.stopping.is_set():
            source = self.state.primary(self.cluster.name) or self.cluster.configured_primary
            epoch = self.state.epoch(self.cluster.name)
            try:
                plan = plan_sync(topology=self.topology, cluster=self.cluster.name,
                                 replica_set=self.rs.name, source=source)
                report = run_window(topology=self.topology, plan=plan, epoch=epoch,
                                    store=self.store,
                                    window_s=int(min(self.WINDOW_S, max(5, self.rs.every_s))))
                self.windows += 1
                if report.needs_full_pass:
                    self.full_pass()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive one bad window
                log.warning("%s/%s: continuous window failed (%s: %s)", self.cluster.name,
                            self.rs.name, type(exc).__name__, exc)
                self.stopping.wait(5.0)


class WatcherSupervisor:
    """One :class:`SetWatcher` thread per continuous set of the topology, while this
    process holds that set's watch lease in Redis (one watcher per set across
    orchestrator nodes: two would only send every batch twice)."""

    LEASE_S = 10.0

    def __init__(self, *, topology_of: Callable[[], Topology], make_watcher:
                 Callable[[Topology, Cluster, ReplicaSet], SetWatcher | WindowsSetWatcher],
                 redis_client: redis_lib.Redis,
                 prefix: str, node: str) -> None:
        self.topology_of, self.make_watcher = topology_of, make_watcher
        self.redis, self.prefix, self.node = redis_client, prefix, node
        self.running: dict[tuple[str, str],
                           tuple[SetWatcher | WindowsSetWatcher, threading.Thread]] = {}

    def lease_key(self, cluster: str, set_name: str) -> str:
        return f"{self.prefix}:watcher:{cluster}:{set_name}"

    def tick(self) -> None:
        """Start what should run, stop what should not (called every loop of crctl run)."""
        topology = self.topology_of()
        wanted = {(c.name, rs.name): (c, rs) for c in topology.clusters.values()
                  for rs in c.replica_sets if rs.continuous}
        for key in list(self.running):
            if key not in wanted or not self._hold(*key):
                self._stop(key)
        for key, (c, rs) in wanted.items():
            running = self.running.get(key)
            if running is not None and running[1].is_alive():
                continue
            if self._hold(*key):
                watcher = self.make_watcher(topology, c, rs)
                thread = threading.Thread(target=watcher.run, name=f"watcher-{key[0]}-{key[1]}",
                                          daemon=True)
                thread.start()
                self.running[key] = (watcher, thread)

    def _hold(self, cluster: str, set_name: str) -> bool:
        key = self.lease_key(cluster, set_name)
        ms = int(self.LEASE_S * 1000)
        if self.redis.set(key, self.node, nx=True, px=ms):
            return True
        holder = self.redis.get(key)
        holder = holder.decode() if isinstance(holder, bytes) else holder
        if holder == self.node:
            self.redis.pexpire(key, ms)
            return True
        return False

    def _stop(self, key: tuple[str, str]) -> None:
        watcher, thread = self.running.pop(key)
        watcher.stop()
        thread.join(5)
        # given back only if still ours: another node may already have taken it over
        self.redis.eval(_RELEASE_IF_OURS, 1, self.lease_key(*key), self.node)

    def stop(self) -> None:
        for key in list(self.running):
            self._stop(key)


_RELEASE_IF_OURS = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def is_linux_set(topology: Topology, cluster: Cluster, rs: ReplicaSet) -> bool:
    hosts = [cluster.configured_primary, *(t.host for t in rs.targets)]
    return all(topology.hosts[h].platform is Platform.LINUX for h in hosts if h in topology.hosts)
