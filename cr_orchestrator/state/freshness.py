"""How fresh each replica is, kept in Redis, and the per-target-path lock.

Keys (all under ``prefix``, default ``cr``):

- ``{prefix}:sync:{cluster}:{set}:target:{host}`` — hash: the last successful sync into
  ``host`` (time, start time, source, epoch, bytes, files, duration) and the last failure
  (error, time, consecutive failures, next retry time).
- ``{prefix}:sync:{cluster}:{set}:targets`` — set of hosts that have a target record.
- ``{prefix}:sync:{cluster}:{set}:source:{host}`` — hash: the start time and epoch of the
  last run *from* ``host``; failback reconciliation uses it.
- ``{prefix}:sync:lock:{host}:{normalized path}`` — one writer per target path (N:1).

Nothing here holds a secret: errors are built from host names, paths and exit codes.
"""

from __future__ import annotations

import ntpath
import posixpath
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis as redis_lib

from cr_orchestrator.errors import SyncError
from cr_orchestrator.state.batch import Batch, Later

MAX_RETRY_DELAY_S = 900.0
MIN_RETRY_DELAY_S = 5.0


@dataclass(frozen=True)
class Freshness:
    """What the staleness gate needs to know about one target of one replica set."""

    host: str
    last_success_at: float | None = None  # when the last successful sync ended
    last_success_started_at: float | None = None  # the data is at least this fresh
    last_success_source: str | None = None
    last_success_epoch: int | None = None
    bytes: int | None = None  # bytes sent by the last successful sync
    files: int | None = None  # files transferred by the last successful sync
    duration_s: float | None = None
    last_attempt_at: float | None = None
    last_error: str | None = None  # None once a sync succeeded again
    last_error_at: float | None = None
    consecutive_failures: int = 0
    next_retry_at: float | None = None
    lag_s: float | None = None  # now - last_success_started_at, at read time

    def lag_at(self, now: float) -> float | None:
        """Seconds of writes the target may be missing (None: never synced)."""
        if self.last_success_started_at is None:
            return None
        return max(0.0, now - self.last_success_started_at)


def retry_delay_s(*, consecutive_failures: int, every_s: float) -> float:
    """Exponential backoff after a failed sync: interval × 2^(n-1), within 5 s .. 15 min."""
    base = max(MIN_RETRY_DELAY_S, every_s)
    return min(MAX_RETRY_DELAY_S, base * 2 ** max(0, consecutive_failures - 1))


def _num(raw: dict, key: str, kind=float):
    value = raw.get(key)
    return None if value in (None, "") else kind(value)


def _record(host: str, hash_: dict, now: float | None) -> Freshness:
    """A target's hash (``HGETALL``) as its :class:`Freshness`, lag at ``now``."""
    raw = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
           for k, v in hash_.items()}
    record = Freshness(
        host=host,
        last_success_at=_num(raw, "last_success_at"),
        last_success_started_at=_num(raw, "last_success_started_at"),
        last_success_source=raw.get("last_success_source") or None,
        last_success_epoch=_num(raw, "last_success_epoch", int),
        bytes=_num(raw, "bytes", int), files=_num(raw, "files", int),
        duration_s=_num(raw, "duration_s"), last_attempt_at=_num(raw, "last_attempt_at"),
        last_error=raw.get("last_error") or None, last_error_at=_num(raw, "last_error_at"),
        consecutive_failures=int(raw.get("consecutive_failures") or 0),
        next_retry_at=_num(raw, "next_retry_at"),
    )
    lag = record.lag_at(time.time() if now is None else now)
    return Freshness(**{**record.__dict__, "lag_s": lag})


