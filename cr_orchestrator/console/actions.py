"""The console's actions: a preview of what ``decide`` would say, and the command itself.

An action runs exactly as ``crctl switchover|pause|resume|failback`` runs it (the
operator commands of :mod:`cr_orchestrator.runtime.commands`), with the primary and
epoch the page showed as :class:`~cr_orchestrator.runtime.commands.Seen`: a cluster that
moved since the operator looked refuses it and says what changed. Who asked, and from
where, is written to the cluster's history before anything is done.
"""

from __future__ import annotations

import logging

from cr_orchestrator.errors import ConfigError
from cr_orchestrator.runtime.cycle import Env

COMMANDS = ("switchover", "failback", "pause", "resume")
log = logging.getLogger("crctl.serve")


def preview(env: Env, cluster_name: str, command: str, to: str | None) -> dict:
    """What the orchestrator sees now and would do: the decision of a round taken now,
    and for a change of primary the target it would pick (and why others are not)."""
    from cr_orchestrator.decide.rules import decide, rank_targets
    from cr_orchestrator.runtime import cycle

    if command not in COMMANDS:
        raise ConfigError(f"unknown console action {command!r} (one of: {', '.join(COMMANDS)})")
    cluster = env.topology.cluster(cluster_name)
    # what the action will be checked against, read as `crctl` reads it (None: nothing
    # recorded yet, the inventory's primary is shown)
    seen_primary, seen_epoch = env.state.primary(cluster_name), env.state.epoch(cluster_name)
    snapshot = cycle.observe(env, cluster).snapshot
    decision = decide(snapshot, cluster.policy)
    out = {"command": command, "cluster": cluster_name, "primary": snapshot.primary,
           "epoch": snapshot.epoch, "paused": snapshot.paused,
           "decide": f"{decision.action.value}"
                     + (f" {decision.target}" if decision.target else "") + f": {decision.reason}",
           "target": None, "refused": [], "seen_primary": seen_primary, "seen_epoch": seen_epoch}
    if command in ("switchover", "failback"):
        eligible, refused = rank_targets(snapshot, cluster.policy)
        target = cluster.configured_primary if command == "failback" else \
            to or (eligible[0].host if eligible else None)
        out["target"], out["refused"] = target, refused
        if target is None:
            out["effect"] = f"{command}: no eligible target"
        elif target == snapshot.primary:
            out["effect"] = f"{command}: nothing to do, {target} is already the primary"
        else:
            out["effect"] = (f"{command}: demote {snapshot.primary}, final sync from it, promote "
                             f"{target} at epoch {snapshot.epoch + 1}")
    else:
        out["effect"] = ("pause: no automatic action until resumed (probes and history go on)"
                         if command == "pause" else "resume: automatic actions allowed again")
    return out


def perform(env: Env, *, inventory: str, cluster_name: str, command: str, to: str | None,
            seen_primary: str | None, seen_epoch: int, by: str,
            redis_url: str | None = None) -> dict:
    """Carry out one action; ``{"ok", "summary", "epoch"}``. Refusals (the cluster moved,
    no eligible target, the primary failing) come back as ``ok: False`` with the reason."""
    from cr_orchestrator.errors import CrError
    from cr_orchestrator.runtime.commands import Seen, run_command
    from cr_orchestrator.state.cluster import EventKind

    if command not in COMMANDS:
        raise ConfigError(f"unknown console action {command!r} (one of: {', '.join(COMMANDS)})")
    env.topology.cluster(cluster_name)  # unknown cluster: ConfigError before any history
    target = f" to {to}" if to else ""
    env.state.append_event(cluster=cluster_name, kind=EventKind.OPERATOR, at=env.clock(), data={
        "command": command, "by": by, "target": to, "via": "console",
        "reason": f"console: {command} of {cluster_name}{target} asked by {by} (seen "
                  f"{seen_primary} primary at epoch {seen_epoch})"})
    try:
        outcome = run_command(env, command=command, cluster=cluster_name,
                              to=to if command == "switchover" else None,
                              seen=Seen(seen_primary, int(seen_epoch)))
    except CrError as exc:
        return {"ok": False, "summary": str(exc), "epoch": env.state.epoch(cluster_name)}
    summary = outcome.summary
    if outcome.epoch is not None and command in ("switchover", "failback"):
        # The schedule follows the primary to its site, as after `crctl switchover`. The
        # change is done whatever happens here (and `crctl run` re-routes a moved primary
        # by itself): a failure is told, not turned into a failed action.
        try:
            from cr_orchestrator.runtime.celery_app import make_app
            from cr_orchestrator.runtime.schedule import follow_primaries

            follow_primaries(make_app(redis_url=redis_url, prefix=env.prefix), env.topology,
                             inventory, redis_client=env.redis, prefix=env.prefix)
        except Exception as exc:  # noqa: BLE001 - see above
            log.exception("console: moving the schedule after the %s of %s", command, cluster_name)
            summary += (f" (the schedule was not moved here: {type(exc).__name__}: {exc}; "
                        "crctl run re-routes it)")
    return {"ok": bool(outcome.ok), "summary": summary, "epoch": outcome.epoch}
