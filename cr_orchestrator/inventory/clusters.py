"""Clusters: members, services, client switch and policy from one group's variables."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cr_orchestrator.inventory.values import (
    Problems,
    Where,
    as_address,
    as_cidr,
    as_duration,
    as_int,
    as_list,
    as_mapping,
    as_secret,
    as_str,
    check_keys,
    one_of,
)
from cr_orchestrator.model import (
    Check,
    CheckKind,
    ClientSwitch,
    DnsSwitch,
    DrMode,
    FailbackMode,
    Member,
    Policy,
    Role,
    Service,
    ServiceControl,
    SharedIp,
)

CLUSTER_KEYS = ("cr_cluster", "cr_members", "cr_services", "cr_switch", "cr_replica_sets",
                "cr_failback", "cr_dr", "cr_policy", "cr_notify")
MEMBER_KEYS = ("role", "priority")
SERVICE_KEYS = ("name", "checks", "control")
CHECK_OPTION_KEYS = ("path", "status")
SWITCH_KEYS = ("shared_ip", "dns")
SHARED_IP_KEYS = ("address", "interface", "site")
DNS_KEYS = ("zone", "record", "server", "ttl", "provider", "key_name", "key_secret", "key_algorithm")
DNS_PROVIDERS = ("rfc2136", "microsoft")
TSIG_ALGORITHMS = ("hmac-md5", "hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384",
                   "hmac-sha512")
# cr_policy key -> (Policy field, kind, minimum for counts)
POLICY_KEYS = {
    "probe_interval": ("probe_interval_s", "duration", None),
    "probe_timeout": ("probe_timeout_s", "duration", None),
    "failures_before_down": ("failures_before_down", "count", 1),
    "successes_before_up": ("successes_before_up", "count", 1),
    "required_vantages": ("required_vantages", "count", 1),
    "restart_attempts": ("restart_attempts", "count", 0),
    "max_failovers": ("max_failovers", "count", 1),
    "failover_period": ("failover_period_s", "duration", None),
    "failback_min_healthy": ("failback_min_healthy_s", "duration", None),
    "max_replica_lag": ("max_replica_lag_s", "duration", None),
    "lease_renew": ("lease_renew_s", "duration", None),
    "lease_ttl": ("lease_ttl_s", "duration", None),
    "lease_margin": ("lease_margin_s", "duration", None),
}
_CLUSTER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass
class ClusterVars:
    """One cluster group's variables (with inherited ones) and where each came from."""

    group: str
    merged: dict
    origin: dict[str, Where]

    def where(self, var: str) -> Where:
        return self.origin.get(var.split(".")[0].split("[")[0], Where("group", self.group))


def cluster_name(p: Problems, cv: ClusterVars) -> str | None:
    name = as_str(p, cv.where("cr_cluster"), "cr_cluster", cv.merged.get("cr_cluster"))
    if name is not None and not _CLUSTER_NAME.match(name):
        p.error(cv.where("cr_cluster"), "cr_cluster",
                f"{name!r} is not a valid cluster name (lower-case letters, digits, '-', '_')")
        return None
    return name


def build_members(p: Problems, cv: ClusterVars, *, group_hosts: set[str],
                  inventory_hosts: set[str]) -> tuple[Member, ...] | None:
    """Members from ``cr_members``; exactly one primary, every one a host of the group."""
    w = cv.where("cr_members")
    if "cr_members" not in cv.merged:
        p.error(w, "cr_members", "missing: list the cluster's hosts with their roles")
        return None
    entries = as_mapping(p, w, "cr_members", cv.merged["cr_members"])
    if entries is None:
        return None
    members, before = [], len(p.errors)
    for host, entry in entries.items():
        var = f"cr_members.{host}"
        if host not in inventory_hosts:
            p.error(w, var, f"no host {host!r} in the inventory")
        elif host not in group_hosts:
            p.error(w, var, f"host {host!r} is not in group {cv.group!r}: add it to the group's hosts")
        member = _member(p, w, var, host, entry)
        if member is not None:
            members.append(member)
    for host in sorted(group_hosts - set(entries)):
        p.error(w, "cr_members", f"host {host!r} is in group {cv.group!r} but not in cr_members: "
                "give it a role or remove it from the group")
    primaries = [m.host for m in members if m.role is Role.PRIMARY]
    if len(p.errors) == before and len(primaries) != 1:
        found = ", ".join(primaries) if primaries else "none"
        p.error(w, "cr_members", f"exactly one member must have role primary (found: {found})")
    if len(p.errors) == before and len(members) < 2:
        p.error(w, "cr_members", "a cluster needs at least two members")
    order = {Role.PRIMARY: 0, Role.SECONDARY: 1, Role.REPLICA: 2}
    members.sort(key=lambda m: (order[m.role], -m.priority, m.host))
    return tuple(members) if len(p.errors) == before else None


