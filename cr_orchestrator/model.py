"""The typed, frozen picture of an inventory: what the operator configured.

These objects hold intent only (who *should* be primary, how to switch clients,
what to replicate). Live state (who *is* primary, the epoch) lives in Redis.
Built by :mod:`cr_orchestrator.inventory`, which validates everything first, so
code that receives a :class:`Topology` can trust it.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cr_orchestrator.notify.targets import NotifyTargets


class Platform(enum.StrEnum):
    WINDOWS = "windows"
    LINUX = "linux"


class Role(enum.StrEnum):
    """Configured role of a member in a cluster."""

    PRIMARY = "primary"
    SECONDARY = "secondary"  # same site or cluster: may be promoted automatically
    REPLICA = "replica"  # DR copy: receives data, promoted only by an operator


class FailbackMode(enum.StrEnum):
    MANUAL = "manual"
    AUTO = "auto"


class DrMode(enum.StrEnum):
    """``cr_dr``: may a replica (a DR copy, usually on another site) be promoted without
    an operator when no secondary can take over?"""

    MANUAL = "manual"  # HOLD, saying the command an operator runs
    AUTO = "auto"  # yes: by the Redis quorum's majority side only, within max_replica_lag


class CheckKind(enum.StrEnum):
    SMTP = "smtp"
    POP3 = "pop3"
    IMAP = "imap"
    HTTP = "http"
    HTTPS = "https"
    TCP = "tcp"
    SQL = "sql"  # SQL Server TDS pre-login


@dataclass(frozen=True)
class Secret:
    """A secret value (password, TSIG key) that never shows in repr, logs or errors."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def reveal(self) -> str:
        return self.value


@dataclass(frozen=True)
class WinRMSettings:
    """How to reach a Windows host over WinRM, from the usual ``ansible_winrm_*`` vars."""

    user: str
    password: Secret | None
    transport: str  # ntlm | kerberos | credssp | certificate | basic
    port: int
    scheme: str  # http | https
    path: str
    server_cert_validation: bool
    cert_pem: str | None = None
    cert_key_pem: str | None = None
    ca_trust_path: str | None = None

    def endpoint(self, address: str) -> str:
        return f"{self.scheme}://{address}:{self.port}{self.path}"


@dataclass(frozen=True)
class SshSettings:
    """How to reach a Linux host over SSH, from the usual ``ansible_*`` vars."""

    user: str
    port: int
    private_key_file: str | None
    common_args: str = ""


@dataclass(frozen=True)
class Host:
    name: str
    site: str
    platform: Platform
    management_address: str  # ansible_host: where Ansible, WinRM and SSH connect
    cluster_address: str  # cluster network: replication and peer probes
    service_address: str  # client network: where clients reach the service
    winrm: WinRMSettings | None = None
    ssh: SshSettings | None = None
    hostvars: dict = field(default_factory=dict, compare=False, repr=False, hash=False)


@dataclass(frozen=True)
class Check:
    """A protocol check of a service: SMTP 220, POP3 +OK, HTTP status, TCP, TDS."""

    kind: CheckKind
    port: int
    path: str = "/"  # http(s) only
    expect_status: int = 200  # http(s) only


@dataclass(frozen=True)
class ServiceControl:
    """Shell commands for a Linux service without an init system (the lab's)."""

    start: str
    stop: str
    status: str  # exit 0 = running, anything else = stopped


@dataclass(frozen=True)
class Service:
    name: str  # Windows service name or systemd unit
    checks: tuple[Check, ...]
    control: ServiceControl | None = None


@dataclass(frozen=True)
class SharedIp:
    """A virtual IP that follows the primary on one segment."""

    address: str  # CIDR form, e.g. 123.123.123.101/24
    interface: str  # Windows InterfaceAlias or Linux device
    site: str | None = None  # only members of this site can take it (None: any)

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)

    @property
    def prefix_length(self) -> int:
        return ipaddress.ip_interface(self.address).network.prefixlen


@dataclass(frozen=True)
class DnsSwitch:
    """A DNS record that points clients at the primary (RFC 2136 or Microsoft DNS)."""

    zone: str
    record: str
    server: str
    ttl: int
    provider: str  # rfc2136 | microsoft
    key_name: str | None = None
    key_secret: Secret | None = None
    key_algorithm: str = "hmac-sha256"


@dataclass(frozen=True)
class ClientSwitch:
    shared_ip: SharedIp | None = None
    dns: DnsSwitch | None = None


@dataclass(frozen=True)
class ReplicaTarget:
    host: str
    path: str


