"""What each host records about itself: the epoch fence and the role it took.

Redis can lose what it knows; a host keeps two small files per cluster in its fence
directory (written by roles/cr_fence, read back by the host probe every round):

- ``<cluster>.epoch``: the newest epoch of an order the host acted on. Never lowered.
  An order (playbook or sync) carrying an older epoch is refused there.
- ``<cluster>.role``: ``primary N`` or ``secondary N``: the role the host took at epoch
  N. Every change that makes a host serve (promotion, the one-script take-over, a
  restart in place, taking the shared IP or the DNS name) writes ``primary`` *before*
  the service starts; a demotion writes ``secondary`` before it stops.

So the hosts can always say who was promoted last, whatever Redis says: the decision
engine adopts the hosts' word when Redis is empty or behind, and a sync refuses to
delete what a host that claims the primary role holds (it quarantines it instead).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

FENCE_DIR_LINUX = "/var/lib/cr-orchestrator"  # roles/cr_fence: cr_fence_dir_linux
FENCE_DIR_WINDOWS = "C:\\ProgramData\\cr-orchestrator"  # roles/cr_fence: cr_fence_dir_windows
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_ROLE_LINE = re.compile(r"^(primary|secondary) ([0-9]+)$")


class HostRole(enum.StrEnum):
    PRIMARY = "primary"
    SECONDARY = "secondary"


def record_paths(cluster: str, *, windows: bool = False) -> tuple[str, str]:
    """(epoch file, role file) of ``cluster`` on a host."""
    if not _CLUSTER_NAME.match(cluster):
        raise ValueError(f"cluster name {cluster!r} cannot name a record file")
    if windows:
        return (f"{FENCE_DIR_WINDOWS}\\{cluster}.epoch", f"{FENCE_DIR_WINDOWS}\\{cluster}.role")
    return f"{FENCE_DIR_LINUX}/{cluster}.epoch", f"{FENCE_DIR_LINUX}/{cluster}.role"


@dataclass(frozen=True)
class HostRecord:
    """A host's records for one cluster, as its probe read them."""

    epoch: int | None  # None: no epoch record (never acted on an order)
    role: HostRole | None = None  # None: no role record
    role_epoch: int | None = None
    problem: str | None = None  # a record that cannot be read as one: never guessed at

    @property
    def claims_primary_at(self) -> int | None:
        """The epoch at which the host says it took the primary role, or None."""
        return self.role_epoch if self.role is HostRole.PRIMARY else None

    def describe(self) -> str:
        if self.problem:
            return self.problem
        epoch = "no epoch record" if self.epoch is None else f"epoch {self.epoch}"
        role = "" if self.role is None else f", {self.role.value} since epoch {self.role_epoch}"
        return epoch + role


def parse_record(*, host: str, cluster: str, epoch_text: str | None,
                 role_text: str | None, windows: bool = False) -> HostRecord:
    """Pure: the record a probe read (``None``: that file does not exist)."""
    epoch_file, role_file = record_paths(cluster, windows=windows)
    epoch = None
    if epoch_text is not None:
        text = epoch_text.strip()
        if not text.isdigit():
            return HostRecord(None, problem=f"the epoch record {epoch_file} on {host} holds "
                                            f"{text[:32]!r}, not a whole number")
        epoch = int(text)
    if role_text is None or not role_text.strip():
        return HostRecord(epoch)
    match = _ROLE_LINE.match(" ".join(role_text.split()))
    if match is None:
        return HostRecord(epoch, problem=f"the role record {role_file} on {host} holds "
                                         f"{role_text.strip()[:32]!r}, not 'primary N' or "
                                         "'secondary N'")
    return HostRecord(epoch, HostRole(match.group(1)), int(match.group(2)))
