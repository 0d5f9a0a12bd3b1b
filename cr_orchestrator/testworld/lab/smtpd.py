"""The lab's SMTP server: accepts every message and delivers it into one Maildir.

The MDaemon stand-in's inbound half (Dovecot serves the same Maildir over POP3/IMAP).
Run inside a lab host by its control script::

    python -m cr_orchestrator.testworld.lab.smtpd --maildir /srv/mail/Maildir --port 25 --pidfile F

The pid file is written only once the socket listens, so "pid file present" means
"accepting connections".
"""

from __future__ import annotations

import argparse
import asyncio
import mailbox
import os
import signal
import socket
import time

from aiosmtpd.smtp import SMTP, Envelope, Session


class MaildirHandler:
    """aiosmtpd handler: each accepted message becomes one file in ``maildir``/new."""

    def __init__(self, maildir: str) -> None:
        self.maildir = maildir

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        # Who accepted it, and when: a story's checker can tell whether two hosts ever
        # acknowledged mail at the same time (a trace header, as a real MTA's Received:).
        content = (f"X-Cr-Lab-Accepted: {socket.gethostname()} {time.time():.3f}\r\n"
                   .encode() + content)
        # mailbox.Maildir writes tmp/ then renames into new/: readers never see half a file
        key = mailbox.Maildir(self.maildir, create=True).add(content)
        return f"250 OK delivered as {key}"


def _drop_to_owner_of(maildir: str) -> None:
    """Once port 25 is bound, run as the Maildir's owner so Dovecot can serve what we write."""
    st = os.stat(maildir)
    if os.geteuid() == 0 and st.st_uid != 0:
        os.setgroups([])
        os.setgid(st.st_gid)
        os.setuid(st.st_uid)


async def serve(*, maildir: str, host: str, port: int, pidfile: str | None) -> None:
    loop = asyncio.get_running_loop()
    handler = MaildirHandler(maildir)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname=socket.gethostname(), enable_SMTPUTF8=True),
        host=host, port=port, reuse_address=True)
    if pidfile:  # written while still root (the run dir is root's); mailctl removes it
        tmp = f"{pidfile}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, pidfile)
    _drop_to_owner_of(maildir)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
    # Every message is already in the Maildir (written to tmp/, then renamed): nothing is
    # left to flush. Leave at once instead of waiting for asyncio's executor shutdown,
    # which made a stop take ~1.7 s, and a failover with it.
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Lab SMTP server delivering into a Maildir")
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--pidfile")
    args = parser.parse_args(argv)
    mailbox.Maildir(args.maildir, create=True)
    asyncio.run(serve(maildir=args.maildir, host=args.host, port=args.port, pidfile=args.pidfile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
