"""The lab's plan: names, networks, nodes and addresses, computed without any I/O.

Everything the lab creates is named from the lab NAME, so several labs can run side by
side and ``down`` can find every piece of one lab even when ``up`` died half-way:

- network namespaces ``NAME-<node>`` (``crlab-mail-a``, ``crlab-sw``, ...);
- the bridges live in the lab's own switch namespace ``NAME-sw`` (so the root namespace's
  firewall and bridge-netfilter settings never see lab traffic);
- the root namespace gets one veth per lab network, ``NAME-apub``, ``NAME-acl``,
  ``NAME-bpub``, ``NAME-bcl`` (at most 10 characters, under Linux's 15).

Address plan inside the /20 BASE (third-octet offsets): +0 site-a public, +1 site-a
cluster, +2 site-b public, +3 site-b cluster. The root namespace is .1 on each, the router
.254, the shared IP +0.100, client +0.2, dns +0.53, site-a hosts .11.., site-b host .21,
"Windows" hosts .31.. (site-a).

With ``orchestrators`` (``crctl lab up --orchestrators``) the plan grows, leaving every
address above as it is: +4 the witness segment (root .1, router .254, witness .41);
orchestrator nodes orch-a (+0.41/+1.41) and orch-b (+2.41/+3.41), each running Redis and
Sentinel like the witness; a second client, client-b, at +2.2.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field

from cr_orchestrator.errors import ConfigError

LAB_ROOT = "/var/lib/cr-lab"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,4}$")
LAB_SPACE = ipaddress.ip_network("198.18.0.0/15")
DNS_ZONE = "lab.test."
DNS_RECORD = "mail"
TSIG_KEY_NAME = "cr-lab-key."
MAIL_USER = "lab"
MAIL_PASSWORD = "lab"  # not a secret: the lab's Dovecot accepts any user with it


class NodeKind(enum.StrEnum):
    HOST = "host"  # a lab server (Linux or "Windows"), own mount/UTS namespace
    ROUTER = "router"
    CLIENT = "client"
    DNS = "dns"
    SWITCH = "switch"
    ORCHESTRATOR = "orchestrator"  # a site's orchestrator node: Redis, Sentinel, crctl run
    WITNESS = "witness"  # the third Sentinel (and a Redis that is never promoted)


class HostPlatform(enum.StrEnum):
    LINUX = "linux"  # sshd + the mail service
    WINDOWS = "windows"  # runs a given command (the WS-Man simulator) as its service


class NetRole(enum.StrEnum):
    PUBLIC = "public"
    CLUSTER = "cluster"


@dataclass(frozen=True)
class Net:
    """One lab segment: a bridge in the switch namespace, reached by root via ``root_if``."""

    key: str  # apub | acl | bpub | bcl | wit (witness, with orchestrators)
    site: str
    role: NetRole
    network: str  # CIDR, e.g. 198.18.0.0/24
    root_if: str  # veth end in the root namespace
    root_address: str  # the root namespace's address on it (.1)
    router_address: str  # .254

    def address(self, last_octet: int) -> str:
        return str(ipaddress.ip_network(self.network)[last_octet])


@dataclass(frozen=True)
class Link:
    """A node's interface on one lab net (veth: ``ifname`` in the node, ``port`` on the bridge)."""

    net: str
    ifname: str
    address: str  # without prefix
    port: str  # the veth end in the switch namespace


@dataclass(frozen=True)
class Node:
    name: str
    kind: NodeKind
    namespace: str
    site: str | None
    links: tuple[Link, ...]
    routes: tuple[tuple[str, str], ...] = ()  # (destination CIDR, gateway)
    platform: HostPlatform | None = None
    role: str | None = None  # primary | secondary | replica (hosts only)

    def link(self, net: str) -> Link | None:
        return next((lk for lk in self.links if lk.net == net), None)


