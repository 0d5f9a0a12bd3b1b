"""Protocol checks of a service itself: does it greet, answer, serve?

Each check connects to one address and port, speaks just enough of the protocol to tell
"serving" from "reachable but not ready" from "not there", and returns an
:class:`~cr_orchestrator.observe.health.Observation`. Checks never raise and never outlive their
deadline. Many checks run concurrently on one asyncio loop (:func:`run_checks`).

The parsers (``classify_*``, :func:`build_prelogin`, :func:`parse_tds_response`) are pure
so the peer vantage (:mod:`cr_orchestrator.observe.peer`) classifies the bytes a peer read
with exactly the same rules.

SQL Server: the check sends a TDS PRELOGIN packet and expects a tabular-result packet
(type 0x04) carrying PRELOGIN options. It is built from the MS-TDS specification and tested
against an in-test responder, not against a real SQL Server.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypedDict

from cr_orchestrator.observe.health import ORCHESTRATOR, Health, Observation
from cr_orchestrator.model import Check, CheckKind

MAX_READ = 4096  # a greeting or status line is short; never buffer more than this

# TDS (MS-TDS 2.2.3.1 packet header, 2.2.6.5 PRELOGIN)
TDS_PRELOGIN = 0x12
TDS_TABULAR_RESULT = 0x04
TDS_STATUS_EOM = 0x01
TDS_HEADER = struct.Struct(">BBHHBB")  # type, status, length, spid, packet id, window
PL_VERSION, PL_ENCRYPTION, PL_INSTOPT, PL_THREADID, PL_MARS, PL_TERMINATOR = (
    0x00, 0x01, 0x02, 0x03, 0x04, 0xFF)
ENCRYPT_NOT_SUP = 0x02


@dataclass(frozen=True)
class CheckVerdict:
    """What a protocol response means: a health, a reason when not OK, and details."""

    health: Health
    error: str | None = None
    detail: Mapping[str, object] = field(default_factory=dict)  # goes into Observation.detail


@dataclass(frozen=True)
class CheckTarget:
    """One check to run: which host it belongs to, at which address, for which service."""

    host: str
    address: str
    check: Check
    service: str | None = None
    target: str = "host"  # "host" (the host's own service address) or "shared_ip"


def subject_of(check: Check, address: str) -> str:
    """The Observation subject of a check: ``check:<kind>:<port>@<address>``."""
    return f"check:{check.kind.value}:{check.port}@{address}"


# ---------------------------------------------------------------- what to send, how much to read
def build_prelogin() -> bytes:
    """A minimal TDS PRELOGIN packet (version, no encryption, no instance, no MARS)."""
    options = [
        (PL_VERSION, struct.pack(">BBHH", 0, 0, 0, 0)),
        (PL_ENCRYPTION, bytes([ENCRYPT_NOT_SUP])),
        (PL_INSTOPT, b"\x00"),
        (PL_THREADID, struct.pack(">I", 0)),
        (PL_MARS, b"\x00"),
    ]
    offset = len(options) * 5 + 1  # each option token is 5 bytes, plus the terminator
    tokens, data = b"", b""
    for token, value in options:
        tokens += struct.pack(">BHH", token, offset + len(data), len(value))
        data += value
    payload = tokens + bytes([PL_TERMINATOR]) + data
    header = TDS_HEADER.pack(TDS_PRELOGIN, TDS_STATUS_EOM, TDS_HEADER.size + len(payload), 0, 1, 0)
    return header + payload


def request_bytes(*, check: Check, address: str) -> bytes:
    """What the client sends first (empty for protocols where the server speaks first)."""
    if check.kind in (CheckKind.HTTP, CheckKind.HTTPS):
        host = f"[{address}]" if ":" in address else address
        return (f"GET {check.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cr-orchestrator\r\n"
                "Connection: close\r\n\r\n").encode("ascii")
    if check.kind is CheckKind.SQL:
        return build_prelogin()
    return b""


def reads_line(check: Check) -> bool:
    """True when the answer to judge is the first line; False for TDS's binary packet."""
    return check.kind is not CheckKind.SQL


# ---------------------------------------------------------------- pure classifiers
def _first_line(data: bytes) -> str:
    return data.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")[:200]


def classify_smtp(data: bytes) -> CheckVerdict:
    """SMTP greeting: 220 ready; 4xx (421 busy) not ready; 5xx (554) refuses service."""
    line = _first_line(data)
    code = line[:3]
    if not code.isdigit():
        return CheckVerdict(Health.UNREACHABLE, f"not an SMTP greeting: {line!r}")
    if code == "220":
        return CheckVerdict(Health.OK, detail={"greeting": line})
    if code.startswith("4"):
        return CheckVerdict(Health.DEGRADED, f"SMTP greeting {line!r} (temporarily not ready)")
    if code.startswith("5"):
        return CheckVerdict(Health.DOWN, f"SMTP greeting {line!r} (no service)")
    return CheckVerdict(Health.UNREACHABLE, f"unexpected SMTP greeting {line!r}")


