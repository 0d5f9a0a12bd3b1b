"""Where the orchestrator's Redis is: one server (a plain URL), or a master that Redis
Sentinel names (``redis-sentinel://`` URL).

The sentinel form is one string so it travels like a plain URL (``--redis-url``,
``CR_REDIS_URL``, the children of ``crctl run``)::

    redis-sentinel://10.0.0.5:26379,10.1.0.5:26379,10.2.0.5:26379/cr?db=0&acks=1

- the hosts are the sentinels (at least one; a majority of them must be reachable for a
  failover to happen at all, which is Sentinel's business, not ours);
- the path is the master's name as the sentinels know it (``sentinel monitor NAME ...``);
- ``db`` the database (default 0);
- ``acks``: how many replicas must acknowledge a write that matters (the epoch
  compare-and-set, the promotion record, a journal step) before anything acts on it
  (``WAIT``). Default 1 with Sentinel, 0 for a plain URL (a lone server has nobody to ask).

Every client made here re-discovers the master through the sentinels when its connection
is lost or the server answers ``READONLY`` (a master demoted under it): redis-py does the
re-discovery on the next connect, and the retry policy below makes that next connect
happen inside the same call instead of failing it (redis-py #460 was the old trap).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from cr_orchestrator.errors import ConfigError

SENTINEL_SCHEME = "redis-sentinel"
DEFAULT_SENTINEL_PORT = 26379
SOCKET_TIMEOUT_S = 5.0
# A connect on a LAN answers in ms or is refused; a master whose whole site died answers
# nothing, and every retry of every client would wait this long for it.
CONNECT_TIMEOUT_S = 1.5
BEAT_SOCKET_TIMEOUT_S = 2.0  # RedBeat's Sentinel client takes one timeout for both
WAIT_TIMEOUT_MS = 2000  # a replica on a healthy LAN answers in ms; longer is a partition


@dataclass(frozen=True)
class PlainAddress:
    url: str
    min_acks: int = 0

    @property
    def text(self) -> str:
        return self.url


@dataclass(frozen=True)
class SentinelAddress:
    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    min_acks: int = 1

    @property
    def text(self) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        return f"{SENTINEL_SCHEME}://{hosts}/{self.master}?db={self.db}&acks={self.min_acks}"


RedisAddress = PlainAddress | SentinelAddress


def parse_sentinels(text: str, *, what: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` (port defaults to 26379); ``what`` names the setting in errors."""
    found = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
        if not sep:
            host, port = item, str(DEFAULT_SENTINEL_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{what}: {item!r} is not HOST:PORT of a sentinel")
        found.append((host, int(port)))
    if not found:
        raise ConfigError(f"{what}: names no sentinel (give HOST:PORT[,HOST:PORT...])")
    return tuple(found)


def parse(text: str, *, what: str = "CR_REDIS_URL") -> RedisAddress:
    """The address ``text`` names; ConfigError (naming ``what``) when it is malformed."""
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme != SENTINEL_SCHEME:
        return PlainAddress(text)
    query = urllib.parse.parse_qs(parsed.query)
    master = parsed.path.strip("/")
    if not master:
        raise ConfigError(f"{what}: {text!r} names no master (redis-sentinel://HOSTS/MASTER)")
    try:
        db = int(query.get("db", ["0"])[0])
        acks = int(query.get("acks", ["1"])[0])
    except ValueError as exc:
        raise ConfigError(f"{what}: db and acks must be whole numbers in {text!r}") from exc
    if acks < 0:
        raise ConfigError(f"{what}: acks must be 0 or more, not {acks}")
    return SentinelAddress(parse_sentinels(parsed.netloc, what=what), master, db, acks)


def sentinel_address(sentinels: str, master: str, *, what: str) -> str:
    """The one-string form for CR_REDIS_SENTINELS + CR_REDIS_MASTER."""
    return SentinelAddress(parse_sentinels(sentinels, what=what), master or "cr").text


# Answers of a Redis master that is losing its role in a Sentinel failover: NOREPLICAS
# (its replicas left it for the new master and min-replicas-to-write refuses), READONLY
# (demoted under an open connection), MASTERDOWN.
MASTER_CHANGING = ("NOREPLICAS", "READONLY", "MASTERDOWN")


def master_changing(exc: BaseException) -> bool:
    return isinstance(exc, redis.ResponseError) and str(exc).startswith(MASTER_CHANGING)


class MasterChanging(redis.ConnectionError):
    """The master answered as one losing its role (a Sentinel failover in progress)."""


class QuorumManagedConnection(SentinelManagedConnection):
    """redis-py's Sentinel-managed connection, for which a master losing its role is a
    lost connection: dropped, so that the next connect asks the sentinels again. redis-py
    does this for READONLY only; a master whose replicas just left it answers NOREPLICAS
    for seconds before it is demoted, and every client that kept a connection to it
    (Celery's included) failed instead of moving on to the new master."""

    def connect_check_health(self, check_health: bool = True,
                             retry_socket_connect: bool = True) -> None:
        # redis-py reconnects a dropped connection here when it sends a command, to the
        # host and port it had, never asking the sentinels again: a client whose master
        # was cut off (a site isolated) kept connecting to it, retry after retry, for
        # over a minute. Every (re)connect asks them where the master is now.
        if self._sock:
            return
        if self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health, retry_socket_connect=False)

    def read_response(self, *args, **kwargs):
        try:
            return super().read_response(*args, **kwargs)
        except redis.ResponseError as exc:
            if not master_changing(exc):
                raise
            self.disconnect()
            raise MasterChanging(f"the Redis master is being replaced: {exc}") from exc


