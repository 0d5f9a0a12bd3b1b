"""A WS-Management (WinRM shell) test server that behaves like a scripted Windows host.

Real HTTP(S) on a real socket, SOAP 1.2 over POST /wsman, Basic and NTLM (with message
encryption over HTTP) authentication, self-signed TLS. Used by the integration tests with
real pywinrm, by the benchmark, and by the lab (``python -m cr_orchestrator.testworld.wsman_sim``).
See docs/windows.md for what it proves and what it does not.
"""

from cr_orchestrator.testworld.wsman_sim.host import HostState, ReceivedCommand, Reply, decode_powershell
from cr_orchestrator.testworld.wsman_sim.replay import ReplayEngine
from cr_orchestrator.testworld.wsman_sim.server import WsmanSim, make_self_signed_cert

__all__ = ["HostState", "ReceivedCommand", "Reply", "ReplayEngine", "WsmanSim", "decode_powershell",
           "make_self_signed_cert"]
