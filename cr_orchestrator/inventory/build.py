"""``build_topology``: exported inventory data in, a validated :class:`Topology` out (pure)."""

from __future__ import annotations

from cr_orchestrator.errors import ConfigError
from cr_orchestrator.inventory.addresses import check_address_plan
from cr_orchestrator.inventory.clusters import (
    CLUSTER_KEYS,
    ClusterVars,
    build_members,
    build_policy,
    build_services,
    build_switch,
    cluster_name,
)
from cr_orchestrator.inventory.crosscheck import (
    check_locations,
    check_policy_fits,
    check_replica_coverage,
    check_shared_hosts,
    check_sites,
)
from cr_orchestrator.inventory.hosts import HOST_KEYS, HostVars, build_host
from cr_orchestrator.inventory.notify import build_notify
from cr_orchestrator.inventory.raw import RawInventory
from cr_orchestrator.inventory.replication import Location, build_replica_sets
from cr_orchestrator.inventory.values import Locate, Problems, Where, unknown_message
from cr_orchestrator.model import Cluster, Host, Platform, Topology

# Cluster variables a parent group may set for all its cluster groups (shared defaults).
INHERITABLE_KEYS = ("cr_policy", "cr_failback", "cr_notify")


def build_topology(exported: dict, *, source: str, locate: Locate | None = None,
                   role_variables: frozenset[str] = frozenset()) -> Topology:
    """Validate the JSON of ``ansible-inventory --list --export`` into a :class:`Topology`.

    ``locate(kind, name, variable)`` names the file that defines a variable of a group or
    host (default: ``source``). Inline ``!vault`` values are expected already decrypted
    into :class:`~cr_orchestrator.model.Secret` (undecrypted ones are reported if used).
    ``role_variables`` are further ``cr_*`` names an inventory may set: our roles' public
    defaults (e.g. ``cr_service_timeout``). Raises :class:`ConfigError` listing every
    problem; warnings go to ``Topology.warnings``.
    """
    raw = RawInventory.from_export(exported)
    p = Problems(locate=locate or (lambda kind, name, var: source))
    cluster_groups = sorted(g.name for g in raw.groups.values() if "cr_cluster" in g.vars)
    check_variable_names(p, raw, cluster_groups, role_variables=role_variables)
    if not cluster_groups:
        p.error(Where("group", "all"), "cr_cluster",
                "no cluster defined: set cr_cluster in the vars of one group per cluster")
    inventory_hosts = set(raw.host_vars)
    cvs = [_cluster_vars(raw, g) for g in cluster_groups]
    hosts: dict[str, Host] = {}
    for name in sorted(_hosts_needed(raw, cvs, inventory_hosts)):
        host = build_host(p, HostVars(name, *raw.merged_host_vars(name)))
        if host is not None:
            hosts[name] = host
    clusters: dict[str, Cluster] = {}
    built: list[tuple[Cluster, ClusterVars]] = []
    locations: list[Location] = []
    for cv in cvs:
        result = build_cluster(p, cv, raw=raw, inventory_hosts=inventory_hosts, hosts=hosts)
        if result is None:
            continue
        cluster, locs = result
        if cluster.name in clusters:
            p.error(cv.where("cr_cluster"), "cr_cluster", f"cluster name {cluster.name!r} is "
                    f"already used by group {clusters[cluster.name].group!r}")
            continue
        clusters[cluster.name] = cluster
        built.append((cluster, cv))
        locations.extend(locs)
    check_locations(p, locations, hosts)
    check_shared_hosts(p, built, hosts)
    origins = {name: raw.merged_host_vars(name)[1] for name in hosts}
    check_address_plan(p, hosts, origins, built)
    if p.errors:
        raise ConfigError(p.errors)
    return Topology(source=source, hosts=hosts, clusters=clusters, warnings=tuple(p.warnings))


