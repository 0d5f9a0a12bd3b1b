"""Who gets this round's lease renewal (pure: a snapshot in, a host or None out).

Only the live primary holds a lease, and only while the orchestrator itself reaches it:
a renewal sent to a host the orchestrator cannot reach might arrive or not, and each
attempt would push the promotion wait further out. So a primary that stops answering
stops being renewed at the round that first misses it, and its lease runs out
``lease_ttl`` after the last renewal it got, while detection counts its rounds.
"""

from __future__ import annotations

from cr_orchestrator.decide.rules import ClusterSnapshot
from cr_orchestrator.observe.health import Liveness


def renewal_target(snapshot: ClusterSnapshot) -> str | None:
    """The host whose lease this round renews, or None (no renewal this round)."""
    primary = snapshot.member(snapshot.primary) if snapshot.primary else None
    if primary is None or snapshot.observer_isolated or primary.observer_cut_off:
        return None
    if primary.host_liveness is not Liveness.UP:
        return None
    return primary.host
