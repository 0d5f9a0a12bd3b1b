"""Cluster state in Redis: who *is* primary, the epoch, and the audit trail.

Keys (all under ``prefix``, default ``cr``), per cluster ``C``:

- ``{prefix}:cluster:C`` hash: ``primary``, ``epoch`` (fencing token, +1 on every
  promotion, compare-and-set), ``paused``, ``promoted_at``;
- ``{prefix}:cluster:C:decision`` JSON of the last decision;
- ``{prefix}:cluster:C:restarts`` restart attempts made for the current incident;
- ``{prefix}:cluster:C:failovers`` sorted set of failover times;
- ``{prefix}:cluster:C:in_sync_since`` hash host → unix time it became healthy and in sync;
- ``{prefix}:cluster:C:events`` stream: decisions, promotions, playbook runs, syncs;
- ``{prefix}:lock:cluster:C`` / ``{prefix}:lock:set:C:S`` locks (redis-py ``Lock``:
  ``SET NX PX`` with a token, extend, and release only if owned, both in Lua).

Redis is not a consensus store: the epoch only fences, it never proves that an old
primary stopped. Nothing secret is ever written: the JSON encoder refuses
:class:`~cr_orchestrator.model.Secret` values.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import LockError

from cr_orchestrator.state.journal import Step
from cr_orchestrator.procs import pid_alive
from cr_orchestrator.state import redis_address
from cr_orchestrator.state.batch import Batch, Later
from cr_orchestrator.errors import StateError
from cr_orchestrator.model import Secret, Topology

log = logging.getLogger(__name__)

EVENTS_MAXLEN = 100_000  # per cluster, approximate (XADD MAXLEN ~)
QUIET_ACTIONS = ("none", "hold")  # decisions that change nothing: logged when they change

# KEYS[1] cluster hash; ARGV expected epoch, new primary, time, the change's journal
# entry (JSON, or ''). Returns {1, new epoch} or {0, current epoch, current primary}. The
# journal entry lands with the promotion itself: a worker that dies right after the
# promotion always leaves the change it was making for the next one to resume.
_PROMOTE = """
local cur = redis.call('HGET', KEYS[1], 'epoch')
if not cur then cur = '0' end
if cur ~= ARGV[1] then
  return {0, cur, redis.call('HGET', KEYS[1], 'primary') or ''}
end
local new = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'primary', ARGV[2], 'promoted_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'seeded')
if ARGV[4] ~= '' then
  local change = cjson.decode(ARGV[4])
  change['epoch'] = new
  redis.call('HSET', KEYS[1], 'change', cjson.encode(change))
else
  redis.call('HDEL', KEYS[1], 'change')
end
return {1, tostring(new)}
"""

# KEYS[1] cluster hash; ARGV configured primary. Records it at epoch 0 when nothing is
# recorded, marked "seeded": nobody has yet checked it against what the hosts recorded.
_ENSURE = """
if redis.call('HEXISTS', KEYS[1], 'primary') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'primary', ARGV[1], 'epoch', '0', 'seeded', '1')
return 1
"""

# KEYS[1] cluster hash; ARGV expected epoch, primary, epoch. The primary and epoch the
# hosts' records show, when Redis is still at the expected epoch.
_ADOPT = """
local cur = redis.call('HGET', KEYS[1], 'epoch')
if not cur then cur = '0' end
if cur ~= ARGV[1] then
  return {0, cur, redis.call('HGET', KEYS[1], 'primary') or ''}
