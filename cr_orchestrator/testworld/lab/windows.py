"""The lab's "Windows" hosts: a host kind that runs a given command as its service.

By default that command is the WS-Man simulator (``python -m cr_orchestrator.testworld.wsman_sim``)
listening on the host's addresses, port 5985 (HTTP, basic auth), with a per-host state
file the tests may rewrite (``windows.state_path``). Any other command can be given with
``Lab.up(service_argv=[...])``; placeholders: {host}, {address}, {cluster_address},
{hostdir} (the host's lab directory), {data} (/srv), {lab}.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import sys

from cr_orchestrator.testworld.lab.plan import LAB_ROOT

WSMAN_PORT = 5985
WSMAN_USER = "Administrator"
PASSWORD_ENV = "CR_WSMAN_SIM_PASSWORD"


def default_service_argv() -> list[str] | None:
    """The WS-Man simulator's command line, or None when that module is not installed."""
    if importlib.util.find_spec("cr_orchestrator.testworld.wsman_sim") is None:
        return None
    return [sys.executable, "-m", "cr_orchestrator.testworld.wsman_sim", "--listen",
            f"0.0.0.0:{WSMAN_PORT}", "--state", "{hostdir}/etc/wsman-state.json"]


def password_path(name: str) -> str:
    return f"{LAB_ROOT}/{name}/windows.password"


def password(name: str) -> str:
    """The lab's Windows password (random per lab, mode 0600); never printed."""
    path = password_path(name)
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(18) + "\n")
    with open(path) as f:
        return f.read().strip()


def state_path(name: str, host: str) -> str:
    """The simulator's JSON state file of HOST (re-read by the simulator when it changes)."""
    return f"{LAB_ROOT}/{name}/hosts/{host}/etc/wsman-state.json"


def prepare_host(name: str, host: str) -> None:
    path = state_path(name, host)
    if not os.path.exists(path):
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"hostname": host.upper(), "services": {"MDaemon": "Running"}}, f)
        os.replace(tmp, path)


def service_env(name: str) -> dict[str, str]:
    return {PASSWORD_ENV: password(name)}


def inventory_vars(name: str) -> dict:
    return {"ansible_connection": "winrm", "ansible_port": WSMAN_PORT,
            "ansible_winrm_scheme": "http", "ansible_winrm_transport": "basic",
            "ansible_user": WSMAN_USER, "ansible_password": password(name),
            "ansible_winrm_server_cert_validation": "ignore"}
