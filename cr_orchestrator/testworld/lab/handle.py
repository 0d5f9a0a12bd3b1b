"""What the fault injector and the status report need of a running lab.

A Protocol, so that :mod:`.faults` and :mod:`.report` depend on this and not on
:mod:`.core` (which uses them): no import cycle between the lab's modules."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from cr_orchestrator.testworld.lab.plan import LabPlan


@dataclass(frozen=True)
class HostAddresses:
    """Where a lab host is reachable: ``public`` (service/clients), ``cluster`` (management)."""

    public: str
    cluster: str
    site: str
    role: str
    namespace: str
    platform: str


class LabHandle(Protocol):
    plan: LabPlan
    service_argv: list[str] | None

    @property
    def name(self) -> str: ...
    @property
    def state_dir(self) -> str: ...
    @property
    def inventory_path(self) -> str: ...
    @property
    def mailctl(self) -> str: ...
    @property
    def hosts(self) -> dict[str, HostAddresses]: ...
    @property
    def shared_ip(self) -> str: ...
    @property
    def dns_server(self) -> str: ...
    @property
    def dns_name(self) -> str: ...
    @property
    def client_address(self) -> str: ...
    @property
    def root_addresses(self) -> tuple[str, ...]: ...

    def locked(self) -> AbstractContextManager[None]: ...
    def read_state(self) -> dict: ...
    def write_state(self, values: dict) -> None: ...
    def pid(self, key: str) -> int | None: ...
    def faults(self) -> dict: ...
    def run_on(self, host: str, cmd: str | Sequence[str], *, timeout: float = 30.0,
               check: bool = False, input: str | None = None
               ) -> subprocess.CompletedProcess[str]: ...
