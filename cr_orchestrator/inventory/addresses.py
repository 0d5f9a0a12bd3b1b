"""The address plan: every address of the inventory checked against the others.

The rules, in words (docs/inventory.md, "Address plan", says the same):

- One address belongs to one machine. Two hosts with the same management address
  (``ansible_host``), service address or cluster address are an error, except where
  something between us and the hosts can make it legitimate; then it is a warning:

  - management: legitimate behind a NAT gateway or jump host, which is reached at one
    address with a port (or ssh arguments) per host; so a warning when the two are reached
    at different ports or with different ssh arguments, an error when everything Ansible
    uses to connect is the same (one machine managed under two names);
  - service: an error when the two share a cluster (its probes and its client switch could
    not tell them apart) or a checked port (a probe of one would reach the other);
    otherwise a warning (a NAT forwarding each cluster's ports to its own host);
  - cluster: an error when the two share a cluster or a peer (replication and peer probes
    would reach the wrong one); otherwise a warning (separate cluster networks);
  - one host's address of one kind equal to another host's of another kind: an error,
    unless one of them is a management address (a NAT or jump host's), then a warning.

- A shared IP is an address no host owns: equal to any host's address is an error (a
  failover would take that address away from its host).
- A shared IP lies in the subnet (by its own prefix length) of the service address of
  every member that may take it (the members of ``shared_ip.site``, or all without a
  site): it is announced on that segment, and ``cr_service_address`` is by definition
  where clients reach the host. An error: the fix is the shared IP, its prefix, or
  ``cr_service_address`` (the host's address on the shared IP's network).
- The DNS switch has no target list: when a member is promoted the record points at the
  shared IP (member on the shared IP's site) or at the member's service address. So each
  target is checked: the record is an A record (roles/cr_dns_record), so an IPv6 target is
  an error. A DNS server that is one of the cluster's own members is a warning: while that
  host is down the record cannot move, yet it may be the DR host, whose failure does not
  need the record moved.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cr_orchestrator.inventory.clusters import ClusterVars
from cr_orchestrator.inventory.values import Problems, Where
from cr_orchestrator.model import Cluster, Host, Platform

ROLES = ("management", "service", "cluster")
ROLE_VARS = {"management": "ansible_host", "service": "cr_service_address",
             "cluster": "cr_cluster_address"}


@dataclass(frozen=True)
class Use:
    """One host using one address in one role, and the variable that says so."""

    host: str
    role: str  # management | service | cluster
    address: str  # as written (IPs normalised)
    var: str  # the variable that gives it (ansible_host when a role defaults to it)
    where: Where


@dataclass(frozen=True)
class Verdict:
    error: bool
    role: str
    reason: str


def check_address_plan(p: Problems, hosts: dict[str, Host], origins: dict[str, dict[str, Where]],
                       clusters: list[tuple[Cluster, ClusterVars]]) -> None:
    """All address rules above; ``origins`` says which group or host set each host variable."""
    uses = {name: host_uses(hosts[name], origins.get(name, {})) for name in sorted(hosts)}
    check_duplicates(p, uses, _Neighbourhood(hosts, [c for c, _ in clusters]))
    for cluster, cv in clusters:
        check_shared_ip(p, cluster, cv, hosts, uses)
        check_dns_targets(p, cluster, cv, hosts, uses)


def host_uses(host: Host, origin: dict[str, Where]) -> list[Use]:
    """The host's three addresses, each with the variable it comes from."""
    values = {"management": host.management_address, "service": host.service_address,
              "cluster": host.cluster_address}
    result = []
    for role, value in values.items():
        var = ROLE_VARS[role] if ROLE_VARS[role] in origin else "ansible_host"
        result.append(Use(host.name, role, value, var, origin.get(var, Where("host", host.name))))
    return result


def address_key(address: str) -> str:
    """A comparable form: IPs normalised, host names case-insensitive without the final dot."""
    ip = as_ip(address)
    return str(ip) if ip is not None else address.rstrip(".").casefold()


def as_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


