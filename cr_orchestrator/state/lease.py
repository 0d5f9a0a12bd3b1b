"""The serving host's lease as the orchestrators record it in Redis.

One hash per cluster (``<prefix>:cluster:<name>:lease``): the newest renewal granted
(host, epoch, and ``at``: the latest moment the host may have received it) and what the
last renewal said of the host's lease agent. Every orchestrator reads the same record,
so one that takes over from another waits for the renewals the other granted.
"""

from __future__ import annotations

from typing import Any

import redis

from cr_orchestrator.errors import StateError
from cr_orchestrator.state.batch import Batch, Later


class LeaseStore:
    def __init__(self, client: redis.Redis, prefix: str = "cr") -> None:
        self.redis = client
        self.prefix = prefix

    def key(self, cluster: str) -> str:
        return f"{self.prefix}:cluster:{cluster}:lease"

    def record_grant(self, *, cluster: str, host: str, epoch: int, at: float,
                     pipe: Any = None) -> None:
        """A renewal to ``host`` that it may have received up to ``at``. Written before
        the renewal is sent (with the send's deadline), and again with the moment it
        was answered: the record never says earlier than the host may have got it.
        ``pipe``: queue the write there (sent with the caller's other commands)."""
        (pipe if pipe is not None else self.redis).hset(
            self.key(cluster), mapping={"host": host, "epoch": str(epoch), "at": repr(at)})

    def last_grant(self, cluster: str) -> tuple[str, int, float] | None:
        """(host, epoch, at) of the newest renewal granted, or None."""
        return self._grant(cluster, self.redis.hmget(self.key(cluster), "host", "epoch", "at"))

    def read_grant(self, batch: Batch, cluster: str) -> Later[tuple[str, int, float] | None]:
        """:meth:`last_grant`, queued on ``batch`` (a round reads it with its state)."""
        key = self.key(cluster)
        return batch.add(lambda pipe: pipe.hmget(key, "host", "epoch", "at"),
                         lambda replies: self._grant(cluster, replies[0]))

    def _grant(self, cluster: str, raw: list) -> tuple[str, int, float] | None:
        if raw[0] is None:
            return None
        try:
            return raw[0].decode(), int(raw[1]), float(raw[2])
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
