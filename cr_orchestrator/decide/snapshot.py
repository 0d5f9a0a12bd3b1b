"""Pure glue: the detector's assessment + Redis state + freshness → a ClusterSnapshot.

No I/O: the flows read Redis and the stores, this module only reshapes values, so what
``decide`` sees can be pinned by unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from cr_orchestrator.decide.detector import Assessment, HostAssessment
from cr_orchestrator.decide.rules import ClusterSnapshot, Interrupted, LeaseGrant, MemberState
from cr_orchestrator.observe.health import ORCHESTRATOR, Liveness, Observation
from cr_orchestrator.state.host_records import HostRecord, parse_record
from cr_orchestrator.model import Cluster


def latest_records(*, cluster: str, observations: list[Observation],
                   windows_hosts: frozenset[str] = frozenset()) -> dict[str, HostRecord]:
    """Each host's epoch and role records from its newest host probe that read them for
    ``cluster``. A host in several clusters has a probe per cluster in its window, each
    with that cluster's records (named in ``records["cluster"]``; not named: this
    cluster's, as a round alone stored them before the name was added)."""
    newest: dict[str, Observation] = {}
    for o in observations:
        if o.subject == "host" and o.vantage == ORCHESTRATOR and "records" in o.detail \
                and _records_of(o) in (None, cluster) \
                and (o.host not in newest or o.at > newest[o.host].at):
            newest[o.host] = o
    out = {}
    for host, o in newest.items():
        raw = o.detail["records"] if isinstance(o.detail["records"], dict) else {}
        out[host] = parse_record(host=host, cluster=cluster, epoch_text=raw.get("epoch"),
                                 role_text=raw.get("role"), windows=host in windows_hosts)
    return out


def _records_of(observation: Observation) -> object:
    records = observation.detail["records"]
    return records.get("cluster") if isinstance(records, dict) else None


def interrupted_change(change: Mapping[str, Any] | None) -> Interrupted | None:
    """The journaled change (``ClusterState.change``) as ``decide`` reads it.

    ``change`` is the JSON object read from Redis (``Any``: its values are converted
    here, as ``ClusterState.change`` checked only kind, new_primary and epoch)."""
    if not change:
        return None
    return Interrupted(kind=str(change["kind"]), new_primary=str(change["new_primary"]),
                       epoch=int(change["epoch"]), at=float(change.get("at") or 0.0),
                       old_primary=change.get("old_primary"),
                       step=str(change["step"]) if change.get("step") else None)


def member_lags(*, cluster: Cluster, per_set: Mapping[str, Mapping[str, object]],
                primary: str) -> dict[str, float | None]:
    """Worst lag of each member over the cluster's replica sets (None: never synced).

    ``per_set`` maps set name → host → a record with ``lag_s`` (FreshnessStore records).
    The live primary is the source, so its lag is 0.
    """
    lags: dict[str, float | None] = {}
    for member in cluster.hosts():
        if member == primary:
            lags[member] = 0.0
            continue
        worst, never_synced = 0.0, False
        for rs in cluster.replica_sets:
            record = per_set.get(rs.name, {}).get(member)
            # duck-typed: any record with a ``lag_s`` (state.freshness.Freshness)
            lag: float | None = getattr(record, "lag_s", None) if record is not None else None
            if lag is None:
                never_synced = True
                break
            worst = max(worst, float(lag))
        lags[member] = worst if cluster.replica_sets and not never_synced else None
    return lags


def build_snapshot(*, cluster: Cluster, assessment: Assessment | None, primary: str | None,
                   epoch: int, paused: bool, lags: Mapping[str, float | None], restart_attempts: int,
                   recent_failovers: tuple[float, ...], failback_in_sync_since: float | None,
                   now: float, records: Mapping[str, HostRecord] | None = None,
                   seeded: bool = False, interrupted: Interrupted | None = None,
                   quorum: bool | None = None,
                   lease: LeaseGrant | None = None) -> ClusterSnapshot:
    """The frozen picture ``decide`` reads (``assessment``: the detector's; None: no
    verdicts, every member UNKNOWN)."""
    members: list[MemberState] = []
    for m in cluster.members:
        view = assessment.hosts.get(m.host) if assessment is not None else None
        if view is None:
            members.append(MemberState(m.host, m.role, m.priority, lag_s=lags.get(m.host),
                                       record=(records or {}).get(m.host)))
            continue
        machine, service = view.machine, view.service
        # The verdict that explains a failure: the host's if it is down, else the service's.
        failing = machine if machine.liveness is not Liveness.UP else service
        members.append(MemberState(
            host=m.host, role=m.role, priority=m.priority,
            host_liveness=machine.liveness, service_liveness=service.liveness,
            confirmed=failing.confirmed, failures=failing.failures, vantages=failing.vantages,
            lag_s=lags.get(m.host),
            up_rounds=max((v.successes for v in machine.views), default=0),
            # the host itself (a service view that lags, e.g. right after a promotion,
            # is no sign of a cut-off orchestrator)
            observer_cut_off=machine.observer_cut_off,
            record=(records or {}).get(m.host),
            **_via_shared_ip(view),
        ))
    return ClusterSnapshot(
        cluster=cluster.name, members=tuple(members), primary=primary, epoch=epoch, now=now,
        paused=paused,
        observer_isolated=bool(assessment.observer_isolated) if assessment else False,
        replicated=bool(cluster.replica_sets), restart_attempts=restart_attempts,
        recent_failovers=tuple(recent_failovers),
        failback_in_sync_since=failback_in_sync_since,
        shared_ip=cluster.switch.shared_ip.ip if cluster.switch.shared_ip else None,
        seeded=seeded, interrupted=interrupted, quorum=quorum, lease=lease,
    )


class _ViaSharedIp(TypedDict, total=False):
    """The :class:`MemberState` fields on what clients see (absent: no shared-IP check)."""

    via_shared_ip: Liveness
    via_shared_ip_failures: int


def _via_shared_ip(view: HostAssessment) -> _ViaSharedIp:
    via = view.via_shared_ip
    if via is None:
        return {}
    return {"via_shared_ip": via.liveness, "via_shared_ip_failures": via.failures}
