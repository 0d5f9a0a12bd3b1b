"""Who copies what to whom (pure): direction follows the current primary.

The members of a replica set are the cluster's configured primary plus every target of
the set. A run's source is the *current* primary (from cluster state, passed in); its
targets are every other member, each at ``ReplicaSet.path_on(host)``. After a failover
the old primary becomes a target at its own path without any inventory change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cr_orchestrator.errors import SyncError
from cr_orchestrator.act.sync.merge import summarize_reasons
from cr_orchestrator.model import Platform, ReplicaSet, Topology
from cr_orchestrator.state.freshness import Freshness


@dataclass(frozen=True)
class TargetPlan:
    host: str
    path: str  # where the set's data lives on this host
    address: str  # the host's cluster address: replication goes over the cluster network
    platform: Platform


@dataclass(frozen=True)
class SyncPlan:
    cluster: str
    replica_set: ReplicaSet
    source: str
    source_path: str
    platform: Platform
    targets: tuple[TargetPlan, ...]
    configured_primary: str


@dataclass(frozen=True)
class TargetResult:
    """Outcome of one target of one run (bytes/files as the tool reported them)."""

    host: str
    ok: bool
    bytes: int | None
    files: int | None
    duration_s: float
    error: str | None
    quarantined: tuple[str, ...] = ()  # relative paths moved aside before the sync
    path: str = ""
    deleted: int | None = None
    detail: str = ""  # one sentence: exit code meaning, summary note
    quarantine_dir: str | None = None
    # what the target's fence kept aside instead of deleting or overwriting (rsync's
    # --backup-dir on the target: a host that served, or the first sync at an epoch)
    kept: int = 0
    kept_dir: str | None = None
    # Maildir reconcile (None: no merge ran): messages copied into the new primary, and
    # (quarantined file, reason) for those that stay in quarantine
    merged: int | None = None
    merge_left: tuple[tuple[str, str], ...] = ()
    merge_dirs: tuple[str, ...] = ()


@dataclass(frozen=True)
class SyncReport:
    cluster: str
    replica_set: str
    source: str
    epoch: int
    started_at: float
    ended_at: float
    targets: tuple[TargetResult, ...]
    problems: tuple[str, ...] = field(default=())  # e.g. a shadow that could not be deleted
    # a full pass of a continuous set: what it copied is what the watcher's events missed
    # (an overflowed queue, a restart) or had not sent yet (a batch still gathering)
    continuous: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.targets) and all(t.ok for t in self.targets) and not self.problems

    def events(self) -> list[dict]:
        """Event-log entries the caller appends: one per target, plus quarantines."""
        events = []
        for t in self.targets:
            events.append({
                "kind": "sync", "cluster": self.cluster, "replica_set": self.replica_set,
                "source": self.source, "target": t.host, "epoch": self.epoch, "ok": t.ok,
                "bytes": t.bytes, "files": t.files, "duration_s": round(t.duration_s, 3),
                "deleted": t.deleted, "quarantined": len(t.quarantined) + t.kept,
                "reason": t.error or t.detail or "synced",
            })
            if self.continuous and t.ok:
                events[-1]["missed_by_events"] = t.files
                events[-1]["reason"] = (f"full pass behind the watcher: {t.files or 0} file(s) "
                                        f"changed that the batches had not sent; {events[-1]['reason']}")
            if t.kept:
                events.append({
                    "kind": "sync.quarantine", "cluster": self.cluster,
                    "replica_set": self.replica_set, "host": t.host, "epoch": self.epoch,
                    "quarantine_dir": t.kept_dir, "files": t.kept,
                    "reason": (f"{t.kept} file(s) that the sync from {self.source} at epoch "
                               f"{self.epoch} deleted or overwrote on {t.host} were kept in "
                               f"{t.kept_dir} (the first sync at this epoch, or into a host "
                               "that served)"),
                })
            if t.quarantined:
                events.append({
                    "kind": "sync.quarantine", "cluster": self.cluster,
                    "replica_set": self.replica_set, "host": t.host, "epoch": self.epoch,
                    "quarantine_dir": t.quarantine_dir, "files": list(t.quarantined),
                    "reason": (f"{len(t.quarantined)} file(s) changed on {t.host} after its last "
                               f"good sync were moved to {t.quarantine_dir} before the resync "
                               f"from {self.source}"),
                })
            if t.merged is not None:
                events.append(self._merge_event(t))
        for problem in self.problems:
            events.append({"kind": "sync.problem", "cluster": self.cluster,
                           "replica_set": self.replica_set, "epoch": self.epoch,
                           "reason": problem})
        return events


    def _merge_event(self, t: TargetResult) -> dict:
        reasons = summarize_reasons(t.merge_left)
        why = "; ".join(f"{n}: {reason}" for reason, n in sorted(reasons.items()))
        return {
            "kind": "sync.merge", "cluster": self.cluster, "replica_set": self.replica_set,
            "host": t.host, "into": self.source, "epoch": self.epoch, "merged": t.merged,
            "left": len(t.merge_left), "left_reasons": reasons,
            "quarantine_dirs": list(t.merge_dirs),
            "reason": (f"{t.merged} message(s) that {t.host} took alone were merged into "
                       f"{self.source}'s Maildir; {len(t.merge_left)} left in quarantine"
                       + (f" ({why})" if why else "")),
        }


def set_members(*, topology: Topology, cluster: str, replica_set: str) -> tuple[str, ...]:
    """The configured primary, then the set's targets in inventory order (unique)."""
    c = topology.cluster(cluster)
    rs = find_set(topology=topology, cluster=cluster, replica_set=replica_set)
    members = [c.configured_primary]
    members += [t.host for t in rs.targets if t.host not in members]
    return tuple(members)