def _member(p: Problems, w: Where, var: str, host: str, entry: object) -> Member | None:
    if isinstance(entry, str):  # shorthand: {host: primary}
        entry = {"role": entry}
    entry = as_mapping(p, w, var, entry)
    if entry is None:
        return None
    check_keys(p, w, var, entry, MEMBER_KEYS)
    if "role" not in entry:
        p.error(w, f"{var}.role", "missing: primary, secondary or replica")
        return None
    role = as_str(p, w, f"{var}.role", entry["role"])
    if role is not None and role.lower() not in [r.value for r in Role]:
        p.error(w, f"{var}.role", f"unknown role {role!r} (use primary, secondary or replica)")
        return None
    priority = as_int(p, w, f"{var}.priority", entry.get("priority", 0), minimum=0)
    if role is None or priority is None:
        return None
    return Member(host=host, role=Role(role.lower()), priority=priority)


def build_services(p: Problems, cv: ClusterVars, *, linux_only: bool) -> tuple[Service, ...] | None:
    w = cv.where("cr_services")
    if "cr_services" not in cv.merged:
        p.error(w, "cr_services", "missing: the services this cluster keeps running")
        return None
    entries = as_list(p, w, "cr_services", cv.merged["cr_services"])
    if entries is None:
        return None
    if not entries:
        p.error(w, "cr_services", "must list at least one service")
    services, before, names = [], len(p.errors), set()
    for i, entry in enumerate(entries):
        var = f"cr_services[{i}]"
        service = _service(p, w, var, entry, linux_only=linux_only)
        if service is None:
            continue
        if service.name.casefold() in names:
            p.error(w, f"{var}.name", f"service {service.name!r} is listed twice")
        names.add(service.name.casefold())
        services.append(service)
    return tuple(services) if len(p.errors) == before else None


def _service(p: Problems, w: Where, var: str, entry: object, *, linux_only: bool) -> Service | None:
    entry = as_mapping(p, w, var, entry)
    if entry is None:
        return None
    check_keys(p, w, var, entry, SERVICE_KEYS)
    name = as_str(p, w, f"{var}.name", entry.get("name"))
    checks = []
    for j, raw in enumerate(as_list(p, w, f"{var}.checks", entry.get("checks", [])) or []):
        check = _check(p, w, f"{var}.checks[{j}]", raw)
        if check is not None:
            checks.append(check)
    control = None
    if "control" in entry:
        if not linux_only:
            p.error(w, f"{var}.control", "shell control is for Linux members only; "
                    "Windows services are controlled by name")
        control = _control(p, w, f"{var}.control", entry["control"])
    return Service(name=name, checks=tuple(checks), control=control) if name else None


def _check(p: Problems, w: Where, var: str, raw: object) -> Check | None:
    raw = as_mapping(p, w, var, raw)
    if raw is None:
        return None
    kinds = [k for k in raw if k not in CHECK_OPTION_KEYS]
    if len(kinds) != 1:
        p.error(w, var, "a check names one protocol and its port, e.g. {smtp: 25}")
        return None
    kind = one_of(p, w, f"{var}.{kinds[0]}", kinds[0], [k.value for k in CheckKind])
    port = as_int(p, w, f"{var}.{kinds[0]}", raw[kinds[0]], minimum=1, maximum=65535)
    if kind is None or port is None:
        return None
    web = kind in (CheckKind.HTTP, CheckKind.HTTPS)
    for option in CHECK_OPTION_KEYS:
        if option in raw and not web:
            p.error(w, f"{var}.{option}", f"only http and https checks take {option!r}")
    path = as_str(p, w, f"{var}.path", raw.get("path", "/")) or "/"
    status = as_int(p, w, f"{var}.status", raw.get("status", 200), minimum=100, maximum=599) or 200
    return Check(kind=CheckKind(kind), port=port, path=path, expect_status=status)


def _control(p: Problems, w: Where, var: str, raw: object) -> ServiceControl | None:
    raw = as_mapping(p, w, var, raw)
    if raw is None:
        return None
    check_keys(p, w, var, raw, ("start", "stop", "status"))
    values = {k: as_str(p, w, f"{var}.{k}", raw.get(k)) for k in ("start", "stop", "status")}
    return None if None in values.values() else ServiceControl(**values)


def build_switch(p: Problems, cv: ClusterVars) -> ClientSwitch | None:
    w = cv.where("cr_switch")
    if "cr_switch" not in cv.merged:
        p.error(w, "cr_switch", "missing: how clients follow the primary (shared_ip and/or dns)")
        return None
    raw = as_mapping(p, w, "cr_switch", cv.merged["cr_switch"])
    if raw is None:
        return None
    check_keys(p, w, "cr_switch", raw, SWITCH_KEYS)
    if not set(raw) & set(SWITCH_KEYS):
        p.error(w, "cr_switch", "needs shared_ip, dns or both")
        return None
    before = len(p.errors)
    shared_ip = _shared_ip(p, w, raw["shared_ip"]) if "shared_ip" in raw else None
    dns = _dns(p, w, raw["dns"]) if "dns" in raw else None
    return ClientSwitch(shared_ip=shared_ip, dns=dns) if len(p.errors) == before else None


