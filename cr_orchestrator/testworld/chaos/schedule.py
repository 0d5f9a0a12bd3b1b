"""Fault schedules drawn from a seed: what breaks, where, when and for how long.

Pure: the same seed and profile always give the same schedule, so any schedule of a
campaign is replayed from its seed alone. Targets are roles (``primary``: whoever is
primary when the fault starts), resolved to a host when the fault is applied.

The fault kinds are a table (:data:`KINDS`): a new lab fault is one more row.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass


class Target(enum.StrEnum):
    PRIMARY = "primary"        # the cluster's primary when the fault starts
    SECONDARY = "secondary"    # the other member of site-a (mail-a or mail-b)
    REPLICA = "replica"        # the DR replica at site-b (mail-dr)
    SITE_A = "site-a"
    SITE_B = "site-b"
    ORCHESTRATOR = "orchestrator"  # crctl run (its worker or beat)
    REDIS = "redis"            # the Redis master of the Sentinel quorum


HOST_ROLES = (Target.PRIMARY, Target.SECONDARY, Target.REPLICA)
SITES = (Target.SITE_A, Target.SITE_B)


@dataclass(frozen=True)
class FaultKind:
    """One row of the table: ``lasts`` faults are healed after their duration, the others
    are one blow (the victim restarts by itself: crctl run restarts its worker and beat)."""

    name: str
    targets: tuple[Target, ...]
    lasts: bool
    weight: int
    host_crash: bool = False  # counts for "no acknowledged message lost after host crashes"


KINDS: tuple[FaultKind, ...] = (
    FaultKind("crash", HOST_ROLES, lasts=True, weight=5, host_crash=True),
    FaultKind("link", HOST_ROLES, lasts=True, weight=2),
    # the primary's service dies; nothing but the orchestrator starts it again (the
    # lab's services start manually): a secondary's service does not run to be stopped
    FaultKind("service", (Target.PRIMARY,), lasts=False, weight=2),
    FaultKind("freeze", HOST_ROLES, lasts=True, weight=2),
    FaultKind("loss", HOST_ROLES, lasts=True, weight=1),
    FaultKind("isolate", HOST_ROLES, lasts=True, weight=1),
    FaultKind("asymmetric", (Target.PRIMARY,), lasts=True, weight=2),
    FaultKind("worker_killed", (Target.ORCHESTRATOR,), lasts=False, weight=1),
    FaultKind("beat_killed", (Target.ORCHESTRATOR,), lasts=False, weight=1),
    FaultKind("redis_master_killed", (Target.REDIS,), lasts=True, weight=1),
    FaultKind("site_crash", SITES, lasts=True, weight=1, host_crash=True),
    FaultKind("site_isolate", SITES, lasts=True, weight=1),
)
BY_NAME = {k.name: k for k in KINDS}


@dataclass(frozen=True)
class Profile:
    """How big a schedule is: faults per schedule, when they start (seconds after the
    load is running), how long a lasting one lasts, how often a schedule is disk-lost."""

    name: str
    faults: tuple[int, int]
    start_within_s: float
    duration_s: tuple[float, float]
    disk_lost_every: int  # about one schedule in N (0: never)


PROFILES = {
    "ci": Profile("ci", faults=(1, 2), start_within_s=6.0, duration_s=(3.0, 10.0),
                  disk_lost_every=5),
    "full": Profile("full", faults=(1, 3), start_within_s=20.0, duration_s=(3.0, 25.0),
                    disk_lost_every=5),
}


@dataclass(frozen=True)
class Fault:
    kind: str
    target: Target
    start_s: float
    duration_s: float | None  # None: one blow, or (disk lost) never healed

    def sentence(self) -> str:
        lasts = ("never healed" if self.kind == "crash" and self.duration_s is None
                 else f"for {self.duration_s:.1f} s" if self.duration_s is not None else "")
        return f"{self.kind} {self.target} at +{self.start_s:.1f} s {lasts}".rstrip()


@dataclass(frozen=True)
class Schedule:
    seed: int
    profile: str
    faults: tuple[Fault, ...]
    disk_lost: bool  # the first fault is a crash of the primary that never heals

    @property
    def last_heal_s(self) -> float:
        """When the last fault ends (a never-healed crash ends nothing)."""
        return max((f.start_s + (f.duration_s or 0.0) for f in self.faults), default=0.0)

    def sentence(self) -> str:
        return "; ".join(f.sentence() for f in self.faults)


def parse_seed(text: str) -> int:
    """A seed from the command line: a non-negative integer, else a clear error."""
    try:
        seed = int(text)
    except ValueError:
        raise ValueError(f"seed {text!r}: give a non-negative integer") from None
    if seed < 0:
        raise ValueError(f"seed {text!r}: give a non-negative integer")
    return seed


def profile_named(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"profile {name!r}: choose one of {', '.join(PROFILES)}") from None


def campaign_seeds(campaign_seed: int, count: int) -> list[int]:
    """The seeds of a campaign's ``count`` schedules (each replayable on its own)."""
    rng = random.Random(campaign_seed)
    return [rng.randrange(1_000_000) for _ in range(count)]


def draw(seed: int, profile: Profile) -> Schedule:
    """The schedule of ``seed`` under ``profile``."""
    rng = random.Random(f"{profile.name}:{seed}")
    if profile.disk_lost_every and rng.randrange(profile.disk_lost_every) == 0:
        start = round(rng.uniform(1.0, profile.start_within_s), 1)
        return Schedule(seed, profile.name, (Fault("crash", Target.PRIMARY, start, None),),
                        disk_lost=True)
    faults: list[Fault] = []
    for _ in range(rng.randint(*profile.faults)):
        kind = rng.choices(KINDS, weights=[k.weight for k in KINDS])[0]
        target = rng.choice(kind.targets)
        start = round(rng.uniform(0.0, profile.start_within_s), 1)
        duration = round(rng.uniform(*profile.duration_s), 1) if kind.lasts else None
        candidate = Fault(kind.name, target, start, duration)
        if _fits(candidate, faults):
            faults.append(candidate)
    return Schedule(seed, profile.name, tuple(sorted(faults, key=lambda f: f.start_s)),
                    disk_lost=False)


def _fits(new: Fault, chosen: list[Fault]) -> bool:
    """A site fault comes alone (it takes every host of its site), and one role never has
    two lasting faults at once (the lab refuses a second fault on a crashed host)."""
    if any(f.target in SITES for f in chosen) or (new.target in SITES and chosen):
        return False
    return not any(f.target == new.target and _overlap(f, new) for f in chosen)


def _overlap(a: Fault, b: Fault) -> bool:
    a_end = a.start_s + (a.duration_s or 0.0)
    b_end = b.start_s + (b.duration_s or 0.0)
    return a.start_s <= b_end and b.start_s <= a_end
