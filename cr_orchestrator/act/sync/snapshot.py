"""Point-in-time source for a Linux sync: btrfs or LVM snapshot command generation.

The Linux counterpart of VSS: take a read-only snapshot of the volume holding the set's
path, rsync from the snapshot to every target, then remove it. The commands are
generated here and tested as text; **no btrfs or LVM volume exists on the build
machine, so they have not been run here** (see docs/replication.md).

A snapshot is opt-in per run (``sync_replica_set(..., linux_snapshot=SnapshotSpec(...))``):
the inventory has no key for it yet.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass

from cr_orchestrator.errors import ConfigError


@dataclass(frozen=True)
class SnapshotSpec:
    """``kind`` btrfs: ``volume`` is the subvolume holding the path (e.g. ``/srv``).

    ``kind`` lvm: ``volume`` is ``VG/LV`` mounted at ``mountpoint``; ``size`` is the
    copy-on-write space (``lvcreate -L``); ``xfs`` adds ``nouuid`` to the mount.
    """

    kind: str  # btrfs | lvm
    volume: str
    mountpoint: str | None = None
    size: str = "1G"
    xfs: bool = False


@dataclass(frozen=True)
class SnapshotCommands:
    create: str  # shell text: prints nothing on success, exits non-zero on failure
    remove: str  # shell text, idempotent (safe after a partial create)
    source_root: str  # where the set's path appears inside the snapshot


def _relative(path: str, root: str, *, what: str) -> str:
    path, root = posixpath.normpath(path), posixpath.normpath(root)
    if path != root and not path.startswith(root.rstrip("/") + "/"):
        raise ConfigError(f"{what}: path {path} is not inside the snapshotted volume {root}")
    return posixpath.relpath(path, root)


def snapshot_commands(spec: SnapshotSpec, *, path: str, run_id: str) -> SnapshotCommands:
    """Create/remove commands for a snapshot of the volume holding ``path``."""
    if spec.kind == "btrfs":
        snap = posixpath.join(spec.volume, f".cr-snapshot-{run_id}")
        rel = _relative(path, spec.volume, what="btrfs snapshot")
        q = shlex.quote
        return SnapshotCommands(
            create=f"btrfs subvolume snapshot -r {q(spec.volume)} {q(snap)}",
            remove=f"if [ -d {q(snap)} ]; then btrfs subvolume delete {q(snap)}; fi",
            source_root=posixpath.normpath(posixpath.join(snap, rel)),
        )
    if spec.kind == "lvm":
        if not spec.mountpoint or "/" not in spec.volume:
            raise ConfigError("lvm snapshot needs volume 'VG/LV' and the LV's mountpoint")
        vg, _, _lv = spec.volume.partition("/")
        snap_lv = f"cr-snap-{run_id}"
        mnt = f"/run/cr-orchestrator/snapshots/{run_id}"
        rel = _relative(path, spec.mountpoint, what="lvm snapshot")
        options = "ro,nouuid" if spec.xfs else "ro"
        q = shlex.quote
        device = f"/dev/{vg}/{snap_lv}"
        return SnapshotCommands(
            create=(f"lvcreate --snapshot --name {q(snap_lv)} --size {q(spec.size)} "
                    f"{q(spec.volume)} && mkdir -p {q(mnt)} && "
                    f"mount -o {options} {q(device)} {q(mnt)}"),
            remove=(f"if mountpoint -q {q(mnt)}; then umount {q(mnt)}; fi; "
                    f"rmdir {q(mnt)} 2>/dev/null; "
                    f"if lvs {q(f'{vg}/{snap_lv}')} >/dev/null 2>&1; then "
                    f"lvremove -f {q(f'{vg}/{snap_lv}')}; fi"),
            source_root=posixpath.normpath(posixpath.join(mnt, rel)),
        )
    raise ConfigError(f"snapshot kind {spec.kind!r} is not btrfs or lvm")
