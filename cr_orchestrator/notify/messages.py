"""Which events of a cluster's history deserve a notification, and what it says (pure).

A notification is made from the audit trail (the cluster's event stream) and from
nothing else: what it carries was already safe to store in Redis, so it never holds a
secret (the state layer refuses to store one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cr_orchestrator.notify.targets import NotifyKind

# Holds that wait for a person: nothing will change until an operator acts.
ACTION_NEEDED_SITUATIONS = frozenset({
    "no_primary", "bad_host_record", "hosts_ahead_unclear", "seeded_other_serves",
    "failover_budget_spent", "no_eligible_target", "dr_needs_operator",
})
PLANNED_KINDS = ("switchover", "failback")


@dataclass(frozen=True)
class Notification:
    kind: NotifyKind
    cluster: str
    title: str  # one line: the mail's subject
    text: str  # the reason sentence from history
    at: float
    event_id: str
    data: dict  # the event's own (secret-free) fields

    def as_json(self) -> dict:
        return {"kind": self.kind.value, "cluster": self.cluster, "title": self.title,
                "text": self.text, "at": self.at, "event_id": self.event_id,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)),
                "event": self.data}


def notification_for(*, cluster: str, event_id: str, at: float, kind: str,
                     data: dict) -> Notification | None:
    """The notification an event calls for, or None."""
    def made(what: NotifyKind, title: str, text: str | None = None) -> Notification:
        return Notification(what, cluster, f"[{cluster}] {title}", text or str(data.get("reason", "")),
                            at, event_id, data)

    if kind == "promotion":
        how = str(data.get("kind") or "failover")
        move = f"{data.get('new_primary')} is primary at epoch {data.get('epoch')} (was {data.get('old_primary')})"
        if how in PLANNED_KINDS:
            return made(NotifyKind.SWITCHOVER, f"{how}: {move}")
        return made(NotifyKind.FAILOVER, f"{how}: {move}")
    if kind == "playbook" and not data.get("ok") and not data.get("refused"):
        where = f" on {data['limit']}" if data.get("limit") else ""
        return made(NotifyKind.PLAYBOOK_FAILED,
                    f"playbook {data.get('playbook')}{where} failed ({data.get('status')}, "
                    f"rc {data.get('rc')})", f"{data.get('summary')} (why it ran: {data.get('why')})")
    if kind == "decision":
        situation = data.get("situation")
        # (a replica behind is told from its freshness, not from decisions: see notifier)
        if data.get("action") == "hold" and situation in ACTION_NEEDED_SITUATIONS:
            return made(NotifyKind.ACTION_NEEDED, f"holding, an operator must act ({situation})")
    return None


def behind_notification(*, cluster: str, replica_set: str, target: str, lag_s: float,
                        max_lag_s: float, now: float) -> Notification:
    """A target whose copy is older than the policy's ``max_replica_lag``."""
    return Notification(
        NotifyKind.REPLICA_BEHIND, cluster, f"[{cluster}] replica behind: {target} ({replica_set})",
        f"{target} may miss {lag_s:.0f} s of writes to {replica_set}, more than max_replica_lag "
        f"({max_lag_s:.0f} s): it would not be promoted automatically",
        now, f"behind:{replica_set}:{target}:{int(now)}",
        {"replica_set": replica_set, "target": target, "lag_s": round(lag_s, 1)})