end
redis.call('HSET', KEYS[1], 'primary', ARGV[2], 'epoch', ARGV[3])
redis.call('HDEL', KEYS[1], 'seeded', 'change')
return {1, ARGV[3]}
"""

# KEYS[1] cluster hash; ARGV epoch, step, its rank, the ranks by name (JSON). Moves the
# journal of the change at that epoch forward to the step (never back).
_JOURNAL_STEP = """
local raw = redis.call('HGET', KEYS[1], 'change')
if not raw then return 0 end
local ok, change = pcall(cjson.decode, raw)
if not ok or tostring(change['epoch']) ~= ARGV[1] then return 0 end
local ranks = cjson.decode(ARGV[4])
local now = ranks[string.upper(tostring(change['step'] or 'epoch_taken'))] or 1
if tonumber(ARGV[3]) <= now then return 0 end
change['step'] = ARGV[2]
redis.call('HSET', KEYS[1], 'change', cjson.encode(change))
return 1
"""

# KEYS[1] cluster hash; ARGV epoch. The change journaled at that epoch is over.
_FINISH_CHANGE = """
local raw = redis.call('HGET', KEYS[1], 'change')
if not raw then return 0 end
local ok, change = pcall(cjson.decode, raw)
if ok and tostring(change['epoch']) ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'change')
return 1
"""


def default_redis_url() -> str:
    from cr_orchestrator.runtime.config import runtime

    return runtime().redis_url


def connect(url: str | None = None) -> redis.Redis:
    """A Redis client with short timeouts (state calls must never hang a probe round):
    one server, or the master Sentinel names (``redis-sentinel://``, re-discovered when
    lost). It knows how many replicas must acknowledge a write that matters
    (:func:`min_acks_of`)."""
    address = redis_address.parse(url or default_redis_url())
    client = redis_address.client(address)
    client.cr_min_acks = address.min_acks  # type: ignore[attr-defined]
    return client


def min_acks_of(client: redis.Redis) -> int:
    """Replicas that must acknowledge a write that matters (0 for a client not made by
    :func:`connect`, e.g. a test's own plain client)."""
    return int(getattr(client, "cr_min_acks", 0))


GOOD_REPLICA_LAG_S = 3  # seconds since a replica's last ACK (Redis's min-replicas-max-lag)


class NotReplicated(StateError):
    """A write that matters reached the master but not enough replicas: this side may be
    cut off from the majority, so nothing may act on it."""


def persistence_warning(client: redis.Redis) -> str | None:
    """Why ``client``'s Redis would lose the orchestrator's state on a restart, or None
    (also None when it does not say: CONFIG is often disabled on managed services)."""
    try:
        config = client.config_get("appendonly") | client.config_get("save")
    except redis.RedisError:
        return None
    if config.get("appendonly") == "yes" or (config.get("save") or "").strip():
        return None
    return ("this Redis keeps nothing on disk (appendonly no, no save points): a restart "
            "loses the epochs, the journal of a change in progress and the history. The "
            "hosts' epoch records keep failovers safe, but configure appendonly yes with "
            "appendfsync everysec (docs/operations.md)")


# KEYS[1] a lock; ARGV the token seen. Deletes it only if it still holds that token.
_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def release_dead_holders(client: redis.Redis, prefix: str, *,
                         hostname: str | None = None) -> list[str]:
    """Free the locks (``{prefix}:lock:*``) whose holder was a process of this machine
    that no longer exists (a SIGKILLed worker's pool process): its lease would run out
    anyway, but every second of it is outage when it held a failover. Tokens are
    ``host:pid:random``; a lock held on another machine is never touched. Returns the
    keys freed."""
    me = hostname or socket.gethostname()
    delete_if = client.register_script(_DELETE_IF)
    freed = []
    for key in client.scan_iter(match=f"{prefix}:lock:*", count=500):
        token = client.get(key)
        if token is None:
            continue
        host, _, rest = token.decode(errors="replace").partition(":")
        pid = rest.split(":", 1)[0]
        if host != me or not pid.isdigit() or pid_alive(int(pid)):
            continue
        if delete_if(keys=[key], args=[token]):
            freed.append(key.decode())
    return freed


class EventKind(enum.StrEnum):
    """The kinds of entries in a cluster's event stream (what ``crctl history`` shows)."""

    DECISION = "decision"
    PROMOTION = "promotion"
    PLAYBOOK = "playbook"
    SYNC = "sync"
    SYNC_QUARANTINE = "sync.quarantine"
    SYNC_MERGE = "sync.merge"  # a returning old primary's messages merged back (maildir)
    SYNC_PROBLEM = "sync.problem"
    OPERATOR = "operator"
    RESUMED = "resumed"  # a journaled change run again after its worker died
    ADOPTED = "adopted"  # Redis took what the hosts recorded
    ABORTED = "aborted"  # a planned change undone half-way
    ERROR = "error"


class LockKind(enum.StrEnum):
    CLUSTER = "cluster"  # one topology change at a time
    ROUND = "round"  # one probe round at a time


class LockBusy(StateError):
    """A lock is held by someone else (its holder is in the message)."""


class PromotionConflict(StateError):
    """Someone else promoted meanwhile: the expected epoch is no longer current."""


@dataclass(frozen=True)
class Event:
    id: str
    at: float
    kind: str  # decision | promotion | playbook | sync | operator
    cluster: str
    data: dict


def _default(value: object) -> object:
    if isinstance(value, Secret):
        raise TypeError("refusing to write a Secret to Redis")
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot store {type(value).__name__} in Redis")


def dumps(value: object) -> str:
    """JSON for Redis; raises StateError for a Secret (never stored) or an odd type."""
    try:
        return json.dumps(value, default=_default, sort_keys=True)
    except TypeError as exc:
        raise StateError(str(exc)) from exc


class _Unread:
    """``last`` not given to :meth:`ClusterState.record_decision`: it reads it."""


UNREAD = _Unread()


class ClusterState:
    """Live state of every cluster, stored in Redis under ``prefix``."""

    def __init__(self, redis_client: redis.Redis, prefix: str = "cr") -> None:
        self.redis = redis_client
        self.prefix = prefix
        self._promote = redis_client.register_script(_PROMOTE)
        self._ensure = redis_client.register_script(_ENSURE)
        self._adopt = redis_client.register_script(_ADOPT)
        self._finish_change = redis_client.register_script(_FINISH_CHANGE)
        self._journal_step = redis_client.register_script(_JOURNAL_STEP)
        self.min_acks = min_acks_of(redis_client)

    def quorum(self) -> bool | None:
        """Does this side hold the quorum's majority: is our Redis a master with the
        good replicas (online, lag <= :data:`GOOD_REPLICA_LAG_S`) that ``min_acks``
        asks for? None with a plain Redis (``min_acks`` 0): no majority can be known."""
        if self.min_acks <= 0:
            return None
        return self._quorum_of(self.redis.info("replication"))

    def read_quorum(self, batch: Batch) -> Later[bool | None]:
        """:meth:`quorum`, queued on ``batch`` (nothing to read with a plain Redis)."""
        if self.min_acks <= 0:
            return batch.add(lambda pipe: None, lambda replies: None)
        return batch.add(lambda pipe: pipe.info("replication"),
                         lambda replies: self._quorum_of(replies[0]))

    def _quorum_of(self, info: dict) -> bool:
        if info.get("role") != "master":
            return False
        good = sum(1 for name, value in info.items()
                   if name.startswith("slave") and isinstance(value, dict)
                   and value.get("state") == "online"
                   and int(value.get("lag", 1 << 30)) <= GOOD_REPLICA_LAG_S)
        return good >= self.min_acks

    @contextlib.contextmanager
    def _quorum_write(self, what: str) -> Iterator[None]:
        """A write the master refused for want of good replicas is :class:`NotReplicated`."""
        try:
            yield
        except (redis.ResponseError, redis_address.MasterChanging) as exc:
            if not (isinstance(exc, redis_address.MasterChanging)
                    or str(exc).startswith("NOREPLICAS")):
                raise
            raise NotReplicated(f"{what} was refused by the Redis master (not enough good "
                                "replicas): this orchestrator may be cut off from the "
                                "majority of the Redis quorum; not acting on it") from exc

    def replicated(self, what: str) -> None:
        """Wait until ``min_acks`` replicas hold every write made so far on this
        connection (``WAIT``); :class:`NotReplicated` when they do not within the timeout.
        Called after a write that something will act on: a master on the minority side
        of a partition would otherwise let this orchestrator move hosts on a state the
        majority never saw (and that a Sentinel failover throws away)."""
        if self.min_acks <= 0:
            return
        # WAIT counts the writes of its own connection, and a pool may hand out another
        # one: write a marker and WAIT on one connection. The replication stream is
        # ordered, so replicas past the marker hold every earlier write too.
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(f"{self.prefix}:replication-marker", repr(time.time()))
        pipe.execute_command("WAIT", self.min_acks, redis_address.WAIT_TIMEOUT_MS)
        with self._quorum_write(what):
            acked = int(pipe.execute()[1])
        if acked < self.min_acks:
            raise NotReplicated(
                f"{what} was acknowledged by {acked} of the {self.min_acks} replica(s) "
                f"required within {redis_address.WAIT_TIMEOUT_MS} ms: this orchestrator "
                "may be cut off from the majority of the Redis quorum; not acting on it")

    # -- keys ---------------------------------------------------------------------------
    def key(self, cluster: str, part: str | None = None) -> str:
        base = f"{self.prefix}:cluster:{cluster}"
        return f"{base}:{part}" if part else base

    def lock_key(self, cluster: str, replica_set: str | None = None, *,
                 kind: LockKind = LockKind.CLUSTER) -> str:
        """``kind``: ``cluster`` (topology changes) or ``round`` (one probe round at a
        time); a ``replica_set`` names that set's lock."""
        if replica_set is not None:
            return f"{self.prefix}:lock:set:{cluster}:{replica_set}"
        return f"{self.prefix}:lock:{LockKind(kind).value}:{cluster}"

    # -- primary and epoch --------------------------------------------------------------
    def ensure(self, *, cluster: str, configured_primary: str) -> tuple[str, int]:
        """Record the configured primary at epoch 0 if nothing is recorded yet (a first
        start, or a Redis that lost its keys). Such a state is only the inventory's word:
        it stays marked :meth:`seeded` until the hosts' records confirm it or overrule it
        (rule "hosts first" of ``decide``)."""
        self._ensure(keys=[self.key(cluster)], args=[configured_primary])
        return self.primary(cluster), self.epoch(cluster)

    def queue_ensure(self, pipe: Any, *, cluster: str, configured_primary: str) -> None:
        """:meth:`ensure` queued on ``pipe`` (a round's writes go in one transaction)."""
        self._ensure(keys=[self.key(cluster)], args=[configured_primary], client=pipe)

    def seeded(self, cluster: str) -> bool:
        """True while the state is the inventory's word, not yet checked against the hosts."""
        return _seeded(self.redis.hget(self.key(cluster), "seeded"))

    def adopt(self, *, cluster: str, primary: str, epoch: int, expected_epoch: int) -> None:
        """Take the primary and epoch that the hosts recorded (clears ``seeded`` and any
        journaled change); :class:`PromotionConflict` when Redis moved meanwhile."""
        with self._quorum_write(f"adopting {primary} at epoch {epoch} in {cluster}"):
            result = self._adopt(keys=[self.key(cluster)],
                                 args=[str(expected_epoch), primary, str(int(epoch))])
        if int(result[0]) != 1:
            current = self._int(self.key(cluster), result[1], "epoch")
            raise PromotionConflict(
                f"cannot adopt {primary} at epoch {epoch} in {cluster}: epoch is {current} "
                f"(primary {result[2].decode() or 'nobody'}), not the expected {expected_epoch}")
        self.replicated(f"adopting {primary} at epoch {epoch} in {cluster}")

    # -- the journal of a change in progress --------------------------------------------
    def change(self, cluster: str) -> dict | None:
        """The topology change journaled with the last promotion and not yet finished:
        ``{"kind", "new_primary", "old_primary", "epoch", "old_primary_down", "at",
        "reason"}``, or None."""
        key = self.key(cluster)
        return _change(key, self.redis.hget(key, "change"))

    def journal_step(self, cluster: str, epoch: int, step: Step) -> bool:
        """The change journaled at ``epoch`` reached ``step`` (never moves back)."""
        ranks = dumps({s.name: int(s) for s in Step})
        return bool(self._journal_step(keys=[self.key(cluster)],
                                       args=[str(int(epoch)), step.words.replace(" ", "_"),
                                             str(int(step)), ranks]))

    def finish_change(self, cluster: str, epoch: int) -> bool:
        """The change journaled at ``epoch`` is over (done, or failed and reported)."""
        return bool(self._finish_change(keys=[self.key(cluster)], args=[str(int(epoch))]))

    def primary(self, cluster: str) -> str | None:
        return _text(self.redis.hget(self.key(cluster), "primary"))

    def primaries(self, clusters: list[str]) -> dict[str, str | None]:
        """:meth:`primary` of several clusters in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for cluster in clusters:
            pipe.hget(self.key(cluster), "primary")
        return {c: _text(v) for c, v in zip(clusters, pipe.execute(), strict=True)}

    def epoch(self, cluster: str) -> int:
        return self._int(self.key(cluster), self.redis.hget(self.key(cluster), "epoch"), "epoch")

    def read_record(self, batch: Batch, cluster: str) -> Later[ClusterRecord]:
        """The cluster hash (primary, epoch, flags, journal) and the cluster lock's holder,
        queued on ``batch``."""
        key, lock = self.key(cluster), self.lock_key(cluster)

        def queue(pipe: Any) -> None:
            pipe.hgetall(key)
            pipe.get(lock)

        return batch.add(queue, lambda r: ClusterRecord(key, r[0], _text(r[1])))

    def read_round(self, batch: Batch, cluster: str, *, home: str) -> Later[RoundRecord]:
        """What a probe round reads of ``cluster`` after probing, queued on ``batch``:
        the cluster hash and lock holder again (a change may have landed meanwhile), the
        restart count, the failovers, the failback clock of ``home`` (the configured
        primary) and the last decision. Malformed values raise when they are used."""
        keys = [self.key(cluster, part) for part in ("restarts", "failovers",
                                                     "in_sync_since", "decision")]
        record = self.read_record(batch, cluster)

        def queue(pipe: Any) -> None:
            pipe.get(keys[0])
            pipe.zrange(keys[1], 0, -1, withscores=True)
            pipe.hget(keys[2], home)
            pipe.get(keys[3])

        return batch.add(queue, lambda r: RoundRecord(record.value, keys, r))

    def promote(self, *, cluster: str, new_primary: str, expected_epoch: int,
                now: float | None = None, change: dict | None = None) -> int:
        """Make ``new_primary`` the live primary if the epoch is still ``expected_epoch``.

        ``change``: the journal entry of the change this promotion starts (its kind, old
        primary, ...; the new epoch is added), kept until :meth:`finish_change`.
        Returns the new epoch (the fencing token to pass to every playbook and sync);
        raises :class:`PromotionConflict` when someone else promoted meanwhile.
        """
        at = time.time() if now is None else now
        journal = dumps({**change, "new_primary": new_primary, "at": at}) if change else ""
        with self._quorum_write(f"the promotion of {new_primary} in {cluster}"):
            result = self._promote(keys=[self.key(cluster)],
                                   args=[str(expected_epoch), new_primary, repr(at), journal])
        if int(result[0]) == 1:
            self.replicated(f"the promotion of {new_primary} in {cluster}")
            return int(result[1])
        current = self._int(self.key(cluster), result[1], "epoch")
        holder = result[2].decode() if result[2] else "nobody"
        raise PromotionConflict(
            f"cannot promote {new_primary} in {cluster}: epoch is {current} "
            f"(primary {holder}), not the expected {expected_epoch}; someone promoted meanwhile"
        )

    # -- pause, restarts, failovers, failback clock ---------------------------------------
    def set_paused(self, cluster: str, paused: bool) -> None:
        self.redis.hset(self.key(cluster), "paused", "1" if paused else "0")

    def paused(self, cluster: str) -> bool:
        return _paused(self.key(cluster), self.redis.hget(self.key(cluster), "paused"))

    def restarts(self, cluster: str) -> int:
        key = self.key(cluster, "restarts")
        return self._int(key, self.redis.get(key), None)

    def count_restart(self, cluster: str) -> int:
        return int(self.redis.incr(self.key(cluster, "restarts")))

    def reset_restarts(self, cluster: str, *, pipe: Any = None) -> None:
        """``pipe``: queue the write there (a round's writes go in one transaction)."""
        (pipe or self.redis).delete(self.key(cluster, "restarts"))

    def record_failover(self, cluster: str, at: float, *, keep_s: float = 7 * 86400) -> None:
        key = self.key(cluster, "failovers")
        self.redis.zadd(key, {repr(at): at})
        self.redis.zremrangebyscore(key, "-inf", at - keep_s)

    def failovers(self, cluster: str) -> tuple[float, ...]:
        key = self.key(cluster, "failovers")
        return _failovers(key, self.redis.zrange(key, 0, -1, withscores=True))

    def in_sync_since(self, *, cluster: str, host: str) -> float | None:
        """Since when ``host`` (the configured primary) is healthy and in sync, or None."""
        key = self.key(cluster, "in_sync_since")
        return _time_or_none(key, self.redis.hget(key, host))

    def set_in_sync_since(self, *, cluster: str, host: str, since: float | None,
                          pipe: Any = None) -> None:
        """``pipe``: queue the write there (a round's writes go in one transaction)."""
        key, client = self.key(cluster, "in_sync_since"), pipe or self.redis
        if since is None:
            client.hdel(key, host)
        else:
            client.hset(key, host, repr(since))

    # -- backoff of failing actions ----------------------------------------------------
    def backoff(self, *, cluster: str, action: str, target: str | None) -> tuple[int, float]:
        """(failures in a row, time of the next try) of an action on a target; (0, 0.0)."""
        key = self.key(cluster, "backoff")
        raw = self.redis.hget(key, f"{action}:{target}")
        if raw is None:
            return 0, 0.0
        try:
            value = json.loads(raw)
            return int(value["failures"]), float(value["retry_at"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"malformed Redis state: {key} {action}:{target}: {exc}") from exc

    def record_action(self, *, cluster: str, action: str, target: str | None, ok: bool,
                      now: float, base_s: float, max_s: float = 300.0) -> float | None:
        """Clear the backoff after a success; after a failure, push the next try back
        (``base_s`` × 2^(failures-1), at most ``max_s``) and return when it is."""
        key, field = self.key(cluster, "backoff"), f"{action}:{target}"
        if ok:
            self.redis.hdel(key, field)
            return None
        failures = self.backoff(cluster=cluster, action=action, target=target)[0] + 1
        retry_at = now + min(max_s, base_s * 2 ** (failures - 1))
        self.redis.hset(key, field, dumps({"failures": failures, "retry_at": retry_at}))
        return retry_at

    # -- decisions and events -----------------------------------------------------------
    def record_decision(self, *, cluster: str, action: str, target: str | None, reason: str,
                        epoch: int, now: float, members: dict[str, str] | None = None,
                        situation: str | None = None, pipe: Any = None,
                        last: dict | None | _Unread = UNREAD) -> bool:
        """Keep the last decision; append it to the event stream when it changed.

        Probe rounds run every few seconds: only a change of action, target or
        ``situation`` (the decision's code: "primary up" → "primary suspect" → "primary
        up"), or any acting decision, goes to the stream, so history stays readable and
        still says why nothing was done during a blip. (Never keyed on the sentence: its
        numbers change every round.)

        ``last``: the previous decision as the caller read it (a round reads it with the
        rest of its state, under the round lock, so nothing wrote it since); ``pipe``:
        queue the writes there (a round's writes go in one transaction).
        """
        key = self.key(cluster, "decision")
        if isinstance(last, _Unread):
            last = self.last_decision(cluster)
        record = {"action": action, "target": target, "reason": reason, "epoch": epoch,
                  "at": now, "members": members or {}, "situation": situation}
        client = pipe if pipe is not None else self.redis.pipeline(transaction=False)
        client.set(key, dumps(record))
        quiet = action in (QUIET_ACTIONS)
        changed = not (last and quiet and (last["action"], last["target"],
                                           last.get("situation")) == (action, target, situation))
        if changed:
            self._xadd(client, cluster, EventKind.DECISION, now,
                       {"action": action, "target": target, "reason": reason, "epoch": epoch,
                        "situation": situation})
        if pipe is None:
            client.execute()
        return changed

    def last_decision(self, cluster: str) -> dict | None:
        key = self.key(cluster, "decision")
        return _decision(key, self.redis.get(key))

    def append_event(self, *, cluster: str, kind: EventKind, data: dict,
                     at: float | None = None) -> str:
        """Append one event (never a secret) to the cluster's stream; returns its id."""
        return self._xadd(self.redis, cluster, kind, at, data).decode()

    def _xadd(self, client: Any, cluster: str, kind: EventKind, at: float | None,
              data: dict) -> Any:
        fields = {"at": repr(time.time() if at is None else at), "kind": EventKind(kind).value,
                  "data": dumps(data)}
        return client.xadd(self.key(cluster, "events"), fields, maxlen=EVENTS_MAXLEN,
                           approximate=True)

    def events(self, cluster: str, *, count: int = 20) -> list[Event]:
        """The last ``count`` events of ``cluster``, oldest first."""
        key = self.key(cluster, "events")
        out = []
        for event_id, fields in reversed(self.redis.xrevrange(key, count=count)):
            try:
                out.append(Event(id=event_id.decode(), at=float(fields[b"at"]),
                                 kind=fields[b"kind"].decode(), cluster=cluster,
                                 data=json.loads(fields[b"data"])))
            except (KeyError, ValueError) as exc:
                raise StateError(f"malformed Redis state: {key} entry {event_id!r}: {exc}") \
                    from exc
        return out

    # -- locks --------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, *, cluster: str, replica_set: str | None = None, ttl_s: float = 30.0,
             wait_s: float = 0.0, kind: LockKind = LockKind.CLUSTER) -> Iterator[Lease]:
        """Hold the cluster (or replica-set, or round) lock as a lease: a thread extends
        it every quarter of ``ttl_s`` while held, so a holder that dies (a SIGKILLed
        worker) frees it within ``ttl_s``. If the lease cannot be extended (taken over,
        expired, Redis unreachable for ``ttl_s``), it says so in the log and sets
        :attr:`Lease.lost`: the work it protects must stop (flows pass it to the playbook
        runner as its cancel event).

        Raises :class:`StateError` naming the holder when it cannot be had in ``wait_s``.
        """
        key = self.lock_key(cluster, replica_set, kind=kind)
        lock = self.redis.lock(key, timeout=ttl_s, blocking_timeout=wait_s, thread_local=False)
        token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if not lock.acquire(blocking=wait_s > 0, token=token):
            holder = self.redis.get(key)
            what = (f"set {replica_set} of {cluster}" if replica_set else
                    f"cluster {cluster}" if LockKind(kind) is LockKind.CLUSTER else f"{kind} of {cluster}")
            raise LockBusy(f"{what} is locked by {holder.decode() if holder else 'someone'}"
                             f" ({key}): another change is running")
        stop = threading.Event()
        lease = Lease(lock=lock, key=key, ttl_s=ttl_s)
        keeper = threading.Thread(target=_keep_alive, args=(lease, stop), daemon=True)
        keeper.start()
        try:
            yield lease
        finally:
            stop.set()
            keeper.join()
            with contextlib.suppress(LockError, redis.RedisError):
                lock.release()

    def lock_holder(self, cluster: str, replica_set: str | None = None) -> str | None:
        return _text(self.redis.get(self.lock_key(cluster, replica_set)))

    # -- parsing --------------------------------------------------------------------------
    @staticmethod
    def _int(key: str, raw: object, field: str | None) -> int:
        if raw is None:
            return 0
        try:
            return int(raw)
        except (TypeError, ValueError):
            where = f"{key} {field}" if field else key
            raise StateError(f"malformed Redis state: {where}={raw!r} is not an integer") \
                from None

    @staticmethod
    def _float(key: str, raw: object) -> float:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise StateError(f"malformed Redis state: {key} holds {raw!r}, not a time") \
                from None


# ---------------------------------------------------------------- parsing raw values
# Shared by the single reads of ClusterState and the batched reads of a probe round, so
# both accept and refuse exactly the same values.
def _text(raw: bytes | None) -> str | None:
    return raw.decode() if raw else None


def _seeded(raw: bytes | None) -> bool:
    return raw == b"1"


def _paused(key: str, raw: bytes | None) -> bool:
    if raw not in (None, b"0", b"1"):
        raise StateError(f"malformed Redis state: {key} paused={raw!r}")
    return raw == b"1"


def _change(key: str, raw: bytes | None) -> dict | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError("not an object")
        for name, kind in (("kind", str), ("new_primary", str), ("epoch", int)):
            if not isinstance(value.get(name), kind):
                raise ValueError(f"{name} missing or not a {kind.__name__}")
    except ValueError as exc:
        raise StateError(f"malformed Redis state: {key} change: {exc}") from exc
    return value


def _decision(key: str, raw: bytes | None) -> dict | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        if not isinstance(value, dict) or "action" not in value:
            raise ValueError("not a decision record")
    except ValueError as exc:
        raise StateError(f"malformed Redis state: {key}: {exc}") from exc
    return value


def _failovers(key: str, pairs: list) -> tuple[float, ...]:
    return tuple(ClusterState._float(key, score) for _, score in pairs)


def _time_or_none(key: str, raw: bytes | None) -> float | None:
    return None if raw is None else ClusterState._float(key, raw)


class ClusterRecord:
    """The cluster hash as read once (``HGETALL``) and the cluster lock's holder then.
    Each field is parsed when used, as the single reads parse it (a malformed flag
    raises :class:`StateError` where it is read, not where the hash was)."""

    def __init__(self, key: str, raw: dict[bytes, bytes], lock_holder: str | None) -> None:
        self.key, self.raw, self.lock_holder = key, raw, lock_holder

    @property
    def primary(self) -> str | None:
        return _text(self.raw.get(b"primary"))

    @property
    def epoch(self) -> int:
        return ClusterState._int(self.key, self.raw.get(b"epoch"), "epoch")

    @property
    def paused(self) -> bool:
        return _paused(self.key, self.raw.get(b"paused"))

    @property
    def seeded(self) -> bool:
        return _seeded(self.raw.get(b"seeded"))

    @property
    def change(self) -> dict | None:
        return _change(self.key, self.raw.get(b"change"))


class RoundRecord:
    """What a probe round reads of its cluster after probing (:meth:`ClusterState.read_round`),
    parsed when used."""

    def __init__(self, record: ClusterRecord, keys: list[str], raw: list) -> None:
        self.record = record
        self._keys, self._raw = keys, raw

    @property
    def restarts(self) -> int:
        return ClusterState._int(self._keys[0], self._raw[0], None)

    @property
    def failovers(self) -> tuple[float, ...]:
        return _failovers(self._keys[1], self._raw[1])

    @property
    def in_sync_since(self) -> float | None:
        return _time_or_none(self._keys[2], self._raw[2])

    @property
    def last_decision(self) -> dict | None:
        return _decision(self._keys[3], self._raw[3])


class Lease:
    """A held lock: ``lost`` is set when its keeper could not extend it in time."""

    def __init__(self, *, lock: redis.lock.Lock, key: str, ttl_s: float) -> None:
        self.lock, self.key, self.ttl_s = lock, key, ttl_s
        self.lost = threading.Event()
        self.why: str | None = None

    def lose(self, why: str) -> None:
        self.why = why
        self.lost.set()
        log.error("lost the lock %s: %s; stopping the work it protects", self.key, why)


def _keep_alive(lease: Lease, stop: threading.Event) -> None:
    # A playbook outlives the TTL: re-arm the lease every quarter of it while held.
    last_ok = time.monotonic()
    while not stop.wait(lease.ttl_s / 4):
        try:
            lease.lock.reacquire()
            last_ok = time.monotonic()
        except LockError as exc:  # expired, or another holder has it now
            lease.lose(f"it expired or was taken over ({exc})")
            return
        except redis.RedisError as exc:
            if time.monotonic() - last_ok >= lease.ttl_s:
                lease.lose(f"Redis did not answer for {lease.ttl_s:.0f} s ({exc})")
                return


def live_status(topology: Topology, redis_client: redis.Redis, prefix: str = "cr") -> dict:
    """Live part of ``crctl status``: per cluster, what Redis says right now.

    ``{cluster: {"primary", "epoch", "paused", "health" {host: word}, "freshness_s"
    {host: seconds}, "restarts", "failovers", "last_decision", "lock"}}``. ``health`` is
    the last probe round's verdict per member (empty before the first round);
    ``freshness_s`` the worst replica age of each target over the cluster's sets;
    ``failovers`` counts those inside the policy's period.
    """
    from cr_orchestrator.state.freshness import FreshnessStore

    state = ClusterState(redis_client, prefix)
    freshness = FreshnessStore(redis_client, prefix)
    now = time.time()
    out = {}
    for name, cluster in sorted(topology.clusters.items()):
        period = cluster.policy.failover_period_s
        decision = state.last_decision(name)
        ages: dict[str, float] = {}
        for rs in cluster.replica_sets:
            for host, record in freshness.freshness(name, rs.name, now=now).items():
                if record.lag_s is not None:
                    ages[host] = max(ages.get(host, 0.0), record.lag_s)
        out[name] = {
            "primary": state.primary(name),
            "epoch": state.epoch(name),
            "paused": state.paused(name),
            "health": dict((decision or {}).get("members") or {}),
            "freshness_s": ages,
            "restarts": state.restarts(name),
            "failovers": sum(1 for t in state.failovers(name) if t > now - period),
            "last_decision": decision,
            "lock": state.lock_holder(name),
        }
    return out


