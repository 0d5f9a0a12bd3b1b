"""Hosts: site, platform, addresses and connection settings from merged host variables."""

from __future__ import annotations

from cr_orchestrator.inventory.values import (
    Problems,
    Where,
    as_address,
    as_int,
    as_secret,
    as_str,
    is_vault_blob,
    one_of,
)
from cr_orchestrator.model import Host, Platform, Secret, SshSettings, WinRMSettings

HOST_KEYS = ("cr_site", "cr_platform", "cr_cluster_address", "cr_service_address")
WINDOWS_CONNECTIONS = ("winrm", "psrp")
PASSWORD_VARS = ("ansible_password", "ansible_winrm_password", "ansible_winrm_pass")
NO_PASSWORD_TRANSPORTS = ("kerberos", "certificate")
WINRM_TRANSPORTS = ("ntlm", "kerberos", "credssp", "certificate", "basic", "plaintext", "ssl")
_SECRET_WORDS = ("password", "passwd", "_pass", "secret", "token")


class HostVars:
    """One host's merged variables, and where (group or host) each came from."""

    def __init__(self, name: str, merged: dict, origin: dict[str, Where]) -> None:
        self.name = name
        self.merged = merged
        self.origin = origin

    def where(self, var: str) -> Where:
        return self.origin.get(var, Where("host", self.name))

    def get(self, var: str, default=None):
        return self.merged.get(var, default)


def build_host(p: Problems, hv: HostVars) -> Host | None:
    """A :class:`Host` from merged variables, or ``None`` after recording its problems."""
    before = len(p.errors)
    site = _required_str(p, hv, "cr_site", "every cluster member needs a site (e.g. cr_site: tokyo)")
    platform = _platform(p, hv)
    management = as_address(p, hv.where("ansible_host"), "ansible_host",
                            hv.get("ansible_host", hv.name))
    cluster_address = management
    service_address = management
    if "cr_cluster_address" in hv.merged:
        cluster_address = as_address(p, hv.where("cr_cluster_address"), "cr_cluster_address",
                                     hv.get("cr_cluster_address"))
    if "cr_service_address" in hv.merged:
        service_address = as_address(p, hv.where("cr_service_address"), "cr_service_address",
                                     hv.get("cr_service_address"))
    winrm = _winrm(p, hv) if platform is Platform.WINDOWS else None
    ssh = _ssh(p, hv) if platform is Platform.LINUX else None
    if len(p.errors) > before or None in (site, platform, management):
        return None
    return Host(name=hv.name, site=site, platform=platform, management_address=management,
                cluster_address=cluster_address, service_address=service_address,
                winrm=winrm, ssh=ssh, hostvars=sanitized(hv.merged))


def _required_str(p: Problems, hv: HostVars, var: str, why: str) -> str | None:
    if var not in hv.merged:
        p.error(Where("host", hv.name), var, f"missing: {why}")
        return None
    return as_str(p, hv.where(var), var, hv.get(var))


def _platform(p: Problems, hv: HostVars) -> Platform | None:
    """``cr_platform``, or guessed from ``ansible_connection``; ``None`` if unusable."""
    connection = str(hv.get("ansible_connection", "ssh")).lower()
    if "cr_platform" in hv.merged:
        value = one_of(p, hv.where("cr_platform"), "cr_platform", hv.get("cr_platform"),
                       [x.value for x in Platform])
        if value is None:
            return None
        platform = Platform(value)
    else:
        platform = Platform.WINDOWS if connection in WINDOWS_CONNECTIONS else Platform.LINUX
    if platform is Platform.WINDOWS and connection not in WINDOWS_CONNECTIONS:
        p.error(hv.where("ansible_connection"), "ansible_connection",
                f"Windows host without WinRM connection settings (ansible_connection is "
                f"{connection!r}): set ansible_connection: winrm")
        return None
    return platform


