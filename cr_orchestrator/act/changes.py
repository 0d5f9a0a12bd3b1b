"""The topology changes, each under the cluster lock and fenced by the epoch.

- failover (unplanned): take a new epoch by compare-and-set, then ``failover.yml`` (the
  old primary is demoted if it answers, the new one promoted, clients switched);
- switchover (planned, and failback): ``demote.yml`` on the primary, a final sync from it,
  a new epoch, then ``switchover.yml``: no write is lost; a failed final sync starts the
  old primary again (same epoch) and gives its shared IP back;
- restart in place (``service.yml``), demotion of a member that serves although it is not
  the live primary (``demote.yml``), resync of a member from the live primary.

Each re-checks, under the lock, the epoch its decision was made at, and appends what it
did (playbook runs, promotions, sync results) to the cluster's event stream.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis as redis_lib

from cr_orchestrator.runtime.celery_app import PLAYBOOK_TIMEOUT_S, SOFT_TIME_LIMIT_S, SYNC_TIMEOUT_S
from cr_orchestrator.decide.rules import Decision
from cr_orchestrator.errors import CrError, StateError
from cr_orchestrator.model import Cluster, Topology
from cr_orchestrator.act.journal import step_of
from cr_orchestrator.state.cluster import ClusterState, EventKind, LockBusy
from cr_orchestrator.state.journal import Step, parse_step
from cr_orchestrator.state.lease import LeaseStore

log = logging.getLogger(__name__)

FAILOVER_SYNC_WAIT_S = 60.0  # how long a failover waits for a running sync to end
# A lease, extended every quarter of it while held: a worker killed in the middle of a
# change frees the cluster within this, and the next round resumes the change.
LOCK_TTL_S = 8.0
# the playbooks that may record "primary N" on cr_new_primary, and with it its first lease
LEASE_GRANTING = frozenset({"failover", "switchover", "promote", "service", "switch_ip",
                            "switch_dns"})


# Imported when first used: a worker that only probes never loads Ansible.
def _run_playbook(**kwargs):
    from cr_orchestrator.act.playbook_runner import run_playbook

    return run_playbook(**kwargs)


def _sync_replica_set(**kwargs):
    from cr_orchestrator.act.sync import sync_replica_set

    return sync_replica_set(**kwargs)


def _probe_cluster(**kwargs):
    from cr_orchestrator.observe.round import probe_cluster

    return probe_cluster(**kwargs)


@dataclass(frozen=True)
class Env:
    """The real parts a flow acts through (frozen: a test swaps a part with
    ``dataclasses.replace``)."""

    topology: Topology
    redis: redis_lib.Redis
    prefix: str = "cr"
    run_playbook: Callable[..., Any] = _run_playbook  # playbook_runner.run_playbook
    sync: Callable[..., Any] = _sync_replica_set  # act.sync.sync_replica_set
    probe: Callable[..., Any] = _probe_cluster  # observe.round.probe_cluster
    vault_password_file: str | None = None
    clock: Callable[[], float] = time.time
    state: ClusterState = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", ClusterState(self.redis, self.prefix))


@dataclass(frozen=True)
class Outcome:
    """What a flow or a round did, as one sentence (the task's return value)."""

    ok: bool
    summary: str
    decision: Decision | None = None
    epoch: int | None = None


# ---------------------------------------------------------------- acting helpers
def _extravars(cluster: Cluster, *, new_primary: str, old_primary: str | None, epoch: int,
               **more) -> dict:
    """The order every playbook checks (old and new must differ, so a one-host order
    carries no ``cr_old_primary``)."""
    extravars = {"cr_cluster": cluster.name, "cr_new_primary": new_primary, "cr_epoch": epoch,
                 # a promotion writes the new primary's first lease (roles/cr_fence)
                 "cr_lease_ttl": f"{cluster.policy.lease_ttl:g}"}
    if old_primary is not None and old_primary != new_primary:
        extravars["cr_old_primary"] = old_primary
    return {**extravars, **more}


def _play(env: Env, cluster: Cluster, playbook: str, *, limit: str | None, extravars: dict,
          why: str, lease=None, on_event=None):
    """Run one playbook and record it; ``lease``: the lock that protects it (the run is
    cancelled if that lock is lost: another holder may be changing the cluster)."""
    try:
        result = env.run_playbook(
            playbook=playbook, inventory=env.topology.source, extravars=extravars, limit=limit,
            check=False, timeout_s=PLAYBOOK_TIMEOUT_S, on_event=on_event,
            cancel=lease.lost if lease is not None else None,
            vault_password_file=env.vault_password_file)
    finally:
        if playbook in LEASE_GRANTING and "cr_lease_ttl" in extravars:
            # the run may have written the new primary's first lease (cr_fence) up to
            # now: a later failover away from it waits for that lease like a renewal's
            LeaseStore(env.redis, env.prefix).record_grant(
                cluster=cluster.name, host=extravars["cr_new_primary"],
                epoch=int(extravars["cr_epoch"]), at=env.clock())
    env.state.append_event(cluster=cluster.name, kind=EventKind.PLAYBOOK, at=env.clock(), data={
        "playbook": playbook, "limit": limit, "why": why, "ok": bool(result.ok),
        "status": str(result.status), "rc": result.rc,
        "refused": bool(getattr(result, "refused", False)),
        "duration_s": round(float(result.duration_s or 0), 3), "summary": result.summary,
        "failed_hosts": list(result.failed_hosts or ()),
        "unreachable_hosts": list(result.unreachable_hosts or ()),
        "artifact_dir": str(result.artifact_dir) if result.artifact_dir else None,
        "epoch": extravars.get("cr_epoch"),
        "new_primary": extravars.get("cr_new_primary"),
        "old_primary": extravars.get("cr_old_primary"),
    })
    return result


def _check_epoch(env: Env, cluster: Cluster, expected_epoch: int) -> str:
    epoch = env.state.epoch(cluster.name)
    if epoch != expected_epoch:
        raise StateError(f"{cluster.name} moved on to epoch {epoch} (primary "
                         f"{env.state.primary(cluster.name)}) since the decision at epoch "
                         f"{expected_epoch}: not acting on a stale decision")
    primary = env.state.primary(cluster.name)
    if primary is None:
        raise StateError(f"no live primary recorded for {cluster.name}")
    return primary


def _lock(env: Env, cluster: Cluster, wait_s: float = 0.0):
    return env.state.lock(cluster=cluster.name, ttl_s=LOCK_TTL_S, wait_s=wait_s)


def restart_service(env: Env, cluster: Cluster, *, host: str, expected_epoch: int,
                    reason: str) -> Outcome:
    """Restart the cluster's services on the primary in place (counts one attempt)."""
    with _lock(env, cluster) as lease:
        primary = _check_epoch(env, cluster, expected_epoch)
        attempt = env.state.count_restart(cluster.name)
        result = _play(env, cluster, "service", limit=host, why=reason, lease=lease,
                       extravars=_extravars(cluster, new_primary=primary, old_primary=None,
                                            epoch=expected_epoch, cr_service_action="restarted"))
    word = "restarted" if result.ok else "could not restart"
    return Outcome(bool(result.ok), f"{word} the service on {host} (attempt {attempt}): "
                                    f"{result.summary}", epoch=expected_epoch)


def failover(env: Env, cluster: Cluster, *, to: str, expected_epoch: int, reason: str,
             kind: str = "failover", old_primary_down: bool = False) -> Outcome:
    """Unplanned: promote ``to`` with a new epoch, then run the failover playbook.

    ``old_primary_down``: the detector confirmed the old primary's *host* down from a
    second vantage; the playbook then gets ``cr_old_primary_down: true`` and does not
    spend its timeouts trying to demote a machine that is gone. Never set it for a
    service-only failure (the host answers and must be demoted)."""
    with _lock(env, cluster) as lease:
        old = _check_epoch(env, cluster, expected_epoch)
        if to == old:
            raise StateError(f"{to} is already the primary of {cluster.name}")
        with _set_locks(env, cluster, wait_s=FAILOVER_SYNC_WAIT_S,
                        why=f"not promoting {to} yet",
                        # A sync from a crashed primary may still run into ``to``: its
                        # receiving rsync outlives the dead sender, and its --delete once
                        # removed the first mail the new primary took. The one-script
                        # take-over ends that receiver before serving, so only then is
                        # there no need to wait for the sync's own timeout.
                        source_is_down=old_primary_down and takes_over_by_script(env, cluster, to)):
            now = env.clock()
            epoch = env.state.promote(
                cluster=cluster.name, new_primary=to, expected_epoch=expected_epoch, now=now,
                change={"kind": kind, "playbook": "failover", "old_primary": old,
                        "old_primary_down": old_primary_down, "reason": reason})
            env.state.record_failover(cluster.name, now)
            env.state.reset_restarts(cluster.name)
            env.state.append_event(cluster=cluster.name, kind=EventKind.PROMOTION, at=now, data={
                "kind": kind, "new_primary": to, "old_primary": old, "epoch": epoch,
                "reason": reason})
            result = _move(env, cluster, "failover", new_primary=to, old_primary=old,
                           epoch=epoch, old_primary_down=old_primary_down, why=reason,
                           lease=lease)
    if not result.ok:
        return Outcome(False, f"{to} is primary of {cluster.name} at epoch {epoch}, but the "
                              f"failover playbook failed: {result.summary}", epoch=epoch)
    return Outcome(True, f"failed over {cluster.name} from {old} to {to} (epoch {epoch})",
                   epoch=epoch)


def _move(env: Env, cluster: Cluster, playbook: str, *, new_primary: str,
          old_primary: str | None, epoch: int, why: str, lease,
          old_primary_down: bool = False):
    """Run the playbook that moves the primary role at ``epoch``, then close the journal
    entry its promotion opened: also after a failed run (that is reported, and the
    rules repair what is left). A run that never ended (its worker was killed) or whose
    lease was lost keeps its entry: the next round resumes it."""
    # Python decides the path once (the playbooks only follow it): the one-script
    # take-over for a Linux new primary whose services have control commands, the roles
    # otherwise; only ever with the old primary's host confirmed down.
    more = {"cr_old_primary_down": True,
            "cr_fast_take_over": takes_over_by_script(env, cluster, new_primary)} \
        if old_primary_down else {}
    def journal(event: dict) -> None:
        # the journal's middle steps, as the playbook reaches them (history of a resumed
        # change says where the first run got to)
        step = step_of(event, new_primary=new_primary)
        if step is not None:
            with contextlib.suppress(redis_lib.RedisError):
                env.state.journal_step(cluster.name, epoch, step)

    result = _play(env, cluster, playbook, limit=None, why=why, lease=lease, on_event=journal,
                   extravars=_extravars(cluster, new_primary=new_primary,
                                        old_primary=old_primary, epoch=epoch, **more))
    if lease is None or not lease.lost.is_set():
        env.state.finish_change(cluster.name, epoch)
    return result


def resume(env: Env, cluster: Cluster, *, expected_epoch: int, reason: str) -> Outcome:
    """Finish the change journaled at ``expected_epoch`` whose worker died: run its
    playbook again, at the same epoch (every step is idempotent: the fence check and
    the epoch and role records first, then services, shared IP or DNS, then the check)."""
    with _lock(env, cluster) as lease:
        primary = _check_epoch(env, cluster, expected_epoch)
        change = env.state.change(cluster.name)
        if change is None or change["epoch"] != expected_epoch or \
                change["new_primary"] != primary:
            raise StateError(f"no unfinished change of {cluster.name} at epoch "
                             f"{expected_epoch} to {primary} is journaled: nothing to resume")
        playbook = "switchover" if change.get("playbook") == "switchover" else "failover"
        # the journal's promotion may not have reached a replica (WAIT timed out): acting
        # on it from a minority side would move hosts the majority never ordered
        env.state.replicated(f"the journal of the {change['kind']} to {primary}")
        reached = parse_step(change.get("step")) or Step.EPOCH_TAKEN
        env.state.append_event(cluster=cluster.name, kind=EventKind.RESUMED, at=env.clock(), data={
            "kind": change["kind"], "new_primary": primary, "epoch": expected_epoch,
            "old_primary": change.get("old_primary"), "step": reached.words,
            "reason": f"{reason} (the first run had reached: {reached.words})"})
        # a scheduled sync must not start while the primary role moves (see failover)
        with _set_locks(env, cluster, wait_s=0.0, why=f"resuming the move to {primary}",
                        source_is_down=True):
            result = _move(env, cluster, playbook, new_primary=primary,
                           old_primary=change.get("old_primary"), epoch=expected_epoch,
                           old_primary_down=bool(change.get("old_primary_down")),
                           why=reason, lease=lease)
    word = "resumed" if result.ok else "could not resume"
    return Outcome(bool(result.ok), f"{word} the {change['kind']} of {cluster.name} to "
                                    f"{primary} at epoch {expected_epoch}: {result.summary}",
                   epoch=expected_epoch)


def adopt(env: Env, cluster: Cluster, *, host: str, epoch: int, expected_epoch: int,
          reason: str) -> Outcome:
    """Make Redis say what the hosts recorded: ``host`` is primary at ``epoch``. Nothing
    changes on any host (no playbook runs); the next rounds act from there."""
    with _lock(env, cluster):
        env.state.adopt(cluster=cluster.name, primary=host, epoch=epoch,
                        expected_epoch=expected_epoch)
        env.state.append_event(cluster=cluster.name, kind=EventKind.ADOPTED, at=env.clock(), data={
            "primary": host, "epoch": epoch, "previous_epoch": expected_epoch,
            "reason": reason})
    return Outcome(True, f"{cluster.name}: {host} is primary at epoch {epoch}, as the hosts "
                         "recorded", epoch=epoch)


def reassert(env: Env, cluster: Cluster, *, host: str, expected_epoch: int,
             reason: str) -> Outcome:
    """Take the shared IP again on the live primary at the current epoch (no new epoch:
    nothing changes hands). ``switch_ip.yml`` is idempotent: fence check, address and
    gratuitous ARP, then the client check through the shared IP."""
    with _lock(env, cluster) as lease:
        primary = _check_epoch(env, cluster, expected_epoch)
        if host != primary:
            raise StateError(f"{host} is not the live primary of {cluster.name} "
                             f"({primary} is): not re-asserting it")
        result = _play(env, cluster, "switch_ip", limit=None, why=reason, lease=lease,
                       extravars=_extravars(cluster, new_primary=host, old_primary=None,
                                            epoch=expected_epoch))
    word = "re-asserted" if result.ok else "could not re-assert"
    return Outcome(bool(result.ok), f"{word} {host} at the shared IP of {cluster.name}: "
                                    f"{result.summary}", epoch=expected_epoch)


def takes_over_by_script(env: Env, cluster: Cluster, host: str) -> bool:
    """True when a failover with the old primary down takes over ``host`` through the
    one-script take-over (playbooks/includes/take_over_linux.yml, passed as the extra
    var ``cr_fast_take_over``): a Linux host whose services all have control commands.
    That script also ends any rsync still receiving into the replicated paths before the
    service starts; the role path (Windows) does not."""
    from cr_orchestrator.model import Platform

    return (env.topology.hosts[host].platform is Platform.LINUX
            and all(service.control is not None for service in cluster.services))


def demote_rejoined(env: Env, cluster: Cluster, *, host: str, expected_epoch: int,
                    reason: str) -> Outcome:
    """Stop a member that serves although it is not the live primary (rejoin, step 1)."""
    with _lock(env, cluster) as lease:
        primary = _check_epoch(env, cluster, expected_epoch)
        if host == primary:
            raise StateError(f"{host} is the live primary of {cluster.name}: not demoting it")
        result = _play(env, cluster, "demote", limit=host, why=reason, lease=lease,
                       extravars=_extravars(cluster, new_primary=primary, old_primary=host,
                                            epoch=expected_epoch))
    word = "demoted" if result.ok else "could not demote"
    return Outcome(bool(result.ok), f"{word} {host} in {cluster.name}: {result.summary}",
                   epoch=expected_epoch)


def sync_sets(env: Env, cluster: Cluster, *, sets: list[str] | None = None,
              source: str | None = None, epoch: int | None = None,
              wait_s: float = 0.0, locked: bool = False) -> list:
    """Run replica sets (all, or ``sets``) from the live primary, each under its set lock
    (``locked``: the caller holds them). Source and epoch are read once the lock is
    held, so a sync never starts from a primary that was replaced while it waited."""
    reports = []
    for rs in cluster.replica_sets:
        if sets is not None and rs.name not in sets:
            continue
        with contextlib.ExitStack() as stack:
            if not locked:
                stack.enter_context(env.state.lock(cluster=cluster.name, replica_set=rs.name,
                                                   ttl_s=LOCK_TTL_S, wait_s=wait_s))
            run_source = source or env.state.primary(cluster.name) or cluster.configured_primary
            run_epoch = env.state.epoch(cluster.name) if epoch is None else epoch
            report = env.sync(topology=env.topology, cluster=cluster.name,
                              replica_set=rs.name, source=run_source, epoch=run_epoch,
                              store=_freshness_store(env), now=env.clock)
        for event in report.events():
            env.state.append_event(cluster=cluster.name, kind=EventKind(event.get("kind", "sync")),
                                   at=report.ended_at, data=event)
        reports.append(report)
    return reports


@contextlib.contextmanager
def _set_locks(env: Env, cluster: Cluster, *, wait_s: float, why: str,
               source_is_down: bool = False) -> Iterator[None]:
    """Hold every replica-set lock of ``cluster`` while the primary changes: a sync from
    the old primary still running after the promotion would copy old data over the new
    primary's first writes (rsync --delete would even remove them).

    ``source_is_down``: the old primary's host is confirmed down from two vantages. A
    sync still holding a lock pushes from that host (syncs always run from the live
    primary), so it cannot write anything: do not wait for its deadline, only keep new
    syncs from starting by taking the locks that are free."""
    with contextlib.ExitStack() as stack:
        for rs in cluster.replica_sets:
            try:
                stack.enter_context(env.state.lock(
                    cluster=cluster.name, replica_set=rs.name, ttl_s=LOCK_TTL_S,
                    wait_s=0.0 if source_is_down else wait_s))
            except LockBusy as exc:
                if source_is_down:
                    log.info("%s: %s: a sync of %s from the down primary still holds its "
                             "lock; it cannot write, not waiting for it", cluster.name, why,
                             rs.name)
                    continue
                raise LockBusy(f"{why}: a sync of {rs.name} is still running after "
                               f"{wait_s:.0f} s ({exc}); trying again next round") from exc
        yield


def _freshness_store(env: Env):
    from cr_orchestrator.state.freshness import FreshnessStore

    return FreshnessStore(env.redis, env.prefix)


def resync(env: Env, cluster: Cluster, *, host: str, reason: str) -> Outcome:
    """Bring ``host`` up to date now: every set it belongs to, from the live primary."""
    names = [rs.name for rs in cluster.replica_sets
             if host in {t.host for t in rs.targets} | {cluster.configured_primary}]
    reports = sync_sets(env, cluster, sets=names)
    bad = [f"{r.replica_set}: " + "; ".join(t.error or "failed" for t in r.targets if not t.ok)
           for r in reports if not r.ok]
    if bad:
        return Outcome(False, f"resync of {host} failed: {' | '.join(bad)}")
    return Outcome(True, f"resynced {host} ({', '.join(names)}) from "
                         f"{reports[0].source if reports else 'nobody'}")


def switchover(env: Env, cluster: Cluster, *, to: str, expected_epoch: int, reason: str,
               kind: str = "switchover") -> Outcome:
    """Planned: demote the primary, final sync from it, promote ``to``; nothing is lost."""
    with _lock(env, cluster) as lease:
        old = _check_epoch(env, cluster, expected_epoch)
        if to == old:
            raise StateError(f"{to} is already the primary of {cluster.name}")
        extra = _extravars(cluster, new_primary=to, old_primary=old, epoch=expected_epoch)
        demoted = _play(env, cluster, "demote", limit=old, extravars=extra,
                        why=f"{kind}: {reason}", lease=lease)
        if not demoted.ok:
            return _undo(env, cluster, old, expected_epoch,
                         f"{kind} to {to} aborted: demoting {old} failed: {demoted.summary}",
                         lease=lease)
        # A scheduled sync may be running: wait for it; then hold every set until the
        # new primary is in place, so no sync from the old one runs after the promotion.
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(_set_locks(env, cluster, wait_s=SYNC_TIMEOUT_S,
                                              why=f"{kind} to {to}"))
                reports = sync_sets(env, cluster, source=old, epoch=expected_epoch,
                                    locked=True)
            except CrError as exc:
                return _undo(env, cluster, old, expected_epoch,
                             f"{kind} to {to} aborted: the final sync failed: {exc}",
                             lease=lease)
            return _promote_planned(env, cluster, old=old, to=to, reports=reports,
                                    expected_epoch=expected_epoch, reason=reason, kind=kind,
                                    lease=lease)


def _promote_planned(env: Env, cluster: Cluster, *, old: str, to: str, reports: list,
                     expected_epoch: int, reason: str, kind: str, lease=None) -> Outcome:
    """After the final sync: check it reached ``to``, take the new epoch, move."""
    failed = [r for r in reports if not any(t.host == to and t.ok for t in r.targets)]
    if failed:
        return _undo(env, cluster, old, expected_epoch,
                     f"{kind} to {to} aborted: the final sync of "
                     f"{', '.join(r.replica_set for r in failed)} to {to} failed", lease=lease)
    now = env.clock()
    epoch = env.state.promote(
        cluster=cluster.name, new_primary=to, expected_epoch=expected_epoch, now=now,
        change={"kind": kind, "playbook": "switchover", "old_primary": old,
                "old_primary_down": False, "reason": reason})
    env.state.append_event(cluster=cluster.name, kind=EventKind.PROMOTION, at=now, data={
        "kind": kind, "new_primary": to, "old_primary": old, "epoch": epoch,
        "reason": reason})
    # The whole move at the new epoch: the old primary is demoted already (idempotent
    # here) and the new one is promoted and takes the clients (shared IP / DNS).
    promoted = _move(env, cluster, "switchover", new_primary=to, old_primary=old, epoch=epoch,
                     why=f"{kind}: {reason}", lease=lease)
    if not promoted.ok:
        return Outcome(False, f"{to} is primary of {cluster.name} at epoch {epoch} but "
                              f"promoting it failed: {promoted.summary}", epoch=epoch)
    return Outcome(True, f"{kind} of {cluster.name} from {old} to {to} done (epoch {epoch}); "
                         "final sync complete, no write lost", epoch=epoch)


def _undo(env: Env, cluster: Cluster, old: str, epoch: int, why: str, lease=None) -> Outcome:
    """A planned change failed half-way: start the old primary again, same epoch, and
    give it back the shared IP its demotion released."""
    extravars = _extravars(cluster, new_primary=old, old_primary=None, epoch=epoch)
    restored = _play(env, cluster, "promote", limit=old, why=why, extravars=extravars,
                     lease=lease)
    if restored.ok and cluster.switch.shared_ip is not None:
        restored = _play(env, cluster, "switch_ip", limit=None, why=why, extravars=extravars,
                         lease=lease)
    tail = f"{old} serving again" if restored.ok else \
        f"and restarting {old} failed too: {restored.summary}"
    env.state.append_event(cluster=cluster.name, kind=EventKind.ABORTED, at=env.clock(),
                           data={"reason": f"{why}; {tail}", "epoch": epoch})
    return Outcome(False, f"{why}; {tail}", epoch=epoch)


def flow_budget_s() -> float:
    """The longest a flow may take (what the Celery soft limit allows)."""
    return float(SOFT_TIME_LIMIT_S)
