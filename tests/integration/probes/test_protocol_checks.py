"""Protocol checks against real servers on loopback, all run concurrently in one batch."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from aiosmtpd.controller import Controller

from cr_orchestrator.observe.health import Health
from cr_orchestrator.model import Check, CheckKind
from cr_orchestrator.observe.protocol import CheckTarget, run_checks

from . import servers

TIMEOUT_S = 2.0  # slow above 1.0 s: generous for a loaded 2-core machine


class _Sink:
    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        return "250 OK"


@pytest.fixture(scope="module")
def results():
    """Start every server, run every check in ONE concurrent batch, keep results by name."""
    with ExitStack() as stack:
        smtp_port = servers.closed_port()  # a free port: aiosmtpd's self-test needs a real one
        smtp = Controller(_Sink(), hostname="127.0.0.1", port=smtp_port)
        smtp.start()
        stack.callback(smtp.stop)
        ports = {
            name: stack.enter_context(servers.serve(handler)) for name, handler in {
                "smtp_busy": servers.banner(b"421 4.3.2 too busy, try later\r\n"),
                "smtp_refuses": servers.banner(b"554 no SMTP service here\r\n"),
                "smtp_slow": servers.banner(b"220 slow.example ESMTP\r\n", delay_s=1.4),
                "pop3": servers.banner(b"+OK Dovecot ready.\r\n"),
                "pop3_err": servers.banner(b"-ERR [SYS/TEMP] try again\r\n"),
                "imap": servers.banner(b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n"),
                "imap_bye": servers.banner(b"* BYE too many connections\r\n"),
                "garbage": servers.banner(b"\x00\x01\x02 hello?\r\n"),
                "tds": servers.tds_responder,
                "silent": servers.silent,
            }.items()}
        http_port = stack.enter_context(servers.http_server())
        closed = servers.closed_port()
        plan = {
            "smtp": Check(CheckKind.SMTP, smtp_port),
            "smtp_busy": Check(CheckKind.SMTP, ports["smtp_busy"]),
            "smtp_refuses": Check(CheckKind.SMTP, ports["smtp_refuses"]),
            "smtp_slow": Check(CheckKind.SMTP, ports["smtp_slow"]),
            "pop3": Check(CheckKind.POP3, ports["pop3"]),
            "pop3_err": Check(CheckKind.POP3, ports["pop3_err"]),
            "imap": Check(CheckKind.IMAP, ports["imap"]),
            "imap_bye": Check(CheckKind.IMAP, ports["imap_bye"]),
            "http": Check(CheckKind.HTTP, http_port),
            "http_503": Check(CheckKind.HTTP, http_port, path="/busy"),
            "http_404": Check(CheckKind.HTTP, http_port, path="/missing"),
            "tds": Check(CheckKind.SQL, ports["tds"]),
            "tds_on_smtp": Check(CheckKind.SQL, smtp_port),
            "smtp_on_garbage": Check(CheckKind.SMTP, ports["garbage"]),
            "tcp": Check(CheckKind.TCP, ports["silent"]),
            "silent_smtp": Check(CheckKind.SMTP, ports["silent"]),
            "silent_sql": Check(CheckKind.SQL, ports["silent"]),
            "closed": Check(CheckKind.SMTP, closed),
        }
        names = list(plan)
        targets = [CheckTarget("h1", "127.0.0.1", plan[n], "svc") for n in names]
        observations = run_checks(targets=targets, timeout_s=TIMEOUT_S, at=123.0)
        yield dict(zip(names, observations))


EXPECTED = {
    "smtp": (Health.OK, None),
    "smtp_busy": (Health.DEGRADED, "421"),
    "smtp_refuses": (Health.DOWN, "554"),
    "smtp_slow": (Health.DEGRADED, "answered after"),
    "pop3": (Health.OK, None),
    "pop3_err": (Health.DEGRADED, "-ERR"),
    "imap": (Health.OK, None),
    "imap_bye": (Health.DEGRADED, "BYE"),
    "http": (Health.OK, None),
    "http_503": (Health.DEGRADED, "HTTP 503"),
    "http_404": (Health.DEGRADED, "HTTP 404, expected 200"),
    "tds": (Health.OK, None),
    "tds_on_smtp": (Health.UNREACHABLE, "not a TDS PRELOGIN response"),
    "smtp_on_garbage": (Health.UNREACHABLE, "not an SMTP greeting"),
    "tcp": (Health.OK, None),
    "silent_smtp": (Health.UNREACHABLE, "no answer within 2.0s"),
    "silent_sql": (Health.UNREACHABLE, "no answer within 2.0s"),
    "closed": (Health.UNREACHABLE, "connection refused"),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_check(results, name):
    health, error_part = EXPECTED[name]
    obs = results[name]
    assert obs.health is health, obs
    if error_part is None:
        assert obs.error is None
    else:
        assert error_part in obs.error
    assert obs.host == "h1" and obs.at == 123.0 and obs.vantage == "orchestrator"
    assert obs.subject == f"check:{obs.subject.split(':')[1]}:{obs.detail['port']}@127.0.0.1"
    assert obs.detail["service"] == "svc"


def test_deadline_holds_for_a_listener_that_never_speaks(results):
    # Generous bound: the point is "about the deadline", not "5 s until the server gives up".
    assert results["silent_smtp"].latency_s < TIMEOUT_S + 1.0


def test_tds_answer_is_parsed(results):
    assert results["tds"].detail["version"] == "16.0.1000"
    assert results["tds"].detail["encryption"] == 2


def test_http_status_is_recorded(results):
    assert results["http_503"].detail["status"] == 503
