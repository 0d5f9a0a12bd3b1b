"""The peer's generated bash script, run by a real bash against real loopback servers.

Over SSH it is the same script on the peer (the lab tests cover that path); here bash runs
it locally so the banner reads, deadlines and the result format are proven without a lab.
"""

from __future__ import annotations

import subprocess
from contextlib import ExitStack

from cr_orchestrator.observe.health import Health
from cr_orchestrator.model import Check, CheckKind
from cr_orchestrator.observe import peer
from cr_orchestrator.observe.protocol import CheckTarget

from . import servers


def test_peer_script_judges_like_the_orchestrator():
    with ExitStack() as stack:
        ports = {name: stack.enter_context(servers.serve(h)) for name, h in {
            "smtp": servers.banner(b"220 mail-a ESMTP\r\n"),
            "busy": servers.banner(b"421 busy\r\n"),
            "tds": servers.tds_responder,
            "silent": servers.silent}.items()}
        http_port = stack.enter_context(servers.http_server())
        closed = servers.closed_port()
        plan = [("smtp", Check(CheckKind.SMTP, ports["smtp"]), Health.OK),
                ("busy", Check(CheckKind.SMTP, ports["busy"]), Health.DEGRADED),
                ("tds", Check(CheckKind.SQL, ports["tds"]), Health.OK),
                ("http", Check(CheckKind.HTTP, http_port, path="/busy"), Health.DEGRADED),
                ("silent", Check(CheckKind.SMTP, ports["silent"]), Health.UNREACHABLE),
                ("closed", Check(CheckKind.SMTP, closed), Health.UNREACHABLE),
                ("tcp", Check(CheckKind.TCP, ports["silent"]), Health.OK)]
        targets = [CheckTarget("mail-a", "127.0.0.1", check, "mail") for _, check, _ in plan]
        script = peer.build_linux_script(targets=targets, timeout_s=3.0)
        out = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True,
                             timeout=20)
    answers = peer.parse_answers(out.stdout)
    assert sorted(answers) == list(range(len(plan)))
    for index, (name, _check, health) in enumerate(plan):
        obs = peer.judge(target=targets[index], answer=answers[index], peer="mail-b", at=1.0,
                         timeout_s=3.0)
        assert obs.health is health, (name, obs)
        assert obs.vantage == "mail-b"
    assert answers[4].rc == peer.RC_TIMEOUT and answers[5].rc == peer.RC_REFUSED
