"""Mail readers for the lab's stories: POP3 and IMAP clients through the shared IP.

Run in the lab's client namespace::

    python -m cr_orchestrator.testworld.lab.mailread --at 198.18.0.100 --every 1 --out read.jsonl

Every ``--every`` seconds each protocol logs in, counts the mailbox (IMAP ``SELECT``,
POP3 ``STAT``) and logs out; each line of ``--out`` is one try: ``proto``, ``t``,
``done``, ``ok``, ``count`` and ``error``. Read-only: it never deletes or flags a
message, so the checker still finds every message where the load left it.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import poplib
import signal
import time
from pathlib import Path


def read_imap(address: str, timeout_s: float) -> int:
    imap = imaplib.IMAP4(address, 143, timeout=timeout_s)
    try:
        imap.login("lab", "lab")
        typ, data = imap.select("INBOX", readonly=True)
        if typ != "OK":
            raise imaplib.IMAP4.error(f"SELECT answered {typ}")
        return int(data[0] or 0)
    finally:
        try:
            imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def read_pop3(address: str, timeout_s: float) -> int:
    pop = poplib.POP3(address, 110, timeout=timeout_s)
    try:
        pop.user("lab")
        pop.pass_("lab")
        return pop.stat()[0]
    finally:
        try:
            pop.quit()
        except (OSError, poplib.error_proto):
            pass


READERS = {"imap": read_imap, "pop3": read_pop3}


def try_once(proto: str, address: str, timeout_s: float) -> dict:
    started = time.time()
    try:
        count = READERS[proto](address, timeout_s)
        return {"proto": proto, "t": started, "done": time.time(), "ok": True,
                "count": count, "error": None}
    except (OSError, imaplib.IMAP4.error, poplib.error_proto, ValueError) as exc:
        return {"proto": proto, "t": started, "done": time.time(), "ok": False,
                "count": None, "error": f"{type(exc).__name__}: {exc}"[:160]}


def read_tries(path: Path) -> list[dict]:
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the last line may be cut by a stop mid-write
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--at", required=True, help="server address (POP3 110, IMAP 143)")
    parser.add_argument("--every", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=900.0)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    # a flag, not a threading.Event: Event.set() from the handler takes the lock the
    # interrupted Event.wait() may hold, and the client hung for good on SIGTERM
    # (a chaos campaign found it still running minutes later)
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(signal.SIGTERM))
    deadline = time.monotonic() + args.duration
    with open(args.out, "a", buffering=1) as out:
        while not stop and time.monotonic() < deadline:
            tick = time.monotonic()
            for proto in READERS:
                out.write(json.dumps(try_once(proto, args.at, args.timeout)) + "\n")
            time.sleep(max(0.0, args.every - (time.monotonic() - tick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
