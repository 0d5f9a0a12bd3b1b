"""The serving host's lease as the orchestrators record it in Redis.

One hash per cluster (``<prefix>:cluster:<name>:lease``): the newest renewal granted
(host, epoch, and ``at``: the latest moment the host may have received it), the host that
may hold a renewal that said "paused" (kept without end by its agent), and what the last
renewal said of the host's lease agent. Every orchestrator reads the same record,
so one that takes over from another waits for the renewals the other granted.
"""

from __future__ import annotations

from typing import Any

import redis

from cr_orchestrator.errors import StateError
from cr_orchestrator.state.batch import Batch, Later


GRANT_FIELDS = ("host", "epoch", "at", "paused_host")


class LeaseStore:
    def __init__(self, client: redis.Redis, prefix: str = "cr") -> None:
        self.redis = client
        self.prefix = prefix

    def key(self, cluster: str) -> str:
        return f"{self.prefix}:cluster:{cluster}:lease"

    def record_grant(self, *, cluster: str, host: str, epoch: int, at: float,
                     paused: bool = False, pipe: Any = None) -> None:
        """A renewal to ``host`` that it may have received up to ``at``. Written before
        the renewal is sent (with the send's deadline), and again with the moment it
        was answered: the record never says earlier than the host may have got it.
        ``paused``: the renewal says the cluster is paused, and the host's agent keeps
        such a lease without end: the record names the host until an ordinary renewal
        is answered (:meth:`ordinary_answered`), whatever ``at`` says.
        ``pipe``: queue the write there (sent with the caller's other commands)."""
        fields = {"host": host, "epoch": str(epoch), "at": repr(at)}
        if paused:
            fields["paused_host"] = host
        (pipe if pipe is not None else self.redis).hset(self.key(cluster), mapping=fields)

    def read_paused_host(self, batch: Batch, cluster: str) -> Later[str]:
        """The host that may hold a paused renewal ("" when none), queued on ``batch``."""
        key = self.key(cluster)
        return batch.add(lambda pipe: pipe.hget(key, "paused_host"),
                         lambda replies: (replies[0] or b"").decode())

    def ordinary_answered(self, *, cluster: str, host: str, paused_host: str,
                          pipe: Any = None) -> None:
        """``host`` answered an ordinary renewal: it holds no paused lease any more.
        ``paused_host``: what :meth:`read_paused_host` read before the renewal."""
        if paused_host == host:
            (pipe if pipe is not None else self.redis).hdel(self.key(cluster), "paused_host")

    def last_grant(self, cluster: str) -> tuple[str, int, float, bool] | None:
        """(host, epoch, at, held paused) of the newest renewal granted, or None.
        Held paused: the host may still hold a renewal that said paused."""
        return self._grant(cluster, self.redis.hmget(self.key(cluster), *GRANT_FIELDS))

    def read_grant(self, batch: Batch,
                   cluster: str) -> Later[tuple[str, int, float, bool] | None]:
        """:meth:`last_grant`, queued on ``batch`` (a round reads it with its state)."""
        key = self.key(cluster)
        return batch.add(lambda pipe: pipe.hmget(key, *GRANT_FIELDS),
                         lambda replies: self._grant(cluster, replies[0]))

    def _grant(self, cluster: str, raw: list) -> tuple[str, int, float, bool] | None:
        if raw[0] is None:
            return None
        try:
            host = raw[0].decode()
            return host, int(raw[1]), float(raw[2]), (raw[3] or b"").decode() == host
        except (TypeError, ValueError) as exc:
            raise StateError(f"malformed Redis state: {self.key(cluster)}: {exc}") from exc

    def read_agent(self, batch: Batch, cluster: str) -> Later[tuple[str, str]]:
        """(host, state) of the last agent report ("" when none), queued on ``batch``:
        what :meth:`set_agent` compares with."""
        key = self.key(cluster)
        return batch.add(lambda pipe: pipe.hmget(key, "agent_host", "agent"),
                         lambda replies: tuple((v or b"").decode() for v in replies[0]))

    def set_agent(self, *, cluster: str, host: str, up: bool, detail: str, now: float,
                  before: tuple[str, str] | None = None, pipe: Any = None) -> bool:
        """What the last renewal said of ``host``'s agent; True when that changed.
        ``before``: the last report as :meth:`read_agent` read it (else read here);
        ``pipe``: queue the write there."""
        key = self.key(cluster)
        state = "up" if up else "down"
        if before is None:
            raw = self.redis.hmget(key, "agent_host", "agent")
            before = ((raw[0] or b"").decode(), (raw[1] or b"").decode())
        changed = before != (host, state)
        fields = {"agent_host": host, "agent": state, "agent_detail": detail}
        if changed:
            fields["agent_since"] = repr(now)
        (pipe if pipe is not None else self.redis).hset(key, mapping=fields)
        return changed

    def agent(self, cluster: str) -> dict[str, str] | None:
        """{host, state (up/down), detail, since} of the last agent report, or None."""
        raw = self.redis.hmget(self.key(cluster), "agent_host", "agent", "agent_detail",
                               "agent_since")
        if raw[0] is None:
            return None
        host, state, detail, since = ((v or b"").decode() for v in raw)
        return {"host": host, "state": state, "detail": detail, "since": since}
