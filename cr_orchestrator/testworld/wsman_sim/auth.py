"""Server side of WinRM authentication: Basic, and NTLM with MS-WSMV message encryption.

NTLM is connection-bound: the handshake (401 challenge, then the Authenticate message)
authenticates the TCP connection, and over plain HTTP every later message on it is sealed
with the NTLM session key in a ``multipart/encrypted`` body (MS-WSMV 2.2.9.1.1), which
pywinrm does by default on http:// with NTLM. pyspnego is the NTLM acceptor; it reads
accepted users from the file named by the env var ``NTLM_USER_FILE``; each simulator
writes its own file and points the variable at it only while pyspnego reads it.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import os
import struct
import tempfile
import threading
from collections.abc import Iterator

import spnego

BOUNDARY = b"--Encrypted Boundary"
SPNEGO_ENCRYPTED = "application/HTTP-SPNEGO-session-encrypted"
ENCRYPTED_CONTENT_TYPE = f'multipart/encrypted;protocol="{SPNEGO_ENCRYPTED}";boundary="Encrypted Boundary"'

# pyspnego's acceptor reads NTLM_USER_FILE while it checks an Authenticate message; each
# simulator has its own file, so the variable is set, and the check done, under this lock.
_env_lock = threading.Lock()


@contextlib.contextmanager
def _user_file_env(path: str) -> Iterator[None]:
    with _env_lock:
        saved = os.environ.get("NTLM_USER_FILE")
        os.environ["NTLM_USER_FILE"] = path
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("NTLM_USER_FILE", None)
            else:
                os.environ["NTLM_USER_FILE"] = saved


def _user_lines(users: dict[str, str]) -> str:
    lines = []
    for name, password in users.items():
        if ":" in password or ":" in name:
            raise ValueError(f"NTLM user {name!r}: the credential file format forbids ':' in names and passwords")
        domain, _, user = name.rpartition("\\")
        lines.append(f"{domain}:{user}:{password}")
    return "\n".join(lines) + "\n"


def write_ntlm_user_file(users: dict[str, str], directory: str) -> str:
    """Write the users a simulator accepts in pyspnego's ``DOMAIN:USER:PASSWORD`` format
    (mode 0600) into ``directory``; the caller removes it."""
    fd, path = tempfile.mkstemp(prefix="ntlm-users-", suffix=".txt", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(_user_lines(users))
    return path


class NtlmUserFile:
    """The users file pyspnego's NTLM acceptor reads, kept off every disk: an anonymous
    in-memory file (``memfd``) named by ``/proc/<pid>/fd/N``, readable by this process
    only, gone with it even when it is SIGKILLed. (Elsewhere than Linux: a 0600 file in
    a private temporary directory, removed by :meth:`close`.)"""

    def __init__(self, users: dict[str, str]) -> None:
        text = _user_lines(users).encode()
        self._fd: int | None = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        if hasattr(os, "memfd_create"):
            self._fd = os.memfd_create("cr-wsman-sim-ntlm-users", os.MFD_CLOEXEC)
            os.write(self._fd, text)
            self.path = f"/proc/{os.getpid()}/fd/{self._fd}"
        else:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="wsman-sim-users-")
            self.path = write_ntlm_user_file(users, self._tmpdir.name)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None


def check_basic(header_value: str, users: dict[str, str]) -> str | None:
    """The user of a valid ``Basic`` credential, else None."""
    try:
        user, _, password = base64.b64decode(header_value).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    expected = users.get(user)
    if expected is not None and hmac.compare_digest(expected.encode(), password.encode()):
        return user
    return None


class NtlmConnection:
    """The NTLM state of one HTTP connection."""

    def __init__(self, user_file: str) -> None:
        self._user_file = user_file
        self._ctx: spnego.ContextProxy | None = None
        self.user: str | None = None

    def step(self, token: bytes) -> tuple[bytes | None, bool]:
        """Feed a client token; return (token for the 401 challenge or None, authenticated)."""
        if len(token) >= 12 and token[:8] == b"NTLMSSP\x00" and struct.unpack("<I", token[8:12])[0] == 1:
            with _user_file_env(self._user_file):  # the acceptor checks the file exists
                self._ctx, self.user = spnego.server(protocol="ntlm"), None
        if self._ctx is None:
            return None, False
        try:
            with _user_file_env(self._user_file):
                out = self._ctx.step(token)
        except spnego.exceptions.SpnegoError:
            self._ctx, self.user = None, None
            return None, False
        if self._ctx.complete:
            self.user = self._ctx.client_principal
            return None, True
        return out, False

    @property
    def authenticated(self) -> bool:
        return self.user is not None

    def decrypt(self, body: bytes) -> bytes:
        """The SOAP message in a ``multipart/encrypted`` request body."""
        assert self._ctx is not None and self._ctx.complete
        parts = [p for p in body.split(BOUNDARY + b"\r\n") if p]
        if len(parts) < 2:
            raise ValueError("encrypted body has no payload part")
        header, payload = parts[0], parts[1]
        expected_len = int(header.split(b"Length=")[1].split(b"\r\n")[0])
        if payload.endswith(BOUNDARY + b"--\r\n"):
            payload = payload[: -len(BOUNDARY + b"--\r\n")]
        payload = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
        sig_len = struct.unpack("<i", payload[:4])[0]
        signature, sealed = payload[4 : 4 + sig_len], payload[4 + sig_len :]
        message = self._ctx.unwrap(signature + sealed).data
        if len(message) != expected_len:
            raise ValueError("decrypted length does not match OriginalContent Length")
        return message

    def encrypt(self, message: bytes) -> bytes:
        """A ``multipart/encrypted`` reply body holding ``message``."""
        assert self._ctx is not None and self._ctx.complete
        wrapped = self._ctx.wrap(message, encrypt=True).data
        signature, sealed = wrapped[:16], wrapped[16:]
        return (
            BOUNDARY + b"\r\n\tContent-Type: " + SPNEGO_ENCRYPTED.encode() + b"\r\n"
            b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=" + str(len(message)).encode()
            + b"\r\n" + BOUNDARY + b"\r\n\tContent-Type: application/octet-stream\r\n"
            + struct.pack("<i", len(signature)) + signature + sealed + BOUNDARY + b"--\r\n"
        )