def classify_pop3(data: bytes) -> CheckVerdict:
    """POP3 greeting: ``+OK`` ready, ``-ERR`` (e.g. [SYS/TEMP]) reachable but not ready."""
    line = _first_line(data)
    if line.startswith("+OK"):
        return CheckVerdict(Health.OK, detail={"greeting": line})
    if line.startswith("-ERR"):
        return CheckVerdict(Health.DEGRADED, f"POP3 greeting {line!r}")
    return CheckVerdict(Health.UNREACHABLE, f"not a POP3 greeting: {line!r}")


def classify_imap(data: bytes) -> CheckVerdict:
    """IMAP greeting: ``* OK``/``* PREAUTH`` ready, ``* BYE`` refusing for now."""
    line = _first_line(data)
    upper = line.upper()
    if upper.startswith("* OK") or upper.startswith("* PREAUTH"):
        return CheckVerdict(Health.OK, detail={"greeting": line})
    if upper.startswith("* BYE"):
        return CheckVerdict(Health.DEGRADED, f"IMAP greeting {line!r}")
    return CheckVerdict(Health.UNREACHABLE, f"not an IMAP greeting: {line!r}")


def classify_http(data: bytes, *, expect_status: int) -> CheckVerdict:
    """HTTP status line: the expected status is OK, 5xx not ready, any other status wrong."""
    line = _first_line(data)
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return CheckVerdict(Health.UNREACHABLE, f"not an HTTP status line: {line!r}")
    status = int(parts[1])
    detail = {"status": status}
    if status == expect_status:
        return CheckVerdict(Health.OK, detail=detail)
    if status >= 500:
        return CheckVerdict(Health.DEGRADED, f"HTTP {status}, expected {expect_status}", detail)
    return CheckVerdict(Health.DEGRADED, f"HTTP {status}, expected {expect_status}", detail)


class TdsInfo(TypedDict, total=False):
    """What a PRELOGIN response said (the options present in it)."""

    version: str  # "major.minor.build"
    encryption: int  # the ENCRYPTION option's value


def parse_tds_response(data: bytes) -> TdsInfo:
    """Parse a PRELOGIN response packet; raise ValueError naming what is wrong."""
    if len(data) < TDS_HEADER.size:
        raise ValueError(f"short TDS packet ({len(data)} bytes)")
    ptype, _status, length, _spid, _pid, _win = TDS_HEADER.unpack_from(data)
    if ptype != TDS_TABULAR_RESULT:
        raise ValueError(f"TDS packet type 0x{ptype:02x}, expected 0x04")
    if length < TDS_HEADER.size:
        raise ValueError(f"TDS packet length {length} is shorter than its header")
    payload = data[TDS_HEADER.size:length]
    result: TdsInfo = {}
    pos = 0
    while pos < len(payload) and payload[pos] != PL_TERMINATOR:
        if pos + 5 > len(payload):
            raise ValueError("truncated PRELOGIN option list")
        token, offset, size = struct.unpack_from(">BHH", payload, pos)
        value = payload[offset:offset + size]
        if token == PL_VERSION and len(value) >= 4:
            major, minor, build = struct.unpack_from(">BBH", value)
            result["version"] = f"{major}.{minor}.{build}"
        elif token == PL_ENCRYPTION and value:
            result["encryption"] = value[0]
        pos += 5
    return result


def classify_tds(data: bytes) -> CheckVerdict:
    """A PRELOGIN answer (type 0x04) means the SQL Server network layer is serving."""
    try:
        info = parse_tds_response(data)
    except ValueError as exc:
        return CheckVerdict(Health.UNREACHABLE, f"not a TDS PRELOGIN response: {exc}")
    return CheckVerdict(Health.OK, detail=info)


def classify(*, check: Check, data: bytes) -> CheckVerdict:
    """Judge the bytes a server sent for ``check`` (the same rules from every vantage)."""
    if check.kind is CheckKind.TCP:
        return CheckVerdict(Health.OK)
    if not data:
        return CheckVerdict(Health.UNREACHABLE, "connection closed without an answer")
    if check.kind is CheckKind.SMTP:
        return classify_smtp(data)
    if check.kind is CheckKind.POP3:
        return classify_pop3(data)
    if check.kind is CheckKind.IMAP:
        return classify_imap(data)
    if check.kind in (CheckKind.HTTP, CheckKind.HTTPS):
        return classify_http(data, expect_status=check.expect_status)
    return classify_tds(data)


