"""Applying a schedule's faults to the lab, and healing them: one table row per kind.

A role target is resolved when the fault starts (the primary Redis names then). Nothing
here raises for a fault the lab refuses (a second fault on a crashed host): the refusal
is the record's ``refused`` sentence, and the schedule goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cr_orchestrator.errors import LabError
from cr_orchestrator.testworld.chaos.schedule import Fault, Target

SITE_A_MEMBERS = ("mail-a", "mail-b")


@dataclass
class World:
    """What a fault can hit: the lab, the orchestrator running now, the Redis quorum."""

    lab: object
    orch: object
    quorum: object


@dataclass
class Applied:
    """One fault as it happened: who it hit, when it started and ended, what was done."""

    fault: Fault
    victim: str | None = None
    applied_at: float | None = None
    struck_at: float | None = None  # when the fault had taken hold (a crash: all killed)
    healed_at: float | None = None
    detail: str = ""
    refused: str | None = None
    undo: dict = field(default_factory=dict)  # what heal needs (the killed Redis port)

    def as_dict(self) -> dict:
        return {"kind": self.fault.kind, "target": str(self.fault.target),
                "start_s": self.fault.start_s, "duration_s": self.fault.duration_s,
                "victim": self.victim, "applied_at": self.applied_at,
                "struck_at": self.struck_at, "healed_at": self.healed_at, "detail": self.detail,
                "refused": self.refused}


def resolve(world: World, target: Target) -> str:
    """The host, site or part a role target names right now."""
    if target in (Target.SITE_A, Target.SITE_B, Target.ORCHESTRATOR, Target.REDIS):
        return str(target)
    if target is Target.REPLICA:
        return "mail-dr"
    try:
        primary = world.orch.state.primary("mail") or "mail-a"  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - Redis mid-failover: the inventory's primary
        primary = "mail-a"
    if target is Target.PRIMARY:
        return primary
    return next(h for h in SITE_A_MEMBERS if h != primary) if primary in SITE_A_MEMBERS \
        else "mail-b"


def apply(world: World, fault: Fault) -> Applied:
    record = Applied(fault)
    record.victim = resolve(world, fault.target)
    record.applied_at = time.time()
    try:
        record.detail = ACTIONS[fault.kind][0](world, record)
        record.struck_at = time.time()
    except (LabError, OSError, RuntimeError, TimeoutError) as exc:
        record.refused = f"{type(exc).__name__}: {exc}"
    return record


def heal(world: World, record: Applied) -> None:
    """Undo ``record``'s fault (nothing for a refused one or a one-blow kind)."""
    if record.refused is not None or record.healed_at is not None:
        return
    undo = ACTIONS[record.fault.kind][1]
    if undo is not None:
        try:
            record.detail += "; " + undo(world, record)
        except (LabError, OSError, RuntimeError, TimeoutError) as exc:
            record.detail += f"; heal failed: {type(exc).__name__}: {exc}"
    record.healed_at = time.time()


def _host_fault(mode: str) -> tuple[Callable, Callable]:
    def do(world: World, record: Applied) -> str:
        return world.lab.fail(record.victim, mode)  # type: ignore[attr-defined]

    def undo(world: World, record: Applied) -> str:
        return " ".join(world.lab.heal(record.victim, modes=[mode]))  # type: ignore[attr-defined]

    return do, undo


def _site_fault(mode: str) -> tuple[Callable, Callable]:
    def do(world: World, record: Applied) -> str:
        return world.lab.fail(record.victim, mode)  # type: ignore[attr-defined]

    def undo(world: World, record: Applied) -> str:
        return " ".join(world.lab.heal(record.victim))  # type: ignore[attr-defined]

    return do, undo


def _stop_service(world: World, record: Applied) -> str:
    """The service dies on its own. Not the lab's ``service`` fault: its heal starts the
    service again wherever it was stopped, also on a host demoted meanwhile, which is an
    outside hand starting a second server that no orchestrator could have prevented."""
    lab = world.lab
    lab.run_on(record.victim, [lab.mailctl, "stop"], check=True)  # type: ignore[attr-defined]
    record.healed_at = record.applied_at
    return "mail service stopped (nothing restarts it by itself)"


def _kill(child: str) -> Callable:
    def do(world: World, record: Applied) -> str:
        pid = world.orch.kill_child(child)  # type: ignore[attr-defined]
        record.healed_at = record.applied_at  # one blow: over when struck
        return f"crctl run's {child} (pid {pid}) SIGKILLed"

    return do


def _kill_redis_master(world: World, record: Applied) -> str:
    port = world.quorum.master_port()  # type: ignore[attr-defined]
    if port is None:
        raise RuntimeError("the sentinels agree on no Redis master now")
    world.quorum.kill(port)  # type: ignore[attr-defined]
    record.undo["port"] = port
    return f"Redis master {port} SIGKILLed"


def _restart_redis(world: World, record: Applied) -> str:
    quorum, port = world.quorum, record.undo["port"]
    master = quorum.wait_for_new_master(port)  # type: ignore[attr-defined]
    # it comes back as a replica of the new master, as Sentinel would reconfigure it
    quorum.start_redis(port, replica_of=master)  # type: ignore[attr-defined]
    return f"Redis {port} restarted as a replica of {master}"


ACTIONS: dict[str, tuple[Callable, Callable | None]] = {
    **{mode: _host_fault(mode) for mode in
       ("crash", "link", "freeze", "loss", "isolate", "asymmetric")},
    "service": (_stop_service, None),
    "site_crash": _site_fault("crash"),
    "site_isolate": _site_fault("isolate"),
    "worker_killed": (_kill("worker"), None),
    "beat_killed": (_kill("beat"), None),
    "redis_master_killed": (_kill_redis_master, _restart_redis),
}
