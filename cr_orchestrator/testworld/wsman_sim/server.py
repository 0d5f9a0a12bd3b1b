"""The HTTP(S) side of the WS-Man simulator: POST /wsman, authentication, TLS.

:class:`WsmanSim` runs one scripted Windows host on a real socket, in a thread (tests) or
in the foreground (``python -m cr_orchestrator.testworld.wsman_sim``).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from cr_orchestrator.testworld.wsman_sim import auth, soap
from cr_orchestrator.testworld.wsman_sim.host import HostState, Matcher, Reply, ReceivedCommand, Responder, SimHost

SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"


class Engine(Protocol):
    def handle(self, req: soap.Request, *, endpoint: str, user: str, client_ip: str) -> tuple[int, str]: ...


def make_self_signed_cert(directory: str, *, hostnames: Sequence[str], addresses: Sequence[str]) -> tuple[str, str]:
    """Write a fresh self-signed certificate and key; return (cert_path, key_path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0] if hostnames else "wsman-sim")])
    alt = [x509.DNSName(h) for h in hostnames] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(directory, "wsman-sim.crt"), os.path.join(directory, "wsman-sim.key")
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: NTLM authenticates the connection
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stall
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.ntlm = auth.NtlmConnection(self.server.sim.ntlm_user_file)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet by design
        pass

    def _send(self, status: int, body: bytes = b"", *, content_type: str = SOAP_CONTENT_TYPE,
              challenges: Sequence[str] = ()) -> None:
        self.send_response(status)
        for challenge in challenges:
            self.send_header("WWW-Authenticate", challenge)
        if body:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _challenges(self) -> list[str]:
        methods = self.server.sim.auth_methods
        return (["Negotiate"] if "ntlm" in methods else []) + (['Basic realm="WSMAN"'] if "basic" in methods else [])

    def _authenticate(self) -> str | None:
        """The authenticated user, or None after sending the 401 reply."""
        sim = self.server.sim
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "basic" and "basic" in sim.auth_methods:
            user = auth.check_basic(value.strip(), sim.users)
            if user is not None:
                return user
        elif scheme.lower() in ("negotiate", "ntlm") and "ntlm" in sim.auth_methods:
            try:
                token = base64.b64decode(value.strip())
            except ValueError:
                token = b""
            out, done = self.ntlm.step(token)
            if done:
                return self.ntlm.user
            if out is not None:
                self._send(401, challenges=[f"{scheme} {base64.b64encode(out).decode()}"])
                return None
        elif not scheme and self.ntlm.authenticated:
            return self.ntlm.user
        sim.auth_failures += 1
        self._send(401, challenges=self._challenges())
        return None

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        sim = self.server.sim
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") != sim.path.rstrip("/"):
            self._send(404)
            return
        encrypted = "multipart/encrypted" in (self.headers.get("Content-Type") or "")
        if encrypted and not self.ntlm.authenticated:
            self._send(401, challenges=self._challenges())
            return
        user = self.ntlm.user if encrypted and not self.headers.get("Authorization") else self._authenticate()
        if user is None:
            return
        if encrypted:
            body = self.ntlm.decrypt(body)
        if not body:  # pywinrm's empty POST that sets up NTLM message encryption
            self._send(200)
            return
        status, reply = self._answer(body, user)
        data = reply.encode("utf-8")
        if encrypted:
            self._send(status, self.ntlm.encrypt(data), content_type=auth.ENCRYPTED_CONTENT_TYPE)
        else:
            self._send(status, data)

    def _answer(self, body: bytes, user: str) -> tuple[int, str]:
        sim = self.server.sim
        delay = sim.reply_delay_s()
        if delay > 0:
            time.sleep(delay)
        try:
            req = soap.parse_request(body)
        except soap.BadRequest as e:
            return 400, soap.fault_response(None, code=2150858817, subcode="w:InvalidMessageInformationHeader",
                                            reason=str(e))
        return sim.engine.handle(req, endpoint=sim.endpoint, user=user, client_ip=self.client_address[0])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    sim: WsmanSim

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that reject our self-signed certificate or hang up are expected; stay quiet.
        pass


class WsmanSim:
    """A WS-Man (WinRM shell) server for one scripted Windows host.

    Use as a context manager in tests (ephemeral port, background thread)::

        with WsmanSim(users={"admin": "pw"}) as sim:
            sim.state.services["MDaemon"] = "Running"
            ... connect pywinrm to sim.endpoint ...
    """

    def __init__(self, *, users: dict[str, str], state: HostState | None = None, listen: str = "127.0.0.1",
                 port: int = 0, https: bool = False, auth_methods: Sequence[str] = ("basic", "ntlm"),
                 path: str = "/wsman", engine: Engine | None = None, state_loader=None) -> None:
        self.users = dict(users)
        self.auth_methods = tuple(auth_methods)
        self.path = path
        self.https = https
        self.host = SimHost(state or HostState(), state_loader=state_loader)
        self.engine: Engine = engine or self.host
        self.auth_failures = 0
        self.ca_cert_path: str | None = None
        self._tmpdir = tempfile.TemporaryDirectory(prefix="wsman-sim-")
        self._thread: threading.Thread | None = None
        self._ntlm_users = auth.NtlmUserFile(self.users) if "ntlm" in self.auth_methods else None
        self.ntlm_user_file = self._ntlm_users.path if self._ntlm_users else ""
        self._server = _Server((listen, port), _Handler, bind_and_activate=True)
        self._server.sim = self
        if https:
            cert, key = make_self_signed_cert(self._tmpdir.name, hostnames=[socket.gethostname(), "localhost"],
                                              addresses=sorted({listen, "127.0.0.1"} - {"0.0.0.0"}))
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            # Handshake in the connection's thread, so one silent client cannot stall accept().
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
            self.ca_cert_path = cert

    # -- where to connect ---------------------------------------------------------------
    @property
    def address(self) -> str:
        return self._server.server_address[0]

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.https else 'http'}://{self.address}:{self.port}{self.path}"

    # -- the scripted host --------------------------------------------------------------
    @property
    def state(self) -> HostState:
        return self.host.state

    def register(self, match: Matcher, reply: Responder) -> None:
        """Answer commands whose decoded script (or command line) matches ``match``."""
        self.host.register(match, reply)

    @property
    def commands(self) -> list[ReceivedCommand]:
        """Every command received, in order (decoded PowerShell in ``.script``)."""
        return self.host.commands

    def reply_delay_s(self) -> float:
        return float(self.host.state.reply_delay_s) if self.engine is self.host else 0.0

    # -- running ------------------------------------------------------------------------
    def start(self) -> WsmanSim:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"wsman-sim:{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.host.drop_shells()  # wake Receives held open on endless commands
        self._server.server_close()
        if self._ntlm_users is not None:
            self._ntlm_users.close()
        self._tmpdir.cleanup()

    def __enter__(self) -> WsmanSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["WsmanSim", "HostState", "Reply", "ReceivedCommand", "make_self_signed_cert"]
