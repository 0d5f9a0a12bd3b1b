"""Wait until a service answers at ADDRESS:PORT (and, given a pattern, greets with it).

Run by playbooks/includes/verify.yml on the controller: a bare Python start is ~10x
cheaper than an Ansible module, and it retries every 0.1 s where wait_for sleeps whole
seconds. Exit 0 when the service answered; 1 with the reason on stderr when it did not
within the deadline.
"""

import argparse
import re
import socket
import sys
import time


def greeting(host: str, port: int, deadline: float) -> str:
    with socket.create_connection((host, port), timeout=min(1.0, max(0.1, deadline - time.monotonic()))) as conn:
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        return conn.recv(512).decode("latin-1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--expect", default="", help="regular expression the greeting must match")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            text = greeting(args.host, args.port, deadline) if args.expect else ""
            if not args.expect:
                socket.create_connection((args.host, args.port), timeout=1.0).close()
            if not args.expect or re.search(args.expect, text):
                print(f"{args.host}:{args.port} answered {text.strip()[:80]!r}")
                return 0
            last = f"greeting {text.strip()[:80]!r} does not match {args.expect!r}"
        except OSError as exc:
            last = exc.strerror or exc.__class__.__name__
        time.sleep(0.1)
    print(f"no answer from {args.host}:{args.port} within {args.timeout:g} s (last: {last})",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
