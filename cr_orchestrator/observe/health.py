"""Values shared by the probes (observe), the failure detector and the decision engine.

A probe never raises: it returns an :class:`Observation`. The detector turns a window of
observations into :class:`Liveness` verdicts; the decision engine reads those.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

ORCHESTRATOR = "orchestrator"  # the vantage name of the orchestrator's own probes


class Health(enum.StrEnum):
    """Outcome of one probe."""

    OK = "ok"
    DEGRADED = "degraded"  # reachable but not ready (slow, disk full, service starting)
    UNREACHABLE = "unreachable"  # no answer within the deadline, refused, auth failed, garbage
    DOWN = "down"  # reachable, and it says the thing is not running (service stopped)


class Liveness(enum.StrEnum):
    """The failure detector's verdict on a host or a service."""

    UP = "up"
    SUSPECT = "suspect"  # failing, but not long enough to act on
    DOWN = "down"
    UNKNOWN = "unknown"  # no observation yet, or only from an isolated observer


@dataclass(frozen=True)
class Observation:
    """One probe result: who looked (vantage), at what, when, and what it saw."""

    host: str  # the host looked at
    vantage: str  # ORCHESTRATOR or the name of the peer host that looked
    subject: str  # "host", "service:<name>" or "check:<kind>:<port>@<address>"
    health: Health
    at: float  # unix time the probe started
    latency_s: float | None = None
    error: str | None = None  # short, secret-free reason when not OK
    # JSON-serialisable extras (address, port, target, service, refused, records, ...);
    # read-only once the observation is made (it is stored in Redis as JSON)
    detail: Mapping[str, object] = field(default_factory=dict, compare=False, hash=False)
