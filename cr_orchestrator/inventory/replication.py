"""Replica sets (``cr_replica_sets``) and the path rules that keep them apart."""

from __future__ import annotations

import ntpath
import posixpath
import re
from dataclasses import dataclass

from cr_orchestrator.inventory.clusters import ClusterVars
from cr_orchestrator.inventory.values import (
    Problems,
    Where,
    as_bool,
    as_duration,
    as_int,
    as_list,
    as_mapping,
    as_str,
    check_keys,
)
from cr_orchestrator.model import RECONCILE_POLICIES, Member, Platform, ReplicaSet, ReplicaTarget, Role

REPLICA_SET_KEYS = ("name", "path", "targets", "every", "vss", "excludes",
                    "bandwidth_limit_kbps", "checksum", "reconcile", "continuous", "batch")
TARGET_KEYS = ("host", "path")
DEFAULT_EVERY = "60s"
DEFAULT_BATCH = "500ms"
MAX_BATCH_S = 10.0  # longer than this is the periodic mode with extra steps
_WINDOWS_ABSOLUTE = re.compile(r"^([A-Za-z]:[\\/]|\\\\[^\\/]+[\\/][^\\/]+)")


def normalize_path(path: str, platform: Platform) -> str:
    """A comparable form: Windows paths case-insensitive with either slash; no trailing one."""
    if platform is Platform.WINDOWS:
        norm = ntpath.normpath(path.replace("/", "\\")).casefold()
        return norm if re.fullmatch(r"[a-z]:\\", norm) else norm.rstrip("\\")
    norm = posixpath.normpath(path)
    return "/" if norm in ("/", "//") else norm.rstrip("/")


def paths_overlap(a: str, b: str, platform: Platform) -> str | None:
    """``'is the same as'``, ``'is inside'`` (a in b), ``'contains'`` (b in a) or ``None``."""
    sep = "\\" if platform is Platform.WINDOWS else "/"
    na, nb = normalize_path(a, platform), normalize_path(b, platform)
    if na == nb:
        return "is the same as"
    if na.startswith(nb.rstrip(sep) + sep):
        return "is inside"
    if nb.startswith(na.rstrip(sep) + sep):
        return "contains"
    return None


def is_absolute(path: str, platform: Platform) -> bool:
    if platform is Platform.WINDOWS:
        return bool(_WINDOWS_ABSOLUTE.match(path))
    return path.startswith("/")


@dataclass(frozen=True)
class Location:
    """Where one replica set's data lives on one host, for the cross-cluster path rule."""

    host: str
    path: str
    cluster: str
    replica_set: str
    where: Where
    var: str


def build_replica_sets(
    p: Problems, cv: ClusterVars, *, cluster: str, members: tuple[Member, ...],
    platforms: dict[str, Platform], inventory_hosts: set[str],
) -> tuple[tuple[ReplicaSet, ...], list[Location]] | None:
    """Replica sets of one cluster and the locations their data occupies on each host."""
    raw = cv.merged.get("cr_replica_sets", [])
    w = cv.where("cr_replica_sets")
    entries = as_list(p, w, "cr_replica_sets", raw if raw is not None else [])
    if entries is None:
        return None
    before = len(p.errors)
    sets, locations, names = [], [], set()
    for i, entry in enumerate(entries):
        built = _replica_set(p, w, f"cr_replica_sets[{i}]", entry, cluster=cluster,
                             members=members, platforms=platforms, inventory_hosts=inventory_hosts)
        if built is None:
            continue
        rset, locs = built
        if rset.name in names:
            p.error(w, f"cr_replica_sets[{i}].name", f"replica set {rset.name!r} is listed twice")
        names.add(rset.name)
        sets.append(rset)
        locations.extend(locs)
    return (tuple(sets), locations) if len(p.errors) == before else None


def _replica_set(p: Problems, w: Where, var: str, entry: object, *, cluster: str,
                 members: tuple[Member, ...], platforms: dict[str, Platform],
                 inventory_hosts: set[str]):
    entry = as_mapping(p, w, var, entry)
    if entry is None:
        return None
    check_keys(p, w, var, entry, REPLICA_SET_KEYS)
    before = len(p.errors)
    name = as_str(p, w, f"{var}.name", entry.get("name"))
    primary = next(m.host for m in members if m.role is Role.PRIMARY)
    path = _path(p, w, f"{var}.path", entry.get("path"), platforms.get(primary), primary)
    every = as_duration(p, w, f"{var}.every", entry.get("every", DEFAULT_EVERY))
    vss = as_bool(p, w, f"{var}.vss", entry.get("vss", False))
    linux_members = [m.host for m in members if platforms.get(m.host) is Platform.LINUX]
    if vss and linux_members:
        p.error(w, f"{var}.vss", f"VSS snapshots need Windows members, but {', '.join(linux_members)} "
                "is linux (no ansible_connection: winrm; set it or cr_platform: windows)")
    checksum = as_bool(p, w, f"{var}.checksum", entry.get("checksum", False))
    limit = None
    if entry.get("bandwidth_limit_kbps") is not None:
        limit = as_int(p, w, f"{var}.bandwidth_limit_kbps", entry["bandwidth_limit_kbps"], minimum=1)
    raw_excludes = as_list(p, w, f"{var}.excludes", entry.get("excludes", [])) or []
    excludes = tuple(as_str(p, w, f"{var}.excludes[{j}]", x) or "" for j, x in enumerate(raw_excludes))
    reconcile = _reconcile(p, w, f"{var}.reconcile", entry.get("reconcile", "quarantine"))
    windows_members = [m.host for m in members if platforms.get(m.host) is Platform.WINDOWS]
    if reconcile == "maildir" and windows_members:
        p.error(w, f"{var}.reconcile", f"'maildir' merges on Linux only (the robocopy path has "
                f"no fenced receiving side yet), but {', '.join(windows_members)} is windows: "
                "use 'quarantine'")
    continuous = as_bool(p, w, f"{var}.continuous", entry.get("continuous", False))
    batch = _batch(p, w, f"{var}.batch", entry, every=every, continuous=continuous)
    targets = _targets(p, w, var, entry, default_path=path, members=members, platforms=platforms,
                       inventory_hosts=inventory_hosts)
    if len(p.errors) > before or targets is None:
        return None
    rset = ReplicaSet(name=name, path=path, targets=tuple(t for t, _ in targets), every_s=every,
                      vss=vss, excludes=excludes, bandwidth_limit_kbps=limit, checksum=checksum,
                      reconcile=reconcile or "quarantine", continuous=bool(continuous),
                      batch_s=batch if batch is not None else 0.5)
    locations = [Location(primary, path, cluster, name, w, f"{var}.path")]
    locations += [Location(t.host, t.path, cluster, name, w, tvar) for t, tvar in targets]
    return rset, locations