def client(address: RedisAddress, *, decode_responses: bool = False) -> redis.Redis:
    """A redis-py client for ``address`` with short timeouts and re-discovery on failure."""
    # 6 tries spaced 0.1 .. 1 s: spans a Sentinel failover's switch (a few seconds)
    # without hanging a probe round for long when Redis is really gone.
    retry = Retry(ExponentialBackoff(cap=1.0, base=0.1), 6)
    common = {"socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": CONNECT_TIMEOUT_S,
              "retry": retry, "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
              "decode_responses": decode_responses}
    if isinstance(address, PlainAddress):
        return redis.Redis.from_url(address.url, health_check_interval=30, **common)
    sentinel = Sentinel(list(address.sentinels),
                        sentinel_kwargs={"socket_timeout": 1.0, "socket_connect_timeout": 1.0},
                        db=address.db)
    return sentinel.master_for(address.master, connection_class=QuorumManagedConnection,
                               **common)


def celery_settings(address: RedisAddress) -> dict:
    """Broker, result backend and RedBeat settings for ``address`` (``app.conf.update``)."""
    if isinstance(address, PlainAddress):
        return {"broker_url": address.url, "result_backend": address.url,
                "redbeat_redis_url": address.url,  # explicit: the fallback is deprecated
                "redbeat_redis_options": {"socket_timeout": SOCKET_TIMEOUT_S,
                                          "socket_connect_timeout": CONNECT_TIMEOUT_S}}
    hosts = ";".join(f"sentinel://{h}:{p}/{address.db}" for h, p in address.sentinels)
    # celery #6348: a worker whose master vanished without a reset (its host or site
    # gone, not just the process) waited on a dead socket forever and never re-asked the
    # sentinels. Timeouts and keepalive turn that silence into an error kombu recovers
    # from (reconnect = ask the sentinels again); BRPOP's own 1 s poll stays below them.
    sentinel_options = {"master_name": address.master,
                        "sentinel_kwargs": {"socket_timeout": 1.0},
                        "socket_timeout": SOCKET_TIMEOUT_S,
                        "socket_connect_timeout": CONNECT_TIMEOUT_S,
                        "socket_keepalive": True,
                        "health_check_interval": 10}
    return {
        "broker_url": hosts,
        # kombu's Sentinel transport, but a master losing its role is a lost connection
        # (runtime/broker.py); named, not imported: state/ does not depend on Celery
        "broker_transport": "cr_orchestrator.runtime.broker:QuorumSentinelTransport",
        "result_backend": hosts,
        "broker_transport_options": sentinel_options,
        "result_backend_transport_options": dict(sentinel_options),
        "redbeat_redis_url": f"redis-sentinel://{address.sentinels[0][0]}:"
                             f"{address.sentinels[0][1]}/{address.db}",
        "redbeat_redis_options": {
            "sentinels": [list(s) for s in address.sentinels],
            "service_name": address.master,
            "db": address.db,
            "socket_timeout": BEAT_SOCKET_TIMEOUT_S,
            "sentinel_kwargs": {"socket_timeout": 1.0},
            # no retry_period: RedBeat's own retries back off exponentially up to 30 s
            # inside one tick (a beat on the surviving site sent nothing for half a
            # minute after the master's site died); our tick gives up on the call, waits
            # a second and asks the sentinels again (runtime/schedule.py)
        },
    }
