"""Operator commands (switchover, failover, failback, pause, resume, adopt, recover).

Shared by ``crctl`` (run in-process) and the ``cr.operator`` task (run by a site's
worker). Each records who asked for what in the cluster's event stream before acting.

Compare-and-set: a command carries the primary and epoch the operator saw
(:class:`Seen`; ``crctl`` reads them when the command is issued, or takes them from
``--seen-primary``/``--seen-epoch``). When the cluster has moved since (an automatic
failover ran while the command waited in a queue or behind a lock), the command is
refused, saying what changed; only ``force`` acts on the cluster as it is now, and the
history says so.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from cr_orchestrator.runtime import cycle
from cr_orchestrator.decide.rules import ineligibility, rank_targets
from cr_orchestrator.errors import ConfigError, StateError
from cr_orchestrator.observe.health import Liveness
from cr_orchestrator.state.cluster import EventKind


@dataclass(frozen=True)
class Seen:
    """The cluster as the operator saw it when issuing the command."""

    primary: str | None
    epoch: int


class Command(enum.StrEnum):
    SWITCHOVER = "switchover"
    FAILOVER = "failover"
    FAILBACK = "failback"
    PAUSE = "pause"
    RESUME = "resume"
    ADOPT = "adopt"
    RECOVER = "recover"


def run_command(env: cycle.Env, *, command: str, cluster: str, to: str | None = None,
                seen: Seen | None = None, force: bool = False) -> cycle.Outcome:
    """Carry out one operator command on ``cluster``; returns what happened.

    ``seen``: the primary and epoch the operator saw (None: as they are now). Refused
    with :class:`StateError` when the cluster moved since, unless ``force``."""
    try:
        cmd = Command(command)
    except ValueError:
        raise ConfigError(f"unknown command {command!r} (one of: "
                          f"{', '.join(c.value for c in Command)})") from None
    c = env.topology.cluster(cluster)
    if to is not None and to not in c.hosts():
        raise ConfigError(f"{to} is not a member of cluster {cluster} "
                          f"(members: {', '.join(c.hosts())})")
    state = env.state
    now_primary, now_epoch = state.primary(cluster), state.epoch(cluster)  # as crctl reads
    if seen is not None and (seen.primary, seen.epoch) != (now_primary, now_epoch) \
            and cmd is not Command.RESUME:
        if not force:
            raise StateError(_moved(env, cluster, cmd, seen, now_primary, now_epoch))
        state.append_event(cluster=cluster, kind=EventKind.OPERATOR, at=env.clock(), data={
            "command": cmd.value, "forced": True, "reason": (
                f"operator {cmd.value} of {cluster} forced: issued when "
                f"{seen.primary} was primary at epoch {seen.epoch}, carried out with "
                f"{now_primary} at epoch {now_epoch}")})
    primary, epoch = state.ensure(cluster=cluster, configured_primary=c.configured_primary)
    if cmd in (Command.PAUSE, Command.RESUME):
        state.set_paused(cluster, cmd is Command.PAUSE)
        word = "paused: no automatic action until resumed" if cmd is Command.PAUSE else \
            "resumed: automatic actions allowed again"
        state.append_event(cluster=cluster, kind=EventKind.OPERATOR, at=env.clock(),
                           data={"command": cmd.value, "reason": f"operator: {cluster} {word}"})
        return cycle.Outcome(True, f"{cluster} {word}", epoch=epoch)
    if cmd is Command.ADOPT:
        return _adopt(env, c, to=to)
    if cmd is Command.RECOVER:
        return _recover(env, c)
    if cmd is Command.FAILBACK:
        to = c.configured_primary
        if to == primary:
            raise StateError(f"{to} is already the primary of {cluster}: nothing to fail back")
    snapshot = cycle.observe(env, c).snapshot
    if cmd in (Command.SWITCHOVER, Command.FAILBACK):
        _refuse_when_the_primary_is_failing(snapshot, c, cmd)
    target = _choose(snapshot, c, to=to, command=cmd)
    reason = f"operator {cmd.value} of {cluster} from {primary} to {target}"
    state.append_event(cluster=cluster, kind=EventKind.OPERATOR, at=env.clock(),
                       data={"command": cmd.value, "target": target, "reason": reason})
    # the epoch the command was checked at: a change that lands meanwhile refuses it
    if cmd is Command.FAILOVER:
        return cycle.failover(env, c, to=target, expected_epoch=epoch, reason=reason,
                              kind="operator failover")
    return cycle.switchover(env, c, to=target, expected_epoch=epoch, reason=reason,
                            kind=cmd.value)


def _moved(env: cycle.Env, cluster: str, cmd: Command, seen: Seen, primary: str | None,
           epoch: int) -> str:
    last = next((e for e in reversed(env.state.events(cluster, count=200))
                 if e.kind in ("promotion", "adopted")), None)
    why = ""
    if last is not None:
        when = time.strftime("%H:%M:%S", time.localtime(last.at))
        why = f" ({last.data.get('kind') or last.kind} at {when}: {last.data.get('reason', '')})"
    return (f"refused: {cmd.value} of {cluster} was issued when {seen.primary} was primary "
            f"at epoch {seen.epoch}, but the cluster has moved since: {primary} is primary "
            f"at epoch {epoch}{why}. Nothing was done; look at `crctl status` and issue it "
            "again, or add --force to act on the cluster as it is now")


def _refuse_when_the_primary_is_failing(snapshot, cluster, cmd: Command) -> None:
    """A planned change needs a primary that answers: demoting one that the detector
    already suspects would hold the cluster lock through its connection timeouts and
    push back the automatic failover that is due."""
    primary = snapshot.member(snapshot.primary) if snapshot.primary else None
    if primary is None or (primary.host_liveness is Liveness.UP
                           and primary.service_liveness is Liveness.UP):
        return
    from cr_orchestrator.decide.rules import decide

    decision = decide(snapshot, cluster.policy)
    state = (f"{primary.host_liveness.value} (host)" if primary.host_liveness is not Liveness.UP
             else f"{primary.service_liveness.value} (service)")
    raise StateError(
        f"not starting a {cmd.value} of {cluster.name}: its primary {primary.host} is {state}, "
        f"and a planned change needs a primary that answers; the orchestrator's own view: "
        f"{decision.action.value}: {decision.reason}. Wait for it, or force a change with "
        f"`crctl failover {cluster.name} --to HOST`")


def _adopt(env: cycle.Env, cluster, *, to: str | None) -> cycle.Outcome:
    """The operator's answer to a hold of rule "hosts first": ``to`` is the primary, at
    the newest epoch that Redis or any member's records know (never lower: the hosts
    would refuse every order at a lower one). Nothing on any host changes here; the next
    rounds act from it (demote another serving member, start ``to`` if it does not
    serve: each writing its records first)."""
    if to is None:
        raise ConfigError(f"adopt needs --to HOST (a member of {cluster.name})")
    snapshot = cycle.observe(env, cluster).snapshot
    recorded = [m.record.epoch or 0 for m in snapshot.members
                if m.record is not None and m.record.problem is None]
    epoch = max([snapshot.epoch, *recorded])
    said = (f"Redis had only the inventory's word, {snapshot.primary} at epoch {snapshot.epoch}"
            if snapshot.seeded else
            f"Redis said {snapshot.primary or 'nobody'} at epoch {snapshot.epoch}")
    reason = f"operator adopt of {cluster.name}: {to} is the primary at epoch {epoch} ({said})"
    env.state.append_event(cluster=cluster.name, kind=EventKind.OPERATOR, at=env.clock(),
                           data={"command": "adopt", "target": to, "reason": reason})
    return cycle.adopt(env, cluster, host=to, epoch=epoch, expected_epoch=snapshot.epoch,
                       reason=reason)


def _recover(env: cycle.Env, cluster) -> cycle.Outcome:
    """Rebuild the primary and epoch from the members' own records (what a round does by
    itself when Redis comes back empty or behind), on demand: read every reachable
    member's epoch and role records now, say what was found, and adopt the host that
    recorded the primary role at the newest epoch. Refused, saying why, when the records
    do not name one host (then ``crctl adopt`` is the operator's choice)."""
    from cr_orchestrator.decide.rules import Action, from_the_hosts

    snapshot = cycle.observe(env, cluster).snapshot
    found = "; ".join(
        f"{m.host}: {m.record.describe() if m.record else 'records not read (unreachable)'}"
        f", service {m.service_liveness.value}" for m in snapshot.members)
    said = (f"Redis had no state (seeded from the inventory: {snapshot.primary} at epoch "
            f"{snapshot.epoch})" if snapshot.seeded else
            f"Redis says {snapshot.primary or 'nobody'} at epoch {snapshot.epoch}")
    verdict = from_the_hosts(snapshot)
    if verdict is None:
        return cycle.Outcome(True, f"nothing to recover in {cluster.name}: {said} and no host "
                                   f"recorded a newer epoch. Found: {found}",
                             epoch=snapshot.epoch)
    if verdict.action is not Action.ADOPT:
        raise StateError(f"cannot recover {cluster.name} from its hosts: {verdict.reason}. "
                         f"Found: {found}")
    reason = f"operator recover of {cluster.name}: {verdict.reason}"
    env.state.append_event(cluster=cluster.name, kind=EventKind.OPERATOR, at=env.clock(),
                           data={"command": "recover", "target": verdict.target,
                                 "reason": reason})
    outcome = cycle.adopt(env, cluster, host=verdict.target, epoch=verdict.epoch,
                          expected_epoch=snapshot.epoch, reason=reason)
    return cycle.Outcome(outcome.ok, f"{outcome.summary}. Found: {found}", epoch=outcome.epoch)


def _choose(snapshot, cluster, *, to: str | None, command: Command) -> str:
    policy = cluster.policy
    if to is not None:
        member = snapshot.member(to)
        if to == snapshot.primary:
            raise StateError(f"{to} is already the primary of {cluster.name}")
        # The operator may pick a replica, or a stale copy (a planned change ends with a
        # final sync; a forced failover is their call), but never a host nobody can reach.
        if member.host_liveness is not Liveness.UP:
            why = ineligibility(snapshot, policy, member, allow_replica=True)
            raise StateError(f"cannot {command.value} {cluster.name} to {to}: {why}")
        return to
    eligible, refused = rank_targets(snapshot, policy)
    if not eligible:
        raise StateError(f"cannot {command.value} {cluster.name}: no eligible target: "
                         + ("; ".join(refused) or "no other member"))
    return eligible[0].host