def _batch(p: Problems, w: Where, var: str, entry: dict, *, every: float | None,
           continuous: bool | None) -> float | None:
    """How long the watcher gathers changes before sending them: more than 0, at most
    :data:`MAX_BATCH_S` and shorter than ``every``; meaningless without ``continuous``."""
    if "batch" in entry and not continuous:
        p.error(w, var, "only applies with continuous: true (the periodic mode copies "
                "everything at every)")
        return None
    batch = as_duration(p, w, var, entry.get("batch", DEFAULT_BATCH))
    if batch is None:
        return None
    if batch <= 0 or batch > MAX_BATCH_S:
        p.error(w, var, f"must be more than 0 and at most {MAX_BATCH_S:.0f}s, got {batch:g}s")
        return None
    if every is not None and batch >= every:
        p.error(w, var, f"{batch:g}s is not shorter than every ({every:g}s): the periodic "
                "full pass would send the changes first")
        return None
    return batch


def _reconcile(p: Problems, w: Where, var: str, value: object) -> str | None:
    """One of RECONCILE_POLICIES: a typo must not silently fall back to another policy."""
    policy = as_str(p, w, var, value)
    if policy is not None and policy not in RECONCILE_POLICIES:
        p.error(w, var, f"{policy!r} is not a reconcile policy (one of: "
                f"{', '.join(RECONCILE_POLICIES)})")
        return None
    return policy


def _path(p: Problems, w: Where, var: str, value: object, platform: Platform | None,
          host: str) -> str | None:
    path = as_str(p, w, var, value)
    if path is not None and platform is not None and not is_absolute(path, platform):
        if platform is Platform.LINUX and is_absolute(path, Platform.WINDOWS):
            p.error(w, var, f"{path!r} is a Windows path but host {host!r} is linux (no "
                    "ansible_connection: winrm): is it missing its Windows connection settings?")
            return None
        example = "C:\\Data" if platform is Platform.WINDOWS else "/srv/data"
        p.error(w, var, f"{path!r} is not an absolute {platform.value} path on host {host!r} "
                f"(e.g. {example})")
        return None
    return path


def _targets(p: Problems, w: Where, var: str, entry: dict, *, default_path: str | None,
             members: tuple[Member, ...], platforms: dict[str, Platform],
             inventory_hosts: set[str]):
    member_hosts = {m.host for m in members}
    primary = next(m.host for m in members if m.role is Role.PRIMARY)
    if "targets" not in entry:  # default: every other member, at the same path
        return [(ReplicaTarget(m.host, default_path or ""), f"{var}.path")
                for m in members if m.role is not Role.PRIMARY]
    raw_targets = as_list(p, w, f"{var}.targets", entry["targets"])
    if raw_targets is None:
        return None
    if not raw_targets:
        p.error(w, f"{var}.targets", "is empty: name at least one target host")
    result, seen = [], set()
    for j, raw in enumerate(raw_targets):
        tvar = f"{var}.targets[{j}]"
        raw = {"host": raw} if isinstance(raw, str) else as_mapping(p, w, tvar, raw)
        if raw is None:
            continue
        check_keys(p, w, tvar, raw, TARGET_KEYS)
        host = as_str(p, w, f"{tvar}.host", raw.get("host"))
        if host is None:
            continue
        if host not in inventory_hosts:
            p.error(w, f"{tvar}.host", f"no host {host!r} in the inventory")
            continue
        if host not in member_hosts:
            p.error(w, f"{tvar}.host", f"target {host!r} is not a member of this cluster "
                    "(add it to cr_members, e.g. with role replica)")
            continue
        if host == primary:
            p.error(w, f"{tvar}.host", f"target {host!r} is the primary itself")
            continue
        if host in seen:
            p.error(w, f"{tvar}.host", f"target {host!r} is listed twice")
        seen.add(host)
        has_path = "path" in raw
        path = _path(p, w, f"{tvar}.path", raw.get("path", default_path), platforms.get(host), host)
        if path is not None:
            result.append((ReplicaTarget(host, path), f"{tvar}.path" if has_path else f"{var}.path"))
    return result