def _winrm(p: Problems, hv: HostVars) -> WinRMSettings | None:
    transport = one_of(p, hv.where("ansible_winrm_transport"), "ansible_winrm_transport",
                       hv.get("ansible_winrm_transport", "ntlm"), WINRM_TRANSPORTS)
    port = as_int(p, hv.where("ansible_port"), "ansible_port", hv.get("ansible_port", 5986),
                  minimum=1, maximum=65535)
    scheme = one_of(p, hv.where("ansible_winrm_scheme"), "ansible_winrm_scheme",
                    hv.get("ansible_winrm_scheme", "http" if port == 5985 else "https"),
                    ("http", "https"))
    validation = one_of(p, hv.where("ansible_winrm_server_cert_validation"),
                        "ansible_winrm_server_cert_validation",
                        hv.get("ansible_winrm_server_cert_validation", "validate"),
                        ("validate", "ignore"))
    path = as_str(p, hv.where("ansible_winrm_path"), "ansible_winrm_path",
                  hv.get("ansible_winrm_path", "/wsman"))
    user = None
    if "ansible_user" in hv.merged:
        user = as_str(p, hv.where("ansible_user"), "ansible_user", hv.get("ansible_user"))
    elif transport != "certificate":
        p.error(Where("host", hv.name), "ansible_user",
                "missing: a Windows host needs ansible_user for WinRM")
    password = _password(p, hv, transport)
    certs = {}
    for var in ("ansible_winrm_cert_pem", "ansible_winrm_cert_key_pem", "ansible_winrm_ca_trust_path"):
        if var in hv.merged:
            certs[var] = as_str(p, hv.where(var), var, hv.get(var))
        elif transport == "certificate" and var != "ansible_winrm_ca_trust_path":
            p.error(Where("host", hv.name), var, "missing: transport 'certificate' needs it")
    if None in (transport, port, scheme, validation, path):
        return None
    return WinRMSettings(user=user or "", password=password, transport=transport, port=port,
                         scheme=scheme, path=path, server_cert_validation=validation == "validate",
                         cert_pem=certs.get("ansible_winrm_cert_pem"),
                         cert_key_pem=certs.get("ansible_winrm_cert_key_pem"),
                         ca_trust_path=certs.get("ansible_winrm_ca_trust_path"))


def _password(p: Problems, hv: HostVars, transport: str | None) -> Secret | None:
    for var in PASSWORD_VARS:
        if var in hv.merged:
            return as_secret(p, hv.where(var), var, hv.get(var))
    if transport not in NO_PASSWORD_TRANSPORTS:
        p.error(Where("host", hv.name), "ansible_password",
                f"missing: WinRM transport {transport or 'ntlm'!r} needs ansible_password "
                "(vault-encrypt it)")
    return None


def _ssh(p: Problems, hv: HostVars) -> SshSettings | None:
    user = as_str(p, hv.where("ansible_user"), "ansible_user", hv.get("ansible_user", "root"))
    port = as_int(p, hv.where("ansible_port"), "ansible_port", hv.get("ansible_port", 22),
                  minimum=1, maximum=65535)
    key = None
    for var in ("ansible_ssh_private_key_file", "ansible_private_key_file"):
        if var in hv.merged:
            key = as_str(p, hv.where(var), var, hv.get(var))
            break
    args = hv.get("ansible_ssh_common_args", "")
    if user is None or port is None:
        return None
    return SshSettings(user=user, port=port, private_key_file=key, common_args=str(args or ""))


def sanitized(variables: dict) -> dict:
    """A copy of host variables with every secret wrapped in :class:`Secret`.

    Decrypted vault values already are Secrets; undecrypted ones and plain values of
    secret-looking keys (passwords, TSIG key_secret) are wrapped or masked here, so
    printing ``Host.hostvars`` can never leak them.
    """
    return {key: _sanitize(key, value) for key, value in variables.items()}


def _sanitize(key: object, value: object) -> object:
    if isinstance(value, Secret):
        return value
    if is_vault_blob(value):
        return Secret("")  # still encrypted: nothing to reveal
    if isinstance(value, dict):
        return {k: _sanitize(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sanitize(key, v) for v in value]
    if isinstance(value, str) and any(w in str(key).lower() for w in _SECRET_WORDS):
        return Secret(value)
    return value
