"""Helpers of the WinRM integration tests (a unique module name: no clash with `winrm`)."""

from __future__ import annotations

from cr_orchestrator import model
from cr_orchestrator.testworld.wsman_sim import HostState, WsmanSim

USER = "Administrator"
PASSWORD = "S3cret-Pa55!"  # asserted absent from every error message


def winrm_settings(sim: WsmanSim | None = None, *, port: int | None = None, transport: str = "basic",
                   password: str = PASSWORD, https: bool | None = None, validate: bool = True,
                   ca: str | None = None) -> model.WinRMSettings:
    https = sim.https if https is None and sim is not None else bool(https)
    return model.WinRMSettings(
        user=USER, password=model.Secret(password), transport=transport,
        port=port if port is not None else sim.port, scheme="https" if https else "http", path="/wsman",
        server_cert_validation=validate, ca_trust_path=ca)


def windows_host(settings: model.WinRMSettings, name: str = "win1") -> model.Host:
    return model.Host(name=name, site="site-a", platform=model.Platform.WINDOWS,
                      management_address="127.0.0.1", cluster_address="127.0.0.1",
                      service_address="127.0.0.1", winrm=settings)


def healthy_state() -> HostState:
    return HostState(hostname="WIN1", services={"MDaemon": "Running", "W3SVC": "Running"},
                     volumes={"C:\\": {"free": 40 << 30, "size": 100 << 30},
                              "D:\\": {"free": 200 << 30, "size": 500 << 30}})