def build_cluster(p: Problems, cv: ClusterVars, *, raw: RawInventory, inventory_hosts: set[str],
                  hosts: dict[str, Host]) -> tuple[Cluster, list[Location]] | None:
    """One cluster from its group's variables, with its per-cluster checks."""
    before = len(p.errors)
    name = cluster_name(p, cv)
    members = build_members(p, cv, group_hosts=raw.hosts_of(cv.group), inventory_hosts=inventory_hosts)
    platforms = {h: hosts[h].platform for h in hosts}
    linux_only = members is not None and all(platforms.get(m.host) is Platform.LINUX for m in members)
    services = build_services(p, cv, linux_only=linux_only)
    switch = build_switch(p, cv)
    policy = build_policy(p, cv)
    notify = build_notify(p, cv.where("cr_notify"), cv.merged["cr_notify"]) \
        if "cr_notify" in cv.merged else None
    replication = None
    if members is not None and name is not None:
        replication = build_replica_sets(p, cv, cluster=name, members=members, platforms=platforms,
                                         inventory_hosts=inventory_hosts)
    if len(p.errors) > before or None in (name, members, services, switch, policy, replication):
        return None
    replica_sets, locations = replication
    cluster = Cluster(name=name, group=cv.group, members=members, services=services, switch=switch,
                      replica_sets=replica_sets, policy=policy, notify=notify)
    if all(m.host in hosts for m in members):
        check_sites(p, cluster, cv, hosts)
    check_replica_coverage(p, cluster, cv)
    check_policy_fits(p, cluster, cv)
    return cluster, locations


def check_variable_names(p: Problems, raw: RawInventory, cluster_groups: list[str], *,
                         role_variables: frozenset[str] = frozenset()) -> None:
    """Every ``cr_*`` variable is known and set where it takes effect."""
    known = [*HOST_KEYS, *CLUSTER_KEYS, *sorted(role_variables)]
    parents_of_clusters = set()
    for g in cluster_groups:
        parents_of_clusters |= raw.ancestors(g)
    for group in sorted(raw.groups.values(), key=lambda g: g.name):
        w = Where("group", group.name)
        for key in group.vars:
            if not str(key).startswith("cr_") or key in HOST_KEYS or key in role_variables:
                continue
            if key not in CLUSTER_KEYS:
                p.error(w, key, unknown_message(key, known))
            elif group.name in cluster_groups:
                continue
            elif key in INHERITABLE_KEYS and group.name in parents_of_clusters:
                continue
            else:
                where_ok = ("a cluster group or a parent of one" if key in INHERITABLE_KEYS
                            else "the vars of the group that sets cr_cluster")
                p.error(w, key, f"cluster variable in group {group.name!r}, which defines no "
                        f"cluster: it has no effect here; set it in {where_ok}")
    for host, variables in sorted(raw.host_vars.items()):
        for key in variables:
            if not str(key).startswith("cr_") or key in HOST_KEYS or key in role_variables:
                continue
            if key in CLUSTER_KEYS:
                p.error(Where("host", host), key, "is a cluster variable: set it in the vars of "
                        "the cluster's group, not on a host")
            else:
                p.error(Where("host", host), key, unknown_message(key, known))


def _cluster_vars(raw: RawInventory, group: str) -> ClusterVars:
    merged, origin = raw.merged_group_vars(group)
    for key in list(merged):
        if origin[key].name != group and key not in INHERITABLE_KEYS:
            del merged[key], origin[key]  # not inherited (reported by check_variable_names)
    return ClusterVars(group, merged, origin)


def _hosts_needed(raw: RawInventory, cvs: list[ClusterVars], inventory_hosts: set[str]) -> set[str]:
    """Hosts that take part in a cluster: those of cluster groups and those named as members."""
    needed: set[str] = set()
    for cv in cvs:
        needed |= raw.hosts_of(cv.group)
        members = cv.merged.get("cr_members")
        if isinstance(members, dict):
            needed |= set(members) & inventory_hosts
    return needed