class FreshnessStore:
    """Per-target freshness records in Redis (see the module docstring for the keys)."""

    def __init__(self, redis: redis_lib.Redis, prefix: str = "cr") -> None:
        self.redis = redis
        self.prefix = prefix

    def _base(self, cluster: str, set_name: str) -> str:
        return f"{self.prefix}:sync:{cluster}:{set_name}"

    def _target_key(self, cluster: str, set_name: str, host: str) -> str:
        return f"{self._base(cluster, set_name)}:target:{host}"

    def record_success(self, *, cluster: str, set_name: str, host: str, source: str,
                       epoch: int, started_at: float, ended_at: float, bytes_sent: int | None,
                       files: int | None) -> None:
        fields = {
            "last_success_at": ended_at, "last_success_started_at": started_at,
            "last_success_source": source, "last_success_epoch": epoch,
            "bytes": "" if bytes_sent is None else bytes_sent,
            "files": "" if files is None else files,
            "duration_s": round(ended_at - started_at, 3), "last_attempt_at": started_at,
            "last_error": "", "consecutive_failures": 0, "next_retry_at": "",
        }
        pipe = self.redis.pipeline()
        pipe.hset(self._target_key(cluster, set_name, host), mapping=fields)
        pipe.sadd(f"{self._base(cluster, set_name)}:targets", host)
        pipe.execute()

    def record_failure(self, *, cluster: str, set_name: str, host: str, source: str,
                       epoch: int, started_at: float, ended_at: float, error: str,
                       every_s: float) -> Freshness:
        key = self._target_key(cluster, set_name, host)
        failures = int(self.redis.hget(key, "consecutive_failures") or 0) + 1
        delay = retry_delay_s(consecutive_failures=failures, every_s=every_s)
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping={
            "last_attempt_at": started_at, "last_error": f"[from {source}, epoch {epoch}] {error}",
            "last_error_at": ended_at, "consecutive_failures": failures,
            "next_retry_at": ended_at + delay,
        })
        pipe.sadd(f"{self._base(cluster, set_name)}:targets", host)
        pipe.execute()
        return self.get(cluster=cluster, set_name=set_name, host=host, now=ended_at)

    def get(self, *, cluster: str, set_name: str, host: str, now: float | None = None) -> Freshness:
        return _record(host, self.redis.hgetall(self._target_key(cluster, set_name, host)), now)

    def freshness(self, cluster: str, set_name: str, *, now: float | None = None
                  ) -> dict[str, Freshness]:
        """Every target's record of ``cluster``/``set_name`` (lag computed at ``now``)."""
        hosts = sorted(h.decode() if isinstance(h, bytes) else h
                       for h in self.redis.smembers(f"{self._base(cluster, set_name)}:targets"))
        return {h: self.get(cluster=cluster, set_name=set_name, host=h, now=now) for h in hosts}

    def read_records(self, batch: Batch, cluster: str, set_name: str, *, hosts: list[str],
                     now: float) -> Later[dict[str, Freshness]]:
        """The records of those of ``hosts`` that have one, queued on ``batch``: what
        :meth:`freshness` gives for them, without reading the set of targets first (a
        probe round asks for its members only, with its other reads)."""
        keys = [self._target_key(cluster, set_name, h) for h in hosts]

        def queue(pipe: Any) -> None:
            for key in keys:
                pipe.hgetall(key)

        return batch.add(queue, lambda replies: {
            h: _record(h, raw, now) for h, raw in zip(hosts, replies) if raw})

    def record_source_run(self, *, cluster: str, set_name: str, host: str,
                          started_at: float, epoch: int) -> None:
        """Note that a run from ``host`` started (whatever its outcome)."""
        self.redis.hset(f"{self._base(cluster, set_name)}:source:{host}",
                        mapping={"started_at": started_at, "epoch": epoch})

    def last_source_run(self, *, cluster: str, set_name: str, host: str
                        ) -> tuple[float, int] | None:
        """(start time, epoch) of the last run from ``host``, or None."""
        raw = self.redis.hgetall(f"{self._base(cluster, set_name)}:source:{host}")
        if not raw:
            return None
        raw = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
        return float(raw["started_at"]), int(raw["epoch"])

    def claim_epoch(self, *, cluster: str, epoch: int, source: str) -> None:
        """Fence stale actors: refuse an epoch older than one already seen, or a second
        source for the same epoch (one primary per epoch). Atomic (Lua)."""
        verdict = self.redis.eval(_CLAIM_EPOCH, 1, f"{self.prefix}:sync:{cluster}:epoch",
                                  int(epoch), source)
        verdict = [v.decode() if isinstance(v, bytes) else v for v in verdict]
        if verdict[0] == "stale":
            raise SyncError(f"refusing to sync {cluster} from {source} at epoch {epoch}: epoch "
                            f"{verdict[1]} (primary {verdict[2]}) already synced; this caller "
                            "is stale")
        if verdict[0] == "conflict":
            raise SyncError(f"refusing to sync {cluster} from {source} at epoch {epoch}: that "
                            f"epoch's primary is {verdict[2]}, not {source}")

    def keys(self) -> list[str]:
        """Every key this store (and its locks) may have written: for tests' cleanup."""
        return [k.decode() if isinstance(k, bytes) else k
                for k in self.redis.scan_iter(match=f"{self.prefix}:sync:*")]