def slow_verdict(*, verdict: CheckVerdict, elapsed_s: float, slow_s: float) -> CheckVerdict:
    """An OK answer that took longer than ``slow_s`` is reachable but not ready."""
    if verdict.health is Health.OK and elapsed_s > slow_s:
        return CheckVerdict(Health.DEGRADED, f"answered after {elapsed_s:.2f}s (slow above {slow_s:.2f}s)",
                       verdict.detail)
    return verdict


# ---------------------------------------------------------------- doing it
async def _read_answer(reader: asyncio.StreamReader, check: Check) -> bytes:
    if reads_line(check):
        try:
            return await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial
        except asyncio.LimitOverrunError:
            return await reader.read(MAX_READ)
    header = await reader.read(MAX_READ)
    while header and len(header) < TDS_HEADER.size:
        more = await reader.read(MAX_READ)
        if not more:
            break
        header += more
    if len(header) >= TDS_HEADER.size and header[0] == TDS_TABULAR_RESULT:
        length = TDS_HEADER.unpack_from(header)[2]
        while len(header) < min(length, MAX_READ):
            more = await reader.read(MAX_READ)
            if not more:
                break
            header += more
    return header


async def _speak(target: CheckTarget) -> tuple[bytes, float]:
    """Connect, send, read; return the answer and the connect time."""
    check = target.check
    tls = _unverified_tls() if check.kind is CheckKind.HTTPS else None
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(target.address, check.port, ssl=tls,
                                                   limit=MAX_READ)
    connect_s = time.monotonic() - started
    try:
        payload = request_bytes(check=check, address=target.address)
        if payload:
            writer.write(payload)
            await writer.drain()
        data = b"" if check.kind is CheckKind.TCP else await _read_answer(reader, check)
    finally:
        writer.close()
    return data, connect_s


@functools.lru_cache(maxsize=1)
def _unverified_tls() -> ssl.SSLContext:
    """The TLS settings of an HTTPS check, made once per process (a context loads the
    system's CA certificates: milliseconds of CPU that every check paid). A liveness
    check sends no secret, so a self-signed certificate must not fail it."""
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    return tls


async def check_async(*, target: CheckTarget, timeout_s: float, at: float | None = None,
                      slow_s: float | None = None) -> Observation:
    """Run one protocol check within ``timeout_s``; never raises."""
    at = time.time() if at is None else at
    slow_s = timeout_s / 2 if slow_s is None else slow_s
    started = time.monotonic()
    detail: dict[str, object] = {"address": target.address, "port": target.check.port,
                                 "target": target.target}
    if target.service:
        detail["service"] = target.service
    try:
        async with asyncio.timeout(timeout_s):
            data, connect_s = await _speak(target)
        detail["connect_s"] = round(connect_s, 4)
        elapsed = time.monotonic() - started
        verdict = slow_verdict(verdict=classify(check=target.check, data=data), elapsed_s=elapsed, slow_s=slow_s)
        health, error = verdict.health, verdict.error
        detail.update(verdict.detail)
    except TimeoutError:
        health, error = Health.UNREACHABLE, f"no answer within {timeout_s:.1f}s"
    except ConnectionRefusedError:
        health, error = Health.UNREACHABLE, "connection refused"
        detail["refused"] = True
    except (OSError, ssl.SSLError, EOFError, ValueError, socket.gaierror) as exc:
        health, error = Health.UNREACHABLE, f"{type(exc).__name__}: {exc}"[:200]
    return Observation(host=target.host, vantage=ORCHESTRATOR,
                       subject=subject_of(target.check, target.address), health=health, at=at,
                       latency_s=round(time.monotonic() - started, 4), error=error, detail=detail)


async def run_checks_async(*, targets: list[CheckTarget], timeout_s: float,
                           at: float | None = None) -> list[Observation]:
    """Run every check concurrently; the whole batch ends within about ``timeout_s``."""
    return list(await asyncio.gather(
        *(check_async(target=t, timeout_s=timeout_s, at=at) for t in targets)))


def run_checks(*, targets: list[CheckTarget], timeout_s: float,
               at: float | None = None) -> list[Observation]:
    """Blocking wrapper of :func:`run_checks_async` (on the process's check loop; call
    from any thread but that loop's)."""
    if not targets:
        return []
    return asyncio.run_coroutine_threadsafe(
        run_checks_async(targets=targets, timeout_s=timeout_s, at=at), _loop()).result()


_LOOP_LOCK = threading.Lock()
_LOOP: tuple[int, asyncio.AbstractEventLoop] | None = None


def _loop() -> asyncio.AbstractEventLoop:
    """The process's event loop for checks, in a daemon thread: a new loop per round
    (``asyncio.run``) cost about a millisecond of CPU to make and close
    (bench/profile_round.py). A forked child (a Celery pool process) makes its own:
    threads do not survive fork."""
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or _LOOP[0] != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="cr-checks", daemon=True).start()
            _LOOP = (os.getpid(), loop)
        return _LOOP[1]
