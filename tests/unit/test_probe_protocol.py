"""Pure parsers of the protocol checks: what each answer means."""

from __future__ import annotations

import struct

import pytest

from cr_orchestrator.observe.health import Health
from cr_orchestrator.model import Check, CheckKind
from cr_orchestrator.observe.protocol import (build_prelogin, classify, parse_tds_response,
                                             request_bytes, slow_verdict, subject_of, CheckVerdict)

SMTP, POP3, IMAP = Check(CheckKind.SMTP, 25), Check(CheckKind.POP3, 110), Check(CheckKind.IMAP, 143)
HTTP = Check(CheckKind.HTTP, 80, path="/health", expect_status=204)
SQL, TCP = Check(CheckKind.SQL, 1433), Check(CheckKind.TCP, 3389)


def tds_answer(ptype: int = 0x04, version=(15, 0, 2000)) -> bytes:
    value = struct.pack(">BBHH", *version, 0)
    body = struct.pack(">BHH", 0x00, 11, 6) + struct.pack(">BHH", 0x01, 17, 1) + b"\xff"
    body += value + b"\x02"  # ENCRYPT_NOT_SUP
    return struct.pack(">BBHHBB", ptype, 1, 8 + len(body), 0, 1, 0) + body


CASES = [
    (SMTP, b"220 mail.example ESMTP ready\r\n", Health.OK),
    (SMTP, b"421 4.7.0 Too many connections\r\n", Health.DEGRADED),
    (SMTP, b"554 5.3.2 No service\r\n", Health.DOWN),
    (SMTP, b"SSH-2.0-OpenSSH_9.2\r\n", Health.UNREACHABLE),
    (SMTP, b"", Health.UNREACHABLE),
    (POP3, b"+OK Dovecot ready.\r\n", Health.OK),
    (POP3, b"-ERR [SYS/TEMP] Out of memory\r\n", Health.DEGRADED),
    (POP3, b"220 not pop\r\n", Health.UNREACHABLE),
    (IMAP, b"* OK [CAPABILITY IMAP4rev1] ready\r\n", Health.OK),
    (IMAP, b"* PREAUTH logged in\r\n", Health.OK),
    (IMAP, b"* BYE Too many connections\r\n", Health.DEGRADED),
    (IMAP, b"+OK pop\r\n", Health.UNREACHABLE),
    (HTTP, b"HTTP/1.1 204 No Content\r\n", Health.OK),
    (HTTP, b"HTTP/1.1 200 OK\r\n", Health.DEGRADED),  # not what was asked for
    (HTTP, b"HTTP/1.0 503 Service Unavailable\r\n", Health.DEGRADED),
    (HTTP, b"220 smtp\r\n", Health.UNREACHABLE),
    (SQL, tds_answer(), Health.OK),
    (SQL, tds_answer(ptype=0x12), Health.UNREACHABLE),
    (SQL, b"\x04\x01\x00", Health.UNREACHABLE),
    (TCP, b"", Health.OK),
]


@pytest.mark.parametrize("check,data,health", CASES,
                         ids=[f"{c.kind.value}-{d[:12]!r}" for c, d, _ in CASES])
def test_classify(check, data, health):
    verdict = classify(check=check, data=data)
    assert verdict.health is health
    assert (verdict.error is None) == (health is Health.OK)


def test_prelogin_packet_follows_the_tds_header_and_option_layout():
    packet = build_prelogin()
    ptype, status, length, spid, packet_id, window = struct.unpack_from(">BBHHBB", packet)
    assert (ptype, status, length, spid, packet_id, window) == (0x12, 0x01, len(packet), 0, 1, 0)
    payload = packet[8:]
    options, pos = {}, 0
    while payload[pos] != 0xFF:
        token, offset, size = struct.unpack_from(">BHH", payload, pos)
        options[token] = payload[offset:offset + size]
        pos += 5
    assert set(options) == {0, 1, 2, 3, 4}
    assert len(options[0]) == 6 and options[1] == b"\x02" and options[2] == b"\x00"


def test_tds_response_version_and_encryption():
    assert parse_tds_response(tds_answer(version=(16, 0, 1000))) == {
        "version": "16.0.1000", "encryption": 2}


def test_tds_truncated_option_list_is_an_error():
    broken = struct.pack(">BBHHBB", 4, 1, 11, 0, 1, 0) + b"\x00\x00\x0b"
    with pytest.raises(ValueError, match="truncated"):
        parse_tds_response(broken)


def test_http_request_names_host_and_closes():
    data = request_bytes(check=HTTP, address="198.18.0.11")
    assert data.startswith(b"GET /health HTTP/1.1\r\nHost: 198.18.0.11\r\n")
    assert b"Connection: close" in data and data.endswith(b"\r\n\r\n")
    assert request_bytes(check=SMTP, address="x") == b""


def test_slow_ok_becomes_degraded_but_failures_stay():
    ok = CheckVerdict(Health.OK)
    assert slow_verdict(verdict=ok, elapsed_s=0.9, slow_s=0.5).health is Health.DEGRADED
    assert slow_verdict(verdict=ok, elapsed_s=0.1, slow_s=0.5).health is Health.OK
    down = CheckVerdict(Health.DOWN, "554")
    assert slow_verdict(verdict=down, elapsed_s=0.9, slow_s=0.5) == down


def test_subject_format():
    assert subject_of(SMTP, "198.18.0.100") == "check:smtp:25@198.18.0.100"