@dataclass(frozen=True)
class LabPlan:
    name: str
    base: str
    nets: tuple[Net, ...]
    nodes: tuple[Node, ...]
    shared_ip: str  # without prefix
    shared_ip_prefix: int = 24
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def state_dir(self) -> str:
        return f"{LAB_ROOT}/{self.name}"

    @property
    def switch_ns(self) -> str:
        return f"{self.name}-sw"

    def net(self, key: str) -> Net:
        return next(n for n in self.nets if n.key == key)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        hosts = ", ".join(h.name for h in self.hosts())
        raise ConfigError(f"lab {self.name} has no host {name!r} (hosts: {hosts})")

    def hosts(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.kind is NodeKind.HOST)

    def quorum_nodes(self) -> tuple[Node, ...]:
        """The nodes running Redis and Sentinel: orch-a, orch-b, witness (or none)."""
        return tuple(n for n in self.nodes
                     if n.kind in (NodeKind.ORCHESTRATOR, NodeKind.WITNESS))

    def orchestrator_nodes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.kind is NodeKind.ORCHESTRATOR)

    def quorum_node(self, name: str) -> Node:
        nodes = self.quorum_nodes()
        found = next((n for n in nodes if n.name == name), None)
        if found is None:
            known = ", ".join(n.name for n in nodes) or "none: `crctl lab up --orchestrators`"
            raise ConfigError(f"lab {self.name} has no orchestrator node {name!r} "
                              f"(nodes: {known})")
        return found

    @property
    def sites(self) -> tuple[str, ...]:
        return ("site-a", "site-b")

    def site_nets(self, site: str) -> tuple[Net, ...]:
        return tuple(n for n in self.nets if n.site == site)

    def linux_hosts(self) -> tuple[Node, ...]:
        return tuple(n for n in self.hosts() if n.platform is HostPlatform.LINUX)

    def root_addresses(self) -> tuple[str, ...]:
        return tuple(n.root_address for n in self.nets)

    @property
    def dns_server(self) -> str:
        return self.node("dns").links[0].address

    def cluster_address(self, host: str) -> str:
        node = self.node(host)
        return next(lk.address for lk in node.links if self.net(lk.net).role is NetRole.CLUSTER)

    def service_address(self, host: str) -> str:
        node = self.node(host)
        return next(lk.address for lk in node.links if self.net(lk.net).role is NetRole.PUBLIC)


def validate_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ConfigError(
            f"lab name {name!r} is invalid: use 1-5 characters, a-z then a-z/0-9 "
            "(interface names carry it and Linux allows 15 characters)"
        )
    return name


