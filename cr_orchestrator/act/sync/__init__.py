"""Replication: VSS + robocopy on Windows, rsync on Linux, direction following the primary.

Public API::

    sync_replica_set(*, topology, cluster, replica_set, source, epoch, store,
                     now=time.time, on_progress=None) -> SyncReport
    FreshnessStore(redis, prefix="cr").freshness(cluster, set_name) -> dict[str, Freshness]

See docs/replication.md.
"""

from cr_orchestrator.act.sync.engine import sync_replica_set
from cr_orchestrator.state.freshness import Freshness, FreshnessStore, TargetPathLock, retry_delay_s
from cr_orchestrator.act.sync.plan import SyncReport, TargetResult, plan_sync, set_members

__all__ = [
    "Freshness",
    "FreshnessStore",
    "SyncReport",
    "TargetPathLock",
    "TargetResult",
    "plan_sync",
    "retry_delay_s",
    "set_members",
    "sync_replica_set",
]
