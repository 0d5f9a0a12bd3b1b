"""The notifier: follows every cluster's history and sends what it calls for.

It reads each cluster's event stream through a Redis consumer group, so several
notifiers (one per ``crctl serve``) send each notification once, and an event is
acknowledged only when every delivery of it has ended (sent, or given up after its
retries). It never sits on the path of a change: the worker appends the promotion to
history and goes on; deliveries run in this process's own thread pool, each with its
own retries and back-off, so a receiver that is down delays only its own messages.

A replica behind is told from the freshness records (lag above the policy's
``max_replica_lag``), once per episode: a Redis hash remembers which targets were told.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import redis

from cr_orchestrator.model import Topology
from cr_orchestrator.notify.messages import Notification, behind_notification, notification_for
from cr_orchestrator.notify.senders import post_webhook, send_mail, with_retries
from cr_orchestrator.notify.targets import NotifyKind, NotifyTargets

log = logging.getLogger(__name__)

# An entry handed to a notifier that died before it was done (killed, its machine gone)
# is taken over by another after this long. Longer than a delivery can last with its
# retries (Retry below: at most ~61 s), so a live notifier's entry is never taken.
ORPHAN_IDLE_S = 300.0
CLAIM_EVERY_S = 30.0


@dataclass(frozen=True)
class Retry:
    attempts: int = 6  # 1 + 5 retries: 1, 2, 4, 8, 16 s apart (31 s in all)
    first_delay_s: float = 1.0
    max_delay_s: float = 60.0
    timeout_s: float = 5.0  # per try: a hanging receiver costs at most this per try


class Notifier:
    def __init__(self, *, client: redis.Redis, prefix: str, topology_of, retry: Retry = Retry(),
                 behind_every_s: float = 10.0, orphan_idle_s: float = ORPHAN_IDLE_S,
                 claim_every_s: float = CLAIM_EVERY_S) -> None:
        self.client, self.prefix, self.topology_of, self.retry = client, prefix, topology_of, retry
        self.group = f"{prefix}:notify"
        self.consumer = f"{socket.gethostname()}:{os.getpid()}"
        self.behind_every_s = behind_every_s
        self.orphan_idle_s, self.claim_every_s = orphan_idle_s, claim_every_s
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="cr-notify")
        self.stop_event = threading.Event()
        self._ready: set[str] = set()

    # -- the loop -----------------------------------------------------------------------
    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="cr-notifier", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.stop_event.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def run(self) -> None:
        next_behind = next_claim = 0.0
        while not self.stop_event.is_set():
            try:
                topology = self.topology_of()
                streams = self._streams(topology)
                if time.time() >= next_behind:
                    next_behind = time.time() + self.behind_every_s
                    self.check_behind(topology)
                if time.time() >= next_claim:
                    next_claim = time.time() + self.claim_every_s
                    self.claim_orphans(topology, streams)
                if not streams:
                    self.stop_event.wait(1.0)
                    continue
                got = self.client.xreadgroup(self.group, self.consumer, streams, count=50,
                                             block=1000)
                for key, entries in got or []:
                    for entry_id, fields in entries:
                        self._handle(topology, key.decode(), entry_id.decode(), fields)
            except redis.RedisError as exc:
                if "NOGROUP" in str(exc) or "no longer exists" in str(exc):
                    self._ready.clear()  # a stream deleted under us: make the groups again
                log.warning("notifier: Redis: %s; again in 2 s", exc)
                self.stop_event.wait(2.0)
            except Exception:  # the loop must outlive one bad event or inventory reload
                log.exception("notifier: unexpected error; again in 2 s")
                self.stop_event.wait(2.0)

    def _streams(self, topology: Topology) -> dict[str, str]:
        streams = {}
        for name, cluster in topology.clusters.items():
            if cluster.notify is None:
                continue
            key = f"{self.prefix}:cluster:{name}:events"
            if key not in self._ready:
                try:  # from now on: a notifier started later does not replay old history
                    self.client.xgroup_create(key, self.group, id="$", mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
                self._ready.add(key)
            streams[key] = ">"
        return streams

    def claim_orphans(self, topology: Topology, streams: dict[str, str]) -> None:
        """Take over and handle the entries a dead notifier left unacknowledged."""
        for key in streams:
            answer = self.client.xautoclaim(key, self.group, self.consumer,
                                            min_idle_time=int(self.orphan_idle_s * 1000),
                                            start_id="0-0", count=100)
            for entry_id, fields in answer[1]:
                if fields:  # (an entry trimmed from the stream meanwhile comes back empty)
                    log.warning("notifier: taking over %s of %s from a notifier that stopped",
                                entry_id.decode(), key)
                    self._handle(topology, key, entry_id.decode(), fields)

    def _handle(self, topology: Topology, key: str, entry_id: str, fields: dict) -> None:
        import json

        cluster = key[len(f"{self.prefix}:cluster:"):-len(":events")]
        targets = topology.clusters[cluster].notify if cluster in topology.clusters else None
        try:
            note = notification_for(cluster=cluster, event_id=entry_id, at=float(fields[b"at"]),
                                    kind=fields[b"kind"].decode(),
                                    data=json.loads(fields[b"data"]))
        except (KeyError, ValueError) as exc:
            log.warning("notifier: skipping malformed entry %s of %s: %s", entry_id, key, exc)
            note = None
        if note is None or targets is None or note.kind not in targets.kinds:
            self.client.xack(key, self.group, entry_id)
            return
        self.deliver(targets, note, done=lambda: self.client.xack(key, self.group, entry_id))

    # -- deliveries ---------------------------------------------------------------------
    def deliver(self, targets: NotifyTargets, note: Notification, *, done=None) -> None:
        """Send ``note`` to every target, each in a pool thread with its own retries;
        ``done()`` runs when all of them have ended."""
        jobs = [(hook.shown(), lambda h=hook: post_webhook(h, note, timeout_s=self.retry.timeout_s))
                for hook in targets.webhooks]
        if targets.smtp is not None:
            smtp = targets.smtp
            jobs.append((f"smtp://{smtp.server}:{smtp.port}",
                         lambda: send_mail(smtp, note, timeout_s=self.retry.timeout_s)))
        left = [len(jobs)]
        lock = threading.Lock()
        log.info("notifying %s: %s (%d target(s))", note.kind.value, note.title, len(jobs))

        def one(what: str, send) -> None:
            try:
                with_retries(send, what=what, attempts=self.retry.attempts,
                             first_delay_s=self.retry.first_delay_s,
                             max_delay_s=self.retry.max_delay_s, stop=self.stop_event)
            finally:
                with lock:
                    left[0] -= 1
                    last = left[0] == 0
                if last and done is not None:
                    try:
                        done()
                    except redis.RedisError as exc:
                        log.warning("notifier: could not acknowledge %s: %s", note.event_id, exc)

        for what, send in jobs:
            self.pool.submit(one, what, send)

    # -- replicas behind ----------------------------------------------------------------
    def check_behind(self, topology: Topology) -> None:
        from cr_orchestrator.state.cluster import ClusterState
        from cr_orchestrator.state.freshness import FreshnessStore

        fresh = FreshnessStore(self.client, self.prefix)
        state = ClusterState(self.client, self.prefix)
        now = time.time()
        for name, cluster in sorted(topology.clusters.items()):
            notify = cluster.notify
            if notify is None or NotifyKind.REPLICA_BEHIND not in notify.kinds:
                continue
            primary = state.primary(name) or cluster.configured_primary
            told = f"{self.prefix}:notify:behind:{name}"
            limit = cluster.policy.max_replica_lag_s
            for rs in cluster.replica_sets:
                for host, record in fresh.freshness(name, rs.name, now=now).items():
                    field = f"{rs.name}/{host}"
                    if host == primary or record.lag_s is None or record.lag_s <= limit:
                        self.client.hdel(told, field)
                        continue
                    if self.client.hsetnx(told, field, repr(now)):  # once per episode, across notifiers
                        self.deliver(notify, behind_notification(
                            cluster=name, replica_set=rs.name, target=host, lag_s=record.lag_s,
                            max_lag_s=limit, now=now))
