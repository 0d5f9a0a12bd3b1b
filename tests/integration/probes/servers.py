"""Small real servers on loopback for the protocol checks (each on its own port).

The TDS responder follows MS-TDS 2.2.6.5: it reads a PRELOGIN packet (type 0x12) and
answers with a tabular-result packet (type 0x04) carrying VERSION and ENCRYPTION options.
It proves our packet building and parsing agree with the specification as we read it, not
with a real SQL Server.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _listener() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@contextmanager
def serve(handler):
    """Accept connections in a thread and run ``handler(conn)`` for each; yield the port."""
    sock = _listener()
    stop = threading.Event()

    def loop():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=_run, args=(handler, conn), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        sock.close()


def _run(handler, conn):
    with conn:
        try:
            handler(conn)
        except OSError:
            pass


def banner(text: bytes, *, delay_s: float = 0.0):
    """A handler that waits ``delay_s``, sends ``text`` and holds the line briefly."""
    def handler(conn):
        time.sleep(delay_s)
        conn.sendall(text)
        conn.settimeout(2)
        try:
            conn.recv(1024)
        except OSError:
            pass
    return handler


def silent(conn):
    """Accepts and never speaks (a hung service, or a frozen host's kernel backlog)."""
    time.sleep(5)


def tds_responder(conn):
    conn.settimeout(2)
    data = b""
    while len(data) < 8:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    ptype, _st, length = struct.unpack_from(">BBH", data)
    while len(data) < length:
        data += conn.recv(4096)
    if ptype != 0x12:
        conn.sendall(b"\x00" * 8)  # not a PRELOGIN: answer garbage
        return
    version = struct.pack(">BBHH", 16, 0, 1000, 0)
    options = [(0x00, version), (0x01, b"\x02"), (0x02, b"\x00"), (0x03, b""), (0x04, b"\x00")]
    offset = len(options) * 5 + 1
    tokens, payload = b"", b""
    for token, value in options:
        tokens += struct.pack(">BHH", token, offset + len(payload), len(value))
        payload += value
    body = tokens + b"\xff" + payload
    conn.sendall(struct.pack(">BBHHBB", 0x04, 0x01, 8 + len(body), 0, 1, 0) + body)
    time.sleep(0.5)


@contextmanager
def http_server():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            status = {"/": 200, "/busy": 503, "/missing": 404}.get(self.path, 404)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    sock = _listener()
    port = sock.getsockname()[1]
    sock.close()
    return port
