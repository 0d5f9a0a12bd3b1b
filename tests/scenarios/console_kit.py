"""Helpers of the console story: `crctl serve`, a webhook receiver, a receiver that hangs,
an SMTP sink, a Prometheus of the test's own and headless Chromium (Debian's, through its
chromedriver). Everything listens on 127.0.0.1 (the notifier and Prometheus run in the
root namespace, beside the orchestrator)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from scenario_kit import CRCTL, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebhookReceiver:
    """An HTTP server that keeps every JSON body POSTed to it, with the time it came."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((time.time(), json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0/secret-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kinds(self) -> list[str]:
        return [body["kind"] for _, body in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HangingReceiver:
    """A receiver that is "down" the worst way: it accepts connections, reads the request
    and never answers (each try costs the sender its whole timeout). Keeps the time and
    the notification's kind of every try."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.accepted: list[float] = []
        self.kinds: list[str] = []  # of each try, in order
        self.held: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(time.time())
            self.held.append(conn)
            threading.Thread(target=self._read, args=(conn, len(self.accepted) - 1),
                             daemon=True).start()

    def _read(self, conn: socket.socket, index: int) -> None:
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536) or b"!"
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            while len(body) < length:
                body += conn.recv(65536)
            self.kinds.append(f"{index}:{json.loads(body)['kind']}")
        except (OSError, ValueError, AttributeError):
            self.kinds.append(f"{index}:?")

    def tries(self, kind: str) -> list[float]:
        """Times of the tries that carried a ``kind`` notification."""
        indexes = {int(k.split(":")[0]) for k in list(self.kinds) if k.endswith(f":{kind}")}
        return [t for i, t in enumerate(self.accepted) if i in indexes]

    def close(self) -> None:
        self.closed = True
        self.sock.close()
        for conn in self.held:
            conn.close()


class SmtpSink:
    """aiosmtpd on 127.0.0.1: keeps every message (subject, recipients, time)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[dict] = []
        messages = self.messages

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
                from email import message_from_bytes

                msg = message_from_bytes(envelope.content)
                messages.append({"at": time.time(), "subject": msg["Subject"],
                                 "to": list(envelope.rcpt_tos), "body": msg.get_payload()})
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()


class Serve:
    """`crctl serve` for the orchestrator's inventory and prefix, with a token file."""

    def __init__(self, orchestrator, directory: Path) -> None:
        self.port = free_port()
        self.token = "console-token-" + uuid_hex()
        self.token_file = directory / "console.token"
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(0o600)
        self.log = directory / "crctl-serve.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [CRCTL, "serve", "-i", orchestrator.inventory, "--redis-url", orchestrator.redis_url,
             "--prefix", orchestrator.prefix, "--port", str(self.port), "--token-file",
             str(self.token_file)], stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        wait_for(self.answers, 30, "crctl serve to answer", every_s=0.2)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/clusters", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def uuid_hex() -> str:
    import uuid

    return uuid.uuid4().hex[:12]


class Prometheus:
    """Debian's prometheus, its own port and storage under the test's directory,
    scraping ``target`` every second."""

    def __init__(self, directory: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, "Debian's prometheus is not installed (dev/bootstrap.sh installs it)"
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "cr", "static_configs": [{"targets": [target]}]}]}))
        self.log = directory / "prometheus.log"
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: self._get("/-/ready") is not None, 60, "prometheus to be ready",
                 every_s=0.3)

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=3) as answer:
                return answer.read()
        except OSError:
            return None

    def query_range(self, query: str, start: float, end: float) -> list[dict]:
        qs = urllib.parse.urlencode({"query": query, "start": start, "end": end, "step": "1s"})
        raw = self._get(f"/api/v1/query_range?{qs}")
        assert raw is not None, "prometheus did not answer the query"
        return json.loads(raw)["data"]["result"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@contextlib.contextmanager
def chromium() -> Iterator:
    """Headless Debian chromium through Debian's chromedriver (nothing downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,1100"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()
