"""Run one scripted Windows host over WS-Management (the lab's Windows stand-in).

``python -m cr_orchestrator.testworld.wsman_sim --listen ADDR:PORT --state FILE.json``

The state file (JSON, keys of :class:`~cr_orchestrator.testworld.wsman_sim.host.HostState`) is
re-read whenever its modification time changes, so the lab changes the host by rewriting
it (write a temporary file and rename it over, so the server never reads half a file).
The password is read from the environment variable named by ``--password-env``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from cr_orchestrator.testworld.wsman_sim.host import HostState
from cr_orchestrator.testworld.wsman_sim.server import WsmanSim


class StateFile:
    """Loads a HostState from JSON, again only when the file's mtime changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._state = self._read()

    def _read(self) -> HostState:
        st = os.stat(self.path)
        with open(self.path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict):
            raise ValueError(f"{self.path}: the state file must hold a JSON object")
        try:
            state = HostState.from_dict(data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{self.path}: {e}") from e
        self._stamp = (st.st_mtime_ns, st.st_size)
        return state

    def __call__(self) -> HostState:
        with self._lock:
            try:
                st = os.stat(self.path)
                if (st.st_mtime_ns, st.st_size) != self._stamp:
                    self._state = self._read()
            except (OSError, ValueError) as e:
                # Keep serving the last good state; say why on stderr once per change.
                print(f"wsman_sim: keeping previous state: {e}", file=sys.stderr)
                self._stamp = None
            return self._state


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen must be ADDR:PORT, got {text!r}")
    return host or "0.0.0.0", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cr_orchestrator.testworld.wsman_sim",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=_parse_listen, required=True, help="ADDR:PORT, e.g. 198.18.0.11:5985")
    parser.add_argument("--state", required=True, help="JSON state file of the host (re-read on change)")
    parser.add_argument("--user", default="Administrator", help="accepted user name (default: Administrator)")
    parser.add_argument("--password-env", default="CR_WSMAN_SIM_PASSWORD",
                        help="environment variable holding the password (default: CR_WSMAN_SIM_PASSWORD)")
    parser.add_argument("--https", action="store_true", help="TLS with a self-signed certificate made at start")
    parser.add_argument("--cert-out", help="with --https: also copy the certificate (PEM) to this path")
    parser.add_argument("--auth", default="basic,ntlm", help="comma-separated: basic,ntlm (default: both)")
    args = parser.parse_args(argv)

    password = os.environ.get(args.password_env)
    if not password:
        parser.error(f"set the password in the environment variable {args.password_env}")
    try:
        loader = StateFile(args.state)
    except (OSError, ValueError) as e:
        parser.error(f"cannot read --state: {e}")
    addr, port = args.listen
    sim = WsmanSim(users={args.user: password}, listen=addr, port=port, https=args.https,
                   auth_methods=[m.strip() for m in args.auth.split(",") if m.strip()], state_loader=loader)
    if args.https and args.cert_out and sim.ca_cert_path:
        with open(sim.ca_cert_path, "rb") as src, open(args.cert_out, "wb") as dst:
            dst.write(src.read())
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=sim._server.shutdown, daemon=True).start())
    print(f"wsman_sim: serving {sim.endpoint} for host {loader().hostname}", flush=True)
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