def validate_base(base: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(base, strict=True)
    except ValueError as exc:
        raise ConfigError(f"lab base {base!r} is not a network address: {exc}") from exc
    if net.prefixlen != 20 or not net.subnet_of(LAB_SPACE):  # type: ignore[arg-type]
        raise ConfigError(f"lab base {base} must be a /20 inside {LAB_SPACE} (e.g. 198.18.16.0/20)")
    return net  # type: ignore[return-value]


def _nets(name: str, base: ipaddress.IPv4Network, *, witness: bool) -> tuple[Net, ...]:
    nets = []
    specs = [("apub", "site-a", NetRole.PUBLIC), ("acl", "site-a", NetRole.CLUSTER),
             ("bpub", "site-b", NetRole.PUBLIC), ("bcl", "site-b", NetRole.CLUSTER)]
    if witness:
        # the witness's only segment counts as its cluster (management) net
        specs.append(("wit", "witness", NetRole.CLUSTER))
    for offset, (key, site, role) in enumerate(specs):
        network = ipaddress.ip_network(f"{base.network_address + offset * 256}/24")
        nets.append(Net(key=key, site=site, role=role, network=str(network),
                        root_if=f"{name}-{key}", root_address=str(network[1]),
                        router_address=str(network[254])))
    return tuple(nets)


def _site_nets(site: str) -> tuple[str, str]:
    return ("apub", "acl") if site == "site-a" else ("bpub", "bcl")


def _host(plan_nets: dict[str, Net], *, name: str, ns: str, index: int, site: str,
          octet: int, role: str, platform: HostPlatform) -> Node:
    pub, cl = _site_nets(site)
    other_pub, other_cl = _site_nets("site-b" if site == "site-a" else "site-a")
    links = (
        Link(net=pub, ifname="eth0", address=plan_nets[pub].address(octet), port=f"h{index}p"),
        Link(net=cl, ifname="eth1", address=plan_nets[cl].address(octet), port=f"h{index}c"),
    )
    routes = ((plan_nets[other_pub].network, plan_nets[pub].router_address),
              (plan_nets[other_cl].network, plan_nets[cl].router_address))
    return Node(name=name, kind=NodeKind.HOST, namespace=ns, site=site, links=links,
                routes=routes, platform=platform, role=role)


def _quorum_nodes(name: str, by_key: dict[str, Net]) -> list[Node]:
    """orch-a, orch-b (both nets of their site, like a host) and the witness; client-b."""
    nodes = []
    wit = by_key["wit"]
    for site, node, port in (("site-a", "orch-a", "oa"), ("site-b", "orch-b", "ob")):
        pub, cl = _site_nets(site)
        other_pub, other_cl = _site_nets("site-b" if site == "site-a" else "site-a")
        links = (Link(pub, "eth0", by_key[pub].address(41), f"{port}p"),
                 Link(cl, "eth1", by_key[cl].address(41), f"{port}c"))
        routes = ((by_key[other_pub].network, by_key[pub].router_address),
                  (by_key[other_cl].network, by_key[cl].router_address),
                  (wit.network, by_key[cl].router_address))
        nodes.append(Node(name=node, kind=NodeKind.ORCHESTRATOR, namespace=f"{name}-{node}",
                          site=site, links=links, routes=routes))
    nodes.append(Node(name="witness", kind=NodeKind.WITNESS, namespace=f"{name}-witness",
                      site="witness", links=(Link("wit", "eth0", wit.address(41), "wq"),),
                      routes=tuple((by_key[k].network, wit.router_address)
                                   for k in ("apub", "acl", "bpub", "bcl"))))
    bpub = by_key["bpub"]
    nodes.append(Node(name="client-b", kind=NodeKind.CLIENT, namespace=f"{name}-client-b",
                      site="site-b", routes=((by_key["apub"].network, bpub.router_address),),
                      links=(Link("bpub", "eth0", bpub.address(2), "clbp"),)))
    return nodes


def plan_lab(*, name: str, base: str, secondaries: int = 1, windows: int = 0,
             orchestrators: bool = False) -> LabPlan:
    """The full plan of lab ``name`` at ``base`` (pure: same input, same plan)."""
    validate_name(name)
    net = validate_base(base)
    if not 0 <= secondaries <= 8:
        raise ConfigError(f"--secondaries {secondaries}: the lab supports 0 to 8 site-a secondaries")
    if not 0 <= windows <= 8:
        raise ConfigError(f"--windows {windows}: the lab supports 0 to 8 Windows hosts")
    nets = _nets(name, net, witness=orchestrators)
    by_key = {n.key: n for n in nets}
    nodes: list[Node] = []
    host_specs = [("mail-a", "site-a", 11, "primary", HostPlatform.LINUX)]
    host_specs += [(f"mail-{chr(ord('b') + i)}", "site-a", 12 + i, "secondary", HostPlatform.LINUX)
                   for i in range(secondaries)]
    host_specs.append(("mail-dr", "site-b", 21, "replica", HostPlatform.LINUX))
    host_specs += [(f"win-{i + 1}", "site-a", 31 + i, "secondary" if i else "primary",
                    HostPlatform.WINDOWS) for i in range(windows)]
    for index, (host, site, octet, role, platform) in enumerate(host_specs):
        nodes.append(_host(by_key, name=host, ns=f"{name}-{host}", index=index, site=site,
                           octet=octet, role=role, platform=platform))
    apub = by_key["apub"]
    to_b = ((by_key["bpub"].network, apub.router_address),)
    nodes.append(Node(name="client", kind=NodeKind.CLIENT, namespace=f"{name}-client",
                      site="site-a", routes=to_b,
                      links=(Link("apub", "eth0", apub.address(2), "clp"),)))
    nodes.append(Node(name="dns", kind=NodeKind.DNS, namespace=f"{name}-dns", site="site-a",
                      routes=to_b, links=(Link("apub", "eth0", apub.address(53), "dnsp"),)))
    if orchestrators:
        nodes += _quorum_nodes(name, by_key)
    router_links = tuple(Link(n.key, f"eth{i}", n.router_address, f"r{n.key}")
                         for i, n in enumerate(nets))
    nodes.append(Node(name="router", kind=NodeKind.ROUTER, namespace=f"{name}-router",
                      site=None, links=router_links))
    return LabPlan(name=name, base=str(net), nets=nets, nodes=tuple(nodes),
                   shared_ip=apub.address(100),
                   extra={"secondaries": secondaries, "windows": windows,
                          "orchestrators": orchestrators})
