"""The Windows peer path through real pywinrm and the WS-Man simulator.

What this proves: the generated PowerShell travels through WinRMShell.run_ps within the
peer's deadline, its target table carries the right addresses, ports and request bytes,
and the CRPEER lines it prints are parsed and judged. What it does NOT prove: that real
PowerShell runs the script. The simulator's handler below stands in for PowerShell by
doing in Python what the script says (connect, send, read); there is no Windows host here.
"""

from __future__ import annotations

import base64
import re
import socket
import time
from contextlib import ExitStack

import pytest

from cr_orchestrator import model
from cr_orchestrator.observe.health import Health
from cr_orchestrator.model import Check, CheckKind
from cr_orchestrator.observe import peer
from cr_orchestrator.observe.protocol import CheckTarget
from cr_orchestrator.testworld.wsman_sim import HostState, Reply, WsmanSim

from . import servers

USER, PASSWORD = "Administrator", "Peer-Pa55!"
ROW = re.compile(r"@\((\d+), '((?:[^']|'')*)', (\d+), '([A-Za-z0-9+/=]*)', '(line|bytes|none)'\)")


def _read(sock: socket.socket, mode: str) -> bytes:
    data = b""
    while mode != "none" and len(data) < peer.READ_LIMIT:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
        if mode == "line" and chunk == b"\n":
            break
        if mode == "bytes" and len(data) >= 8 and len(data) >= data[2] * 256 + data[3]:
            break
    return data


def stand_in_for_powershell(call) -> Reply:
    """Do what each row of the script's target table asks, print what the script prints."""
    lines = []
    for index, address, port, payload, mode in ROW.findall(call.text):
        started = time.monotonic()
        rc, data = 0, b""
        try:
            with socket.create_connection((address.replace("''", "'"), int(port)), 1.0) as s:
                s.settimeout(1.0)
                s.sendall(base64.b64decode(payload))
                data = _read(s, mode)
        except TimeoutError:
            rc = 124
        except OSError:
            rc = 111
        ms = int((time.monotonic() - started) * 1000)
        lines.append(f"CRPEER {index} {rc} {ms} {base64.b64encode(data).decode()}")
    return Reply(stdout="\n".join(lines) + "\n")


def _peer_host(sim: WsmanSim) -> model.Host:
    settings = model.WinRMSettings(user=USER, password=model.Secret(PASSWORD), transport="basic",
                                   port=sim.port, scheme="http", path="/wsman",
                                   server_cert_validation=True)
    return model.Host("win-b", "site-a", model.Platform.WINDOWS, "127.0.0.1", "127.0.0.1",
                      "127.0.0.1", winrm=settings)


@pytest.fixture
def sim():
    with WsmanSim(users={USER: PASSWORD}, state=HostState()) as server:
        yield server


def test_windows_peer_reads_banners_through_winrm(sim):
    sim.register("CRPEER", stand_in_for_powershell)
    with ExitStack() as stack:
        smtp = stack.enter_context(servers.serve(servers.banner(b"220 win-a ESMTP\r\n")))
        tds = stack.enter_context(servers.serve(servers.tds_responder))
        targets = [CheckTarget("win-a", "127.0.0.1", Check(CheckKind.SMTP, smtp), "MDaemon"),
                   CheckTarget("win-a", "127.0.0.1", Check(CheckKind.SQL, tds), "MSSQLSERVER"),
                   CheckTarget("win-a", "127.0.0.1", Check(CheckKind.SMTP, servers.closed_port()),
                               "MDaemon")]
        obs = peer.probe_from_peer(peer=_peer_host(sim), targets=targets, timeout_s=3.0, at=7.0)
    assert [o.health for o in obs] == [Health.OK, Health.OK, Health.UNREACHABLE], obs
    assert all(o.vantage == "win-b" and o.at == 7.0 for o in obs)
    assert obs[1].detail["version"] == "16.0.1000"
    assert PASSWORD not in repr(obs)


def test_hung_windows_peer_says_nothing_about_the_target(sim):
    sim.register("CRPEER", Reply(hang=True))
    targets = [CheckTarget("win-a", "127.0.0.1", Check(CheckKind.SMTP, 25), "MDaemon")]
    started = time.monotonic()
    obs = peer.probe_from_peer(peer=_peer_host(sim), targets=targets, timeout_s=1.0, at=7.0)
    assert time.monotonic() - started < 6.0  # the deadline held (generous on a busy machine)
    assert [(o.subject, o.health) for o in obs] == [("vantage", Health.UNREACHABLE)]
    assert "could not run its checks" in obs[0].error