def find_set(*, topology: Topology, cluster: str, replica_set: str) -> ReplicaSet:
    c = topology.cluster(cluster)
    for rs in c.replica_sets:
        if rs.name == replica_set:
            return rs
    known = ", ".join(r.name for r in c.replica_sets) or "none"
    raise SyncError(f"cluster {cluster} has no replica set {replica_set!r} (known: {known})")


def plan_sync(*, topology: Topology, cluster: str, replica_set: str, source: str) -> SyncPlan:
    """Targets = every member of the set except ``source``; refuses a non-member source."""
    rs = find_set(topology=topology, cluster=cluster, replica_set=replica_set)
    members = set_members(topology=topology, cluster=cluster, replica_set=replica_set)
    if source not in members:
        raise SyncError(f"cannot sync {cluster}/{rs.name} from {source}: it is not a member "
                        f"of the set ({', '.join(members)})")
    platforms = {topology.hosts[h].platform for h in members}
    if len(platforms) != 1:
        raise SyncError(f"replica set {cluster}/{rs.name} mixes Windows and Linux members; "
                        "robocopy and rsync cannot replicate between them")
    targets = tuple(
        TargetPlan(host=h, path=rs.path_on(h), address=topology.hosts[h].cluster_address,
                   platform=topology.hosts[h].platform)
        for h in members if h != source
    )
    return SyncPlan(cluster=cluster, replica_set=rs, source=source,
                    source_path=rs.path_on(source), platform=platforms.pop(), targets=targets,
                    configured_primary=topology.cluster(cluster).configured_primary)


def reconcile_since(*, host: str, target_record: Freshness | None, source_run: float | None,
                    new_primary: str, new_primary_record: Freshness | None,
                    configured_primary: str) -> tuple[float | None, str]:
    """Must ``host``'s own changes be saved before a sync from ``new_primary`` overwrites
    it? (pure)

    Returns (threshold, reason): files on ``host`` modified at or after ``threshold`` that
    the sync would overwrite or delete go to quarantine; ``None``: nothing to save.
    ``host`` needs it when it was a *source* (``source_run``: start of its last run as
    source) more recently than a successful *target*. Its changes after the start of the
    last good sync from it into ``new_primary`` never reached ``new_primary``; with no
    such sync on record, every file that would change is kept (threshold 0).
    """
    last_in = target_record.last_success_started_at if target_record else None
    if source_run is not None and (last_in is None or source_run > last_in):
        np = new_primary_record
        if np is not None and np.last_success_source == host and np.last_success_started_at:
            since = np.last_success_started_at
            return since, (f"{host} was the source after its last good sync into it; its "
                           f"changes after the last good sync from it to {new_primary} "
                           f"(started {since:.0f}) never reached {new_primary}")
        return 0.0, (f"{host} was the source, and no good sync from it to {new_primary} is "
                     "recorded: every file that would change is kept")
    if source_run is None and last_in is None and host == configured_primary:
        return 0.0, (f"{host} is the configured primary and no sync from or to it was ever "
                     "recorded: every file that would change is kept")
    if source_run is None:
        return None, f"{host} was never the source of this set"
    return None, f"{host} received a good sync after it was last the source"
