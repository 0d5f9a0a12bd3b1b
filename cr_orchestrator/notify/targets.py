"""Where a cluster's notifications go (``cr_notify``), as validated values."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import urlsplit


class NotifyKind(enum.StrEnum):
    """What a notification is about (``cr_notify.events`` chooses among them)."""

    FAILOVER = "failover"
    SWITCHOVER = "switchover"  # planned changes: switchover and failback
    ACTION_NEEDED = "action_needed"  # the orchestrator holds and asks an operator
    PLAYBOOK_FAILED = "playbook_failed"
    REPLICA_BEHIND = "replica_behind"


@dataclass(frozen=True)
class Webhook:
    url: str  # may carry a token in its path (chat services do): shown only as :meth:`shown`

    def shown(self) -> str:
        """The URL without path, query or user part: what logs and errors may name."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


@dataclass(frozen=True)
class SmtpTarget:
    server: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool = False


@dataclass(frozen=True)
class NotifyTargets:
    webhooks: tuple[Webhook, ...] = ()
    smtp: SmtpTarget | None = None
    kinds: frozenset[NotifyKind] = frozenset(NotifyKind)