# quarantine: opaque data (databases): keep aside, an operator decides.
# maildir: one immutable file per message: the union of both sides is right.
RECONCILE_POLICIES = ("quarantine", "maildir")


@dataclass(frozen=True)
class ReplicaSet:
    """Files copied from the current primary to every target."""

    name: str
    path: str  # path on the primary (and on a member that has no own target path)
    targets: tuple[ReplicaTarget, ...]
    every_s: float
    vss: bool = False
    excludes: tuple[str, ...] = ()
    bandwidth_limit_kbps: int | None = None
    checksum: bool = False
    # what to do with what a returning old primary changed alone (RECONCILE_POLICIES):
    # "quarantine" keeps it aside; "maildir" also merges its unique messages back
    reconcile: str = "quarantine"
    # continuous: a watcher on the primary sends what changed within ``batch_s``; the
    # periodic pass at ``every_s`` still runs and reports what events missed
    continuous: bool = False
    batch_s: float = 0.5

    def path_on(self, host: str) -> str:
        """Where this set's data lives on ``host`` (its target path, or the set's path)."""
        for target in self.targets:
            if target.host == host:
                return target.path
        return self.path


@dataclass(frozen=True)
class Member:
    host: str
    role: Role
    priority: int = 0


@dataclass(frozen=True)
class Policy:
    """Timing and safety knobs, with safe defaults (seconds unless named otherwise)."""

    probe_interval_s: float = 1.0
    probe_timeout_s: float = 0.8
    failures_before_down: int = 3
    successes_before_up: int = 2
    required_vantages: int = 2
    restart_attempts: int = 1
    max_failovers: int = 2
    failover_period_s: float = 3600.0
    failback: FailbackMode = FailbackMode.MANUAL
    failback_min_healthy_s: float = 60.0
    max_replica_lag_s: float = 300.0
    dr: DrMode = DrMode.MANUAL
    # The serving host's lease (roles/cr_lease_agent). None derives it from detection
    # (failures_before_down rounds and the last one's timeout): renew each round; ttl one
    # renewal shorter than detection (at least 3.25 renewals), so the old primary has
    # stopped before detection ends; margin 0.3 renewals. The promotion wait (ttl +
    # margin) then ends before detection does: a host confirmed down is promoted away as
    # fast as before leases.
    lease_renew_s: float | None = None
    lease_ttl_s: float | None = None
    lease_margin_s: float | None = None

    @property
    def lease_renew(self) -> float:
        return self.lease_renew_s if self.lease_renew_s is not None else self.probe_interval_s

    @property
    def lease_ttl(self) -> float:
        if self.lease_ttl_s is not None:
            return self.lease_ttl_s
        detection = self.failures_before_down * self.probe_interval_s + self.probe_timeout_s
        renew = max(self.lease_renew, self.probe_interval_s)
        return round(max(3.25 * renew, detection - renew), 3)

    @property
    def lease_margin(self) -> float:
        return self.lease_margin_s if self.lease_margin_s is not None \
            else round(0.3 * self.lease_renew, 3)

    @property
    def promotion_wait(self) -> float:
        """How long after its last renewal an unreachable primary's lease may still hold."""
        return self.lease_ttl + self.lease_margin


@dataclass(frozen=True)
class Cluster:
    name: str
    group: str  # the inventory group that defines it
    members: tuple[Member, ...]
    services: tuple[Service, ...]
    switch: ClientSwitch
    replica_sets: tuple[ReplicaSet, ...]
    policy: Policy
    notify: NotifyTargets | None = None  # cr_notify: where its notifications go

    @property
    def configured_primary(self) -> str:
        return next(m.host for m in self.members if m.role is Role.PRIMARY)

    def member(self, host: str) -> Member:
        for m in self.members:
            if m.host == host:
                return m
        raise KeyError(f"{host} is not a member of cluster {self.name}")

    def hosts(self) -> tuple[str, ...]:
        return tuple(m.host for m in self.members)


@dataclass(frozen=True)
class Topology:
    """Everything an inventory describes: hosts, sites and clusters."""

    source: str  # the inventory path it was loaded from
    hosts: dict[str, Host]
    clusters: dict[str, Cluster]
    # problems worth telling the operator that do not stop the orchestrator
    warnings: tuple[str, ...] = ()

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(sorted({h.site for h in self.hosts.values()}))

    def cluster(self, name: str) -> Cluster:
        try:
            return self.clusters[name]
        except KeyError:
            known = ", ".join(sorted(self.clusters)) or "none"
            raise KeyError(f"no cluster named {name!r} in {self.source} (known: {known})") from None
