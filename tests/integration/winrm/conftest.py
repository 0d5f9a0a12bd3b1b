"""Shared set-up: real pywinrm against the WS-Man simulator on loopback."""

from __future__ import annotations

import socket

import pytest

from cr_orchestrator.testworld.wsman_sim import WsmanSim
from winrm_testlib import PASSWORD, USER, healthy_state, windows_host, winrm_settings

@pytest.fixture
def sim():
    """A fresh HTTP simulator (Basic and NTLM) per test: state changes stay local."""
    with WsmanSim(users={USER: PASSWORD}, state=healthy_state()) as server:
        yield server


@pytest.fixture(scope="module")
def https_sim():
    with WsmanSim(users={USER: PASSWORD}, state=healthy_state(), https=True) as server:
        yield server


@pytest.fixture
def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def make_settings():
    return winrm_settings


@pytest.fixture
def make_host():
    return windows_host
