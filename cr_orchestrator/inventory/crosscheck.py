"""Rules that look at more than one variable: sites, replica coverage, clashes across clusters.

The cross-cluster rules, in words:

- Two replica sets (of any clusters) may not keep their data at the same or nested paths on
  one host: a mirror copy into one would delete or overwrite the other's files. Windows
  paths compare case-insensitively, with either slash.
- A host may be a member of several clusters (a shared DR host, N:1), but no two clusters
  may control the same service on it (same name, case-insensitive on Windows), own the same
  shared IP address, or switch the same DNS record: they would fight over it.
"""

from __future__ import annotations

import ipaddress

from cr_orchestrator.inventory.clusters import ClusterVars
from cr_orchestrator.inventory.replication import Location, paths_overlap
from cr_orchestrator.inventory.values import Problems
from cr_orchestrator.model import Cluster, Host, Platform, Role


def check_locations(p: Problems, locations: list[Location], hosts: dict[str, Host]) -> None:
    """No two replica sets write to the same or nested paths on one host."""
    for i, a in enumerate(locations):
        for b in locations[:i]:
            if a.host != b.host or (a.cluster, a.replica_set) == (b.cluster, b.replica_set):
                continue
            host = hosts.get(a.host)
            platform = host.platform if host else Platform.LINUX
            relation = paths_overlap(a.path, b.path, platform)
            if relation:
                p.error(a.where, a.var, (
                    f"on host {a.host!r}, {a.path!r} (replica set {a.replica_set!r} of cluster "
                    f"{a.cluster!r}) {relation} {b.path!r} (replica set {b.replica_set!r} of "
                    f"cluster {b.cluster!r}): each replica set needs its own directory"))


def check_shared_hosts(p: Problems, clusters: list[tuple[Cluster, ClusterVars]],
                       hosts: dict[str, Host]) -> None:
    """No two clusters control the same service, shared IP or DNS record."""
    services: dict[tuple[str, str], str] = {}
    addresses: dict[str, str] = {}
    records: dict[tuple[str, str], str] = {}
    for cluster, cv in clusters:
        for member in cluster.members:
            host = hosts.get(member.host)
            windows = host is not None and host.platform is Platform.WINDOWS
            for i, service in enumerate(cluster.services):
                key = (member.host, service.name.casefold() if windows else service.name)
                other = services.setdefault(key, cluster.name)
                if other != cluster.name:
                    p.error(cv.where("cr_services"), f"cr_services[{i}].name", (
                        f"service {service.name!r} on host {member.host!r} is already controlled "
                        f"by cluster {other!r}: one service on one host belongs to one cluster"))
        shared_ip = cluster.switch.shared_ip
        if shared_ip is not None:
            other = addresses.setdefault(shared_ip.ip, cluster.name)
            if other != cluster.name:
                p.error(cv.where("cr_switch"), "cr_switch.shared_ip.address",
                        f"{shared_ip.ip} is already the shared IP of cluster {other!r}")
        dns = cluster.switch.dns
        if dns is not None:
            key = (dns.zone.rstrip(".").casefold(), dns.record.rstrip(".").casefold())
            other = records.setdefault(key, cluster.name)
            if other != cluster.name:
                p.error(cv.where("cr_switch"), "cr_switch.dns.record",
                        f"record {dns.record!r} in zone {dns.zone!r} is already switched by "
                        f"cluster {other!r}")


def check_sites(p: Problems, cluster: Cluster, cv: ClusterVars, hosts: dict[str, Host]) -> None:
    """Every member can be reached by clients after its promotion."""
    switch = cluster.switch
    sites = {m.host: hosts[m.host].site for m in cluster.members if m.host in hosts}
    site_list = ", ".join(sorted(set(sites.values())))
    w = cv.where("cr_switch")
    if switch.shared_ip is not None and switch.shared_ip.site is not None:
        if switch.shared_ip.site not in sites.values():
            p.error(w, "cr_switch.shared_ip.site", f"no member of cluster {cluster.name!r} is on "
                    f"site {switch.shared_ip.site!r} (member sites: {site_list})")
        elif switch.dns is None:
            for host, site in sorted(sites.items()):
                if site != switch.shared_ip.site:
                    p.error(w, "cr_switch", f"member {host!r} is on site {site!r}, where the shared "
                            f"IP (site {switch.shared_ip.site!r}) cannot follow it; add a dns switch")
    elif switch.shared_ip is not None and switch.dns is None and len(set(sites.values())) > 1:
        p.warn(w, "cr_switch.shared_ip", f"members are on several sites ({site_list}) but the "
               "shared IP has no site: it only moves within one network segment")
    if switch.dns is not None:
        for m in cluster.members:
            host = hosts.get(m.host)
            if host is not None and not _is_ip(host.service_address):
                p.error(w, "cr_switch.dns", f"member {m.host!r} has service address "
                        f"{host.service_address!r}, not an IP address the DNS record can point to "
                        "(set cr_service_address)")


def check_replica_coverage(p: Problems, cluster: Cluster, cv: ClusterVars) -> None:
    """A ``replica`` member must receive data; an untargeted secondary is worth a warning.

    A replica exists only to hold a copy: without a replica set targeting it, promoting it
    would start the service on no data, so that is an error. A secondary of a cluster with
    replica sets that does not receive one may be deliberate (stateless service), so warn.
    """
    targeted = {t.host for rs in cluster.replica_sets for t in rs.targets}
    for member in cluster.members:
        if member.host in targeted or member.role is Role.PRIMARY:
            continue
        if member.role is Role.REPLICA:
            p.error(cv.where("cr_members"), f"cr_members.{member.host}", (
                f"role replica, but no replica set of cluster {cluster.name!r} targets "
                f"{member.host!r}: it would hold no data (add cr_replica_sets or a target)"))
        elif cluster.replica_sets:
            p.warn(cv.where("cr_members"), f"cr_members.{member.host}", (
                f"secondary {member.host!r} is not a target of any replica set: it would be "
                "promoted without the data"))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_policy_fits(p: Problems, cluster: Cluster, cv: ClusterVars) -> None:
    """Policy values that would silently stop failover from ever happening.

    - ``required_vantages``: the primary is seen by the orchestrator and by each other
      member, so more vantages than members can never confirm it down.
    - ``max_replica_lag``: a replica is refused for promotion (and resynced) once older than
      this; a replica set synced less often is too stale part of the time. Only a warning:
      the decision engine resyncs a stale replica on its own, so the gap stays short.
    """
    policy = cluster.policy
    w = cv.where("cr_policy")
    if policy.required_vantages > len(cluster.members):
        p.error(w, "cr_policy.required_vantages", (
            f"{policy.required_vantages} vantages can never agree: cluster {cluster.name!r} has "
            f"{len(cluster.members)} members, so at most the orchestrator and "
            f"{len(cluster.members) - 1} peer(s) see the primary, and a failure would never be "
            "confirmed"))
    for i, rset in enumerate(cluster.replica_sets):
        # a continuous set's freshness follows its batches, not its full pass
        if rset.every_s >= policy.max_replica_lag_s and not rset.continuous:
            p.warn(cv.where("cr_replica_sets"), f"cr_replica_sets[{i}].every", (
                f"replica set {rset.name!r} syncs every {rset.every_s:g}s, not more often than "
                f"max_replica_lag ({policy.max_replica_lag_s:g}s): its copies become too stale "
                "to promote before each scheduled sync (the orchestrator then resyncs them "
                "early); sync more often or raise cr_policy.max_replica_lag"))
