"""Observations in Redis: a bounded, newest-first history per host.

Keys (all under ``prefix``):

- ``{prefix}:obs:{host}``: a list of JSON observations, newest first, capped at ``maxlen``
  (LPUSH + LTRIM in one transaction) and expiring ``ttl_s`` after the last write, so a
  host removed from the inventory leaves nothing behind for long;
- ``{prefix}:obs:hosts``: the set of hosts that have a history.

Reading never crashes on what another writer (or a bug, or an operator) left behind: an
entry that is not a valid observation is skipped with a warning naming its key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, cast

import redis

from cr_orchestrator.observe.health import Health, Observation
from cr_orchestrator.state.batch import Batch, Later

log = logging.getLogger(__name__)

DEFAULT_MAXLEN = 300  # e.g. 10 minutes of 2-second rounds at ~15 observations per round
DEFAULT_TTL_S = 24 * 3600


def to_json(observation: Observation) -> str:
    """The stored form of one observation (detail must be JSON-serialisable)."""
    return json.dumps({
        "host": observation.host, "vantage": observation.vantage,
        "subject": observation.subject, "health": observation.health.value,
        "at": observation.at, "latency_s": observation.latency_s, "error": observation.error,
        "detail": observation.detail,
    }, separators=(",", ":"), default=str)


def from_json(text: str | bytes) -> Observation:
    """Parse a stored observation; ValueError/KeyError/TypeError when it is not one."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    latency = raw.get("latency_s")
    detail = raw.get("detail") or {}
    if not isinstance(detail, dict):
        raise ValueError("detail is not an object")
    for key in ("host", "vantage", "subject"):
        if not isinstance(raw[key], str):
            raise ValueError(f"{key} is not a string")
    return Observation(
        host=raw["host"], vantage=raw["vantage"], subject=raw["subject"],
        health=Health(raw["health"]), at=float(raw["at"]),
        latency_s=None if latency is None else float(latency),
        error=None if raw.get("error") is None else str(raw["error"]), detail=detail)


_PARSED: dict[bytes | str, Observation] = {}
PARSED_KEPT = 20000  # a round re-reads its whole window; parse each stored entry once


def _parsed(entry: bytes | str, since: float | None = None) -> Observation | None:
    """:func:`from_json`, remembered per process by the stored text (which never changes:
    an entry is written once and trimmed later; an Observation is not modified). None for
    an entry older than ``since``: not worth parsing (most of a shared host's list)."""
    observation = _PARSED.get(entry)
    if observation is None:
        if since is not None and (at := _stored_at(entry)) is not None and at < since:
            return None
        observation = from_json(entry)
        if len(_PARSED) >= PARSED_KEPT:
            _PARSED.clear()  # cheaper than an LRU here: a cleared cache refills in a round
        _PARSED[entry] = observation
    return observation


_AT = b',"at":'


def _stored_at(entry: bytes | str) -> float | None:
    """The ``at`` of a stored observation without parsing it all (None: cannot tell).

    :func:`to_json` writes ``at`` after four strings; a quote inside a JSON string is
    escaped, so the first ``,"at":`` is the key itself."""
    raw = entry.encode() if isinstance(entry, str) else entry
    start = raw.find(_AT)
    if start < 0:
        return None
    start += len(_AT)
    end = raw.find(b",", start)
    try:
        return float(raw[start:end if end >= 0 else len(raw)])
    except ValueError:
        return None


class ObservationStore:
    """Bounded per-host observation history in Redis."""

    def __init__(self, *, client: redis.Redis, prefix: str = "cr",
                 maxlen: int = DEFAULT_MAXLEN, ttl_s: int = DEFAULT_TTL_S) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._redis = client
        self._prefix = prefix
        self._maxlen = maxlen
        self._ttl_s = ttl_s

    def key(self, host: str) -> str:
        return f"{self._prefix}:obs:{host}"

    @property
    def hosts_key(self) -> str:
        return f"{self._prefix}:obs:hosts"

    def add(self, *, observations: Iterable[Observation], pipe: Any = None) -> int:
        """Store observations (one transaction); returns how many were stored.
        ``pipe``: queue the writes on that transaction instead (a round's writes go
        together), which its owner executes."""
        by_host: dict[str, list[str]] = {}
        for o in sorted(observations, key=lambda o: o.at):
            by_host.setdefault(o.host, []).append(to_json(o))
        if not by_host:
            return 0
        own = pipe is None
        if own:
            pipe = self._redis.pipeline(transaction=True)
        for host, entries in by_host.items():
            key = self.key(host)
            pipe.lpush(key, *entries)
            pipe.ltrim(key, 0, self._maxlen - 1)
            pipe.expire(key, self._ttl_s)
        pipe.sadd(self.hosts_key, *by_host)
        pipe.expire(self.hosts_key, self._ttl_s)
        if own:
            pipe.execute()
        return sum(len(e) for e in by_host.values())

    def recent(self, *, host: str, since: float | None = None,
               limit: int | None = None) -> list[Observation]:
        """The host's observations, oldest first; ``since`` drops older ones."""
        key = self.key(host)
        stop = -1 if limit is None else max(limit, 1) - 1
        # cast: redis-py types its commands for the sync and the asyncio client alike
        # (``Awaitable[list] | list``); this is the sync client. bytes, or str with
        # decode_responses.
        entries = cast(list[bytes | str], self._redis.lrange(key, 0, stop))
        return self._parse(key, entries, since)

    @staticmethod
    def _parse(key: str, entries: list[bytes | str], since: float | None) -> list[Observation]:
        """A stored list (newest first) as observations, oldest first, ``since`` on."""
        result: list[Observation] = []
        for index, entry in enumerate(entries):
            try:
                observation = _parsed(entry, since)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("skipping malformed observation #%d in Redis key %s: %s",
                            index, key, exc)
                continue
            if observation is not None and (since is None or observation.at >= since):
                result.append(observation)
        result.reverse()
        return result

    def recent_for(self, *, hosts: Iterable[str], since: float | None = None,
                   limit: int | None = None) -> list[Observation]:
        """:meth:`recent` of several hosts, concatenated (the detector's input)."""
        return [o for h in hosts for o in self.recent(host=h, since=since, limit=limit)]

    def read_recent(self, batch: Batch, *, hosts: Iterable[str],
                    since: float | None = None) -> Later[list[Observation]]:
        """:meth:`recent_for`, queued on ``batch`` (a round reads it with its state)."""
        keys = [self.key(h) for h in hosts]

        def queue(pipe: Any) -> None:
            for key in keys:
                pipe.lrange(key, 0, -1)

        return batch.add(queue, lambda replies: [
            o for key, entries in zip(keys, replies) for o in self._parse(key, entries, since)])

    def hosts(self) -> list[str]:
        """Hosts that have a stored history."""
        members = cast(set[bytes | str], self._redis.smembers(self.hosts_key))  # as in recent()
        return sorted(h.decode() if isinstance(h, bytes) else h for h in members)

    def clear(self, *, host: str) -> None:
        """Forget one host's history (e.g. after it left the inventory)."""
        self._redis.delete(self.key(host))
        self._redis.srem(self.hosts_key, host)