def normalize_target_path(path: str) -> str:
    """One spelling per directory: ``D:\\Data\\`` == ``d:/data``; ``/srv//x/`` == ``/srv/x``."""
    if re.match(r"^[A-Za-z]:[\\/]", path) or path.startswith("\\\\"):
        return ntpath.normpath(path.replace("/", "\\")).rstrip("\\").lower()
    return posixpath.normpath(path)


_CLAIM_EPOCH = """
local seen = redis.call('hget', KEYS[1], 'epoch')
local primary = redis.call('hget', KEYS[1], 'source') or ''
if seen then
  if tonumber(seen) > tonumber(ARGV[1]) then return {'stale', seen, primary} end
  if tonumber(seen) == tonumber(ARGV[1]) and primary ~= ARGV[2] then
    return {'conflict', seen, primary}
  end
end
redis.call('hset', KEYS[1], 'epoch', ARGV[1], 'source', ARGV[2])
return {'ok', ARGV[1], ARGV[2]}
"""

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


class TargetPathLock:
    """``SET NX`` with a TTL on (host, normalized path): one source writes a path at a time."""

    def __init__(self, redis: redis_lib.Redis, prefix: str = "cr") -> None:
        self.redis = redis
        self.prefix = prefix
        self._release = redis.register_script(_RELEASE)
        self._extend = redis.register_script(_EXTEND)

    def key(self, host: str, path: str) -> str:
        return f"{self.prefix}:sync:lock:{host}:{normalize_target_path(path)}"

    def acquire(self, *, host: str, path: str, owner: str, ttl_s: float) -> str:
        """Take the lock or raise :class:`SyncError` naming who holds it; returns a token."""
        token = f"{owner}#{uuid.uuid4().hex[:12]}"
        key = self.key(host, path)
        if self.redis.set(key, token, nx=True, px=max(1000, int(ttl_s * 1000))):
            return token
        holder = self.redis.get(key)
        holder = holder.decode() if isinstance(holder, bytes) else holder
        raise SyncError(f"target path {path} on {host} is being written by another sync "
                        f"({(holder or 'unknown').split('#')[0]}); refusing a second writer")

    def release(self, *, host: str, path: str, token: str) -> None:
        self._release(keys=[self.key(host, path)], args=[token])

    def keep(self, *, host: str, path: str, token: str, ttl_s: float) -> threading.Event:
        """Extend the lock every third of ``ttl_s`` until the returned event is set. A
        short TTL kept alive, not a long one: a sync whose worker is SIGKILLed leaves the
        path to the next sync within ``ttl_s`` (a chaos campaign saw a 300 s TTL stop
        every replica's sync for minutes after a worker kill)."""
        stop = threading.Event()

        def keep_alive() -> None:
            while not stop.wait(ttl_s / 3):
                try:
                    if not self._extend(keys=[self.key(host, path)],
                                        args=[token, max(1000, int(ttl_s * 1000))]):
                        return  # no longer ours: nothing to keep
                except redis_lib.RedisError:
                    continue  # Redis failing over: try again next time, the TTL covers it

        threading.Thread(target=keep_alive, name=f"sync-lock {host}", daemon=True).start()
        return stop