def _shared_ip(p: Problems, w: Where, raw: object) -> SharedIp | None:
    var = "cr_switch.shared_ip"
    raw = as_mapping(p, w, var, raw)
    if raw is None:
        return None
    check_keys(p, w, var, raw, SHARED_IP_KEYS)
    address = as_cidr(p, w, f"{var}.address", raw.get("address"))
    interface = as_str(p, w, f"{var}.interface", raw.get("interface"))
    site = as_str(p, w, f"{var}.site", raw["site"]) if raw.get("site") is not None else None
    if address is None or interface is None:
        return None
    return SharedIp(address=address, interface=interface, site=site)


def _dns(p: Problems, w: Where, raw: object) -> DnsSwitch | None:
    var = "cr_switch.dns"
    raw = as_mapping(p, w, var, raw)
    if raw is None:
        return None
    check_keys(p, w, var, raw, DNS_KEYS)
    before = len(p.errors)
    for key in ("zone", "record", "server"):
        if key not in raw:
            p.error(w, f"{var}.{key}", "missing: a DNS switch needs zone, record and server")
    zone = as_str(p, w, f"{var}.zone", raw.get("zone")) if "zone" in raw else None
    record = as_str(p, w, f"{var}.record", raw.get("record")) if "record" in raw else None
    server = as_address(p, w, f"{var}.server", raw.get("server")) if "server" in raw else None
    ttl = as_int(p, w, f"{var}.ttl", raw.get("ttl", 60), minimum=1)
    provider = one_of(p, w, f"{var}.provider", raw.get("provider", "rfc2136"), DNS_PROVIDERS)
    algorithm = one_of(p, w, f"{var}.key_algorithm", raw.get("key_algorithm", "hmac-sha256"),
                       TSIG_ALGORITHMS)
    key_name = as_str(p, w, f"{var}.key_name", raw["key_name"]) if "key_name" in raw else None
    key_secret = as_secret(p, w, f"{var}.key_secret", raw["key_secret"]) if "key_secret" in raw else None
    if provider == "rfc2136" and (key_name is None or key_secret is None):
        missing = [k for k in ("key_name", "key_secret") if k not in raw]
        if missing:
            p.error(w, f"{var}.{missing[0]}", "missing: an RFC 2136 DNS switch needs a TSIG key "
                    "(key_name and key_secret; vault-encrypt key_secret)")
    if len(p.errors) > before:
        return None
    return DnsSwitch(zone=zone, record=record, server=server, ttl=ttl, provider=provider,
                     key_name=key_name, key_secret=key_secret, key_algorithm=algorithm)


def build_policy(p: Problems, cv: ClusterVars) -> Policy | None:
    before = len(p.errors)
    fields: dict = {}
    if "cr_failback" in cv.merged:
        mode = one_of(p, cv.where("cr_failback"), "cr_failback", cv.merged["cr_failback"],
                      [m.value for m in FailbackMode])
        if mode is not None:
            fields["failback"] = FailbackMode(mode)
    if "cr_dr" in cv.merged:
        dr = one_of(p, cv.where("cr_dr"), "cr_dr", cv.merged["cr_dr"], [m.value for m in DrMode])
        if dr is not None:
            fields["dr"] = DrMode(dr)
    raw = cv.merged.get("cr_policy", {})
    w = cv.where("cr_policy")
    raw = as_mapping(p, w, "cr_policy", raw) if raw is not None else {}
    for key, value in (raw or {}).items():
        if key not in POLICY_KEYS:
            check_keys(p, w, "cr_policy", {key: value}, POLICY_KEYS)
            continue
        field, kind, minimum = POLICY_KEYS[key]
        var = f"cr_policy.{key}"
        parsed = (as_duration(p, w, var, value) if kind == "duration"
                  else as_int(p, w, var, value, minimum=minimum))
        if parsed is not None:
            fields[field] = parsed
    if len(p.errors) > before:
        return None
    policy = Policy(**fields)
    if policy.probe_timeout_s > policy.probe_interval_s:
        p.error(w, "cr_policy.probe_timeout", f"{policy.probe_timeout_s:g}s is longer than "
                f"probe_interval ({policy.probe_interval_s:g}s): probes would pile up")
        return None
    return _check_lease_timing(p, w, policy)


def _check_lease_timing(p: Problems, w: Where, policy: Policy) -> Policy | None:
    """The lease's timing rules (docs/operations.md, "The serving host's lease")."""
    # renewals come with the rounds: never more often than the probe interval
    renew = max(policy.lease_renew, policy.probe_interval_s)
    if policy.lease_ttl <= 3 * renew:
        p.error(w, "cr_policy.lease_ttl", f"{policy.lease_ttl:g}s must be longer than 3 "
                f"renewals (lease_renew, at least probe_interval: 3 x {renew:g}s): one or "
                "two lost renewals would make the serving host stop itself")
        return None
    # the promotion wait, lease_ttl + lease_margin, is longer than lease_ttl: a duration
    # (lease_margin) is positive, as as_duration checked
    return policy