class _Neighbourhood:
    """Who shares a cluster, a peer or a checked port with whom."""

    def __init__(self, hosts: dict[str, Host], clusters: list[Cluster]) -> None:
        self.hosts = hosts
        self.clusters = {h: [c for c in clusters if h in c.hosts()] for h in hosts}

    def common_cluster(self, a: str, b: str) -> str | None:
        names = sorted({c.name for c in self.clusters[a]} & {c.name for c in self.clusters[b]})
        return names[0] if names else None

    def common_peer(self, a: str, b: str) -> str | None:
        peers = (self._peers(a) & self._peers(b)) - {a, b}
        return min(peers) if peers else None

    def common_port(self, a: str, b: str) -> int | None:
        ports = self._ports(a) & self._ports(b)
        return min(ports) if ports else None

    def same_endpoint(self, a: str, b: str) -> bool:
        return _endpoint(self.hosts[a]) == _endpoint(self.hosts[b])

    def _peers(self, host: str) -> set[str]:
        return {m for c in self.clusters[host] for m in c.hosts()}

    def _ports(self, host: str) -> set[int]:
        return {ch.port for c in self.clusters[host] for s in c.services for ch in s.checks}


def _endpoint(host: Host) -> tuple:
    """What Ansible connects to besides the address: a NAT or jump host differs here."""
    if host.platform is Platform.WINDOWS and host.winrm is not None:
        return ("winrm", host.winrm.port, host.winrm.scheme, host.winrm.path)
    ssh = host.ssh
    extra = str(host.hostvars.get("ansible_ssh_extra_args") or "")
    return ("ssh", ssh.port if ssh else 22, ssh.common_args if ssh else "", extra)


def check_duplicates(p: Problems, uses: dict[str, list[Use]], near: _Neighbourhood) -> None:
    """Two hosts with one address: one problem per pair and address, on the later host."""
    by_address: dict[str, dict[str, list[Use]]] = {}
    for name, host_list in uses.items():
        for use in host_list:
            by_address.setdefault(address_key(use.address), {}).setdefault(name, []).append(use)
    for _, users in sorted(by_address.items()):
        names = sorted(users)
        for i, b in enumerate(names):
            for a in names[:i]:
                _report_pair(p, near, users[a], users[b])


def _report_pair(p: Problems, near: _Neighbourhood, uses_a: list[Use], uses_b: list[Use]) -> None:
    a, b = uses_a[0].host, uses_b[0].host
    roles_a = [u.role for u in uses_a]
    roles_b = [u.role for u in uses_b]
    shared = [r for r in ROLES if r in roles_a and r in roles_b]
    verdicts = [_verdict(near, role, a, b) for role in shared] or [_cross_verdict(roles_a, roles_b)]
    chosen = [v for v in verdicts if v.error] or verdicts
    if chosen[0].error and chosen[0].role == "management":
        chosen = chosen[:1]  # one machine under two names: the rest follows from that
    use = next((u for u in uses_b if u.role == chosen[0].role), uses_b[0])
    if roles_a == roles_b:
        owners = f"the {_roles_text(roles_b)} address of both host {b!r} and host {a!r}"
    else:
        owners = (f"the {_roles_text(roles_b)} address of host {b!r} and the "
                  f"{_roles_text(roles_a)} address of host {a!r}")
    message = f"{use.address} is {owners}: " + "; ".join(dict.fromkeys(v.reason for v in chosen))
    (p.error if chosen[0].error else p.warn)(use.where, use.var, message)


def _verdict(near: _Neighbourhood, role: str, a: str, b: str) -> Verdict:
    """Whether two hosts sharing an address in ``role`` can be legitimate, and why."""
    if role == "management":
        if near.same_endpoint(a, b):
            return Verdict(True, role, "Ansible reaches both the same way (same port and "
                           "connection arguments), so they are one machine under two names")
        return Verdict(False, role, "legitimate only behind a NAT gateway or jump host (they are "
                       "reached at different ports or with different ssh arguments)")
    cluster = near.common_cluster(a, b)
    if role == "service":
        if cluster:
            return Verdict(True, role, f"as members of cluster {cluster!r} their services could "
                           "not be told apart by probes or the client switch (set "
                           "cr_service_address)")
        port = near.common_port(a, b)
        if port is not None:
            return Verdict(True, role, f"both are checked on port {port}, so a probe of one "
                           "would reach the other")
        return Verdict(False, role, "legitimate only behind a NAT that forwards each cluster's "
                       "ports to its own host (their checks use different ports)")
    if cluster:
        return Verdict(True, role, f"replication and peer probes in cluster {cluster!r} would "
                       "reach the wrong host (give each host its own cr_cluster_address)")
    peer = near.common_peer(a, b)
    if peer:
        return Verdict(True, role, f"host {peer!r} replicates with or probes both and could not "
                       "tell them apart (give each host its own cr_cluster_address)")
    return Verdict(False, role, "legitimate only on separate cluster networks (the two share "
                   "no cluster and no peer)")


