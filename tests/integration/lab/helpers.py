"""Small observers used by the lab tests: TCP, SMTP banner, ping loss (values, not asserts)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap


def tcp_open(address: str, port: int, *, timeout: float = 1.0) -> bool:
    """A TCP connection to address:port from the root namespace succeeds."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def banner(address: str, port: int, *, timeout: float = 1.0) -> str | None:
    """The first line the server sends (SMTP 220, SSH-2.0, ...), or None."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(200).decode(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return None


def ping_loss(lab, *, src: str, dst: str, count: int = 40) -> float:
    """Percent of ``count`` quick pings from lab node ``src`` to ``dst`` that were lost."""
    proc = lab.run_on(src, ["ping", "-q", "-n", "-c", str(count), "-i", "0.01", "-W", "1", dst],
                      timeout=30)
    found = re.search(r"([\d.]+)% packet loss", proc.stdout)
    assert found, f"ping printed no loss figure: {proc.stdout} {proc.stderr}"
    return float(found.group(1))


def tcp_from(lab, node: str, address: str, port: int, *, timeout: float = 1.0) -> bool:
    """A TCP connection from lab node ``node`` (a host, 'client', ...) to address:port."""
    script = textwrap.dedent(f"""
        import socket, sys
        try:
            socket.create_connection(({address!r}, {port}), timeout={timeout}).close()
        except OSError:
            sys.exit(1)
    """)
    try:
        return lab.run_on(node, [sys.executable, "-c", script], timeout=timeout + 10).returncode == 0
    except subprocess.TimeoutExpired:
        return False
