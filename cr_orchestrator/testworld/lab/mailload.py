"""Continuous SMTP load for the lab's stories: numbered messages, every reply logged.

Run in the lab's client namespace::

    python -m cr_orchestrator.testworld.lab.mailload --to 198.18.0.100 --every 0.05 --out load.jsonl

Each message has a header ``X-Cr-Load: <run> <seq>`` (and the same in its subject). Each
line of ``--out`` is one attempt, as JSON: ``seq``, ``t`` (start), ``done`` (end),
``code`` (the SMTP code of the reply to the message's data, or null when the attempt
failed before it) and ``error``. Only a ``250`` is an acknowledgement: from then on the
server answers for the message (RFC 5321 §4.1.1.4; RFC 1123 §5.3.3: not lost even across
a crash). A new connection per message, so a client never hides a failover behind a
connection it keeps. Stops at ``--duration`` or on SIGTERM; never sends to any address
but ``--to``.
"""

from __future__ import annotations

import argparse
import json
import signal
import smtplib
import time
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Attempt:
    seq: int
    t: float
    done: float
    code: int | None
    error: str | None

    @property
    def acknowledged(self) -> bool:
        return self.code == 250


def message(run: str, seq: int) -> str:
    return (f"From: load@lab.test\r\nTo: lab@lab.test\r\nSubject: cr-load {run} {seq}\r\n"
            f"X-Cr-Load: {run} {seq}\r\n\r\nmessage {seq} of load run {run}\r\n")


def send_one(address: str, run: str, seq: int, *, timeout_s: float) -> Attempt:
    started = time.time()
    try:
        # local_hostname given: smtplib would ask the resolver for this host's FQDN
        with smtplib.SMTP(address, 25, timeout=timeout_s, local_hostname="load.lab.test") as smtp:
            smtp.ehlo()
            smtp.mail("load@lab.test")
            smtp.rcpt("lab@lab.test")
            code, _ = smtp.data(message(run, seq).encode())
        return Attempt(seq, started, time.time(), code, None if code == 250 else "not 250")
    except (OSError, smtplib.SMTPException) as exc:
        code = getattr(exc, "smtp_code", None)
        return Attempt(seq, started, time.time(), code if isinstance(code, int) else None,
                       f"{type(exc).__name__}: {exc}"[:160])


def read_attempts(path: Path) -> list[Attempt]:
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            continue  # blank, or the last line of a client killed mid-write
        out.append(Attempt(raw["seq"], raw["t"], raw["done"], raw["code"], raw["error"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--to", required=True, help="SMTP server address (port 25)")
    parser.add_argument("--every", type=float, default=0.05, help="seconds between sends")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per attempt")
    parser.add_argument("--duration", type=float, default=900.0, help="stop after this")
    parser.add_argument("--run", default=uuid.uuid4().hex[:8], help="run id in each message")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    # a flag, not a threading.Event: Event.set() from the handler takes the lock the
    # interrupted Event.wait() may hold, and the client hung for good on SIGTERM
    # (a chaos campaign found it still running minutes later)
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(signal.SIGTERM))
    deadline = time.monotonic() + args.duration
    seq = 0
    with open(args.out, "a", buffering=1) as out:
        next_at = time.monotonic()
        while not stop and time.monotonic() < deadline:
            seq += 1
            attempt = send_one(args.to, args.run, seq, timeout_s=args.timeout)
            out.write(json.dumps(attempt.__dict__) + "\n")
            next_at = max(next_at + args.every, time.monotonic())
            time.sleep(max(0.0, next_at - time.monotonic()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