def _cross_verdict(roles_a: list[str], roles_b: list[str]) -> Verdict:
    role = roles_b[0]
    if "management" in roles_a or "management" in roles_b:
        return Verdict(False, role, "legitimate only if it is the address of a NAT gateway or "
                       "jump host in front of both")
    return Verdict(True, role, "one address belongs to one machine")


def _one_of(names: list[str]) -> str:
    return repr(names[0]) if len(names) == 1 else "one of " + ", ".join(map(repr, names))


def _roles_text(roles: list[str]) -> str:
    if len(roles) == 1:
        return roles[0]
    return ", ".join(roles[:-1]) + " and " + roles[-1]


def check_shared_ip(p: Problems, cluster: Cluster, cv: ClusterVars, hosts: dict[str, Host],
                    uses: dict[str, list[Use]]) -> None:
    """The shared IP is owned by no host and lies in its members' service subnet."""
    shared = cluster.switch.shared_ip
    if shared is None:
        return
    iface = ipaddress.ip_interface(shared.address)
    w, var = cv.where("cr_switch"), "cr_switch.shared_ip.address"
    members = set(cluster.hosts())
    for name, host_list in uses.items():
        owned = [u for u in host_list if address_key(u.address) == str(iface.ip)]
        if owned:
            kind = "member" if name in members else "host"
            p.error(w, var, f"{iface.ip} is also the {_roles_text([u.role for u in owned])} address "
                    f"of {kind} {name!r} ({owned[0].var}): a shared IP must be an address no "
                    "host owns, or a failover would take it away from that host")
    for member in cluster.members:
        host = hosts.get(member.host)
        if host is None or (shared.site is not None and host.site != shared.site):
            continue
        ip = as_ip(host.service_address)
        if ip is None or ip == iface.ip or ip in iface.network:
            continue  # a host name cannot be checked; an equal address is reported above
        service = next(u for u in uses[host.name] if u.role == "service")
        why = (f"on the shared IP's site {shared.site!r}" if shared.site is not None
               else "with no shared_ip.site, every member")
        p.error(w, var, f"member {host.name!r} ({why}) may take {shared.address}, but its service "
                f"address {ip} ({service.var}) is outside the shared IP's subnet {iface.network}: "
                "clients on that network could not reach the shared IP; fix the shared IP or "
                "its prefix length, or set cr_service_address to the member's address on the "
                "shared IP's network")


def check_dns_targets(p: Problems, cluster: Cluster, cv: ClusterVars, hosts: dict[str, Host],
                      uses: dict[str, list[Use]]) -> None:
    """Every address the DNS record may be pointed at fits an A record; the server is no member."""
    dns, shared = cluster.switch.dns, cluster.switch.shared_ip
    if dns is None:
        return
    w = cv.where("cr_switch")
    takes_shared = [m.host for m in cluster.members if m.host in hosts and shared is not None
                    and shared.site in (None, hosts[m.host].site)]
    if takes_shared and ipaddress.ip_interface(shared.address).version != 4:
        p.error(w, "cr_switch.shared_ip.address", (
            f"{shared.ip} is an IPv6 address, but the DNS switch writes an A record (IPv4 only) "
            f"points it at the shared IP while {_one_of(takes_shared)} is primary"))
    for member in cluster.members:
        if member.host not in hosts or member.host in takes_shared:
            continue
        ip = as_ip(hosts[member.host].service_address)
        if ip is not None and ip.version != 4:  # not an IP at all: check_sites reports it
            service = next(u for u in uses[member.host] if u.role == "service")
            p.error(w, "cr_switch.dns", (
                f"member {member.host!r} has service address {ip} ({service.var}), an IPv6 "
                "address: the DNS switch writes an A record, which holds IPv4 addresses only"))
    server = address_key(dns.server)
    for member in cluster.members:
        owned = [u for u in uses.get(member.host, []) if address_key(u.address) == server]
        if owned:
            p.warn(w, "cr_switch.dns.server", (
                f"{dns.server} is the {_roles_text([u.role for u in owned])} address of member "
                f"{member.host!r} ({owned[0].var}): while {member.host!r} is down the record "
                "cannot be updated, so a failover away from it would leave clients pointed at "
                "it (legitimate when that member is rarely primary, e.g. a DR host)"))
