"""A WinRM shell client with our own deadline, built on pywinrm's ``Protocol``.

One WinRS shell is opened per host and reused (Create once, then Command → Receive… →
Signal per command), which saves the authentication and two round trips per command that
``winrm.Session.run_cmd`` pays. pywinrm's ``get_command_output`` retries OperationTimeout
faults forever, so a hung command would hang the caller: we loop
``get_command_output_raw`` with a short server-side OperationTimeout and a read timeout,
and give up (Signal terminate, keep the shell) when the deadline passes.

:meth:`WinRMShell.run_cmd` and :meth:`WinRMShell.run_ps` never raise: failures come back
as a :class:`CommandResult` whose ``error`` is short and secret-free.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

import requests
from winrm.exceptions import (InvalidCredentialsError, WinRMError, WinRMOperationTimeoutError,
                              WinRMTransportError, WSManFaultError)
from winrm.protocol import Protocol

from cr_orchestrator import model

FAULT_SHELL_NOT_FOUND = 2150858843
WSMANFAULT_NS = "{http://schemas.microsoft.com/wbem/wsman/1/wsmanfault}"
# The WS-Man operation behind each pywinrm call, to say which request Windows refused.
_OPERATIONS = {"_open_shell": "Create", "run_command": "Command", "get_command_output_raw": "Receive",
               "cleanup_command": "Signal", "close_shell": "Delete"}
RECEIVE_WAIT_MAX_S = 5.0  # longest server-side wait per Receive; short so the deadline is checked often
CLEANUP_BUDGET_S = 1.0  # time allowed after the deadline to Signal a command that overran


@dataclass(frozen=True)
class CommandResult:
    """The outcome of one remote command. ``error`` is short and never holds a secret."""

    rc: int | None
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    error: str | None

    @property
    def ok(self) -> bool:
        """True when the command ran to completion with exit code 0."""
        return self.error is None and not self.timed_out and self.rc == 0


class _Protocol(Protocol):
    """pywinrm's Protocol with a fractional, per-call OperationTimeout (for our deadline)."""

    operation_timeout_override_s: float | None = None

    def build_wsman_header(self, *args, **kwargs):  # type: ignore[override]
        header = super().build_wsman_header(*args, **kwargs)
        if self.operation_timeout_override_s is not None:
            header["env:Header"]["w:OperationTimeout"] = f"PT{self.operation_timeout_override_s:.3f}S"
        return header


class _Failure(Exception):
    """Internal: a failure already turned into a short, secret-free message."""

    def __init__(self, message: str, *, timed_out: bool = False, reset: bool = True) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.reset = reset


def clean_clixml(stderr: str) -> str:
    """Turn PowerShell's ``#< CLIXML`` error stream into plain text (as pywinrm's run_ps does)."""
    if not stderr.startswith("#< CLIXML"):
        return stderr
    try:
        root = ET.fromstring(re.sub(r'\sxmlns="[^"]*"', "", stderr.split("\n", 1)[1]))
    except (ET.ParseError, IndexError):
        return stderr
    lines = [s.text.replace("_x000D__x000A_", "\n") for s in root.iter("S") if s.get("S") == "Error" and s.text]
    return "".join(lines).strip() or stderr


class WinRMShell:
    """One reusable WinRS shell on one Windows host. Thread-safe: one command at a time."""

    def __init__(self, *, address: str, settings: model.WinRMSettings, connect_timeout_s: float = 5.0) -> None:
        self.address = address
        self.settings = settings
        self.endpoint = settings.endpoint(address)
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._protocol: _Protocol | None = None
        self._shell_id: str | None = None
        self.shells_opened = 0  # how many times a shell was (re)opened: for tests and metrics

    # -- public API -----------------------------------------------------------------------
    def run_ps(self, script: str, *, deadline_s: float) -> CommandResult:
        """Run a PowerShell script (``powershell -encodedcommand``) within ``deadline_s``."""
        encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
        result = self.run_cmd(f"powershell -NoProfile -NonInteractive -EncodedCommand {encoded}", deadline_s=deadline_s)
        return result if not result.stderr else _replace(result, stderr=clean_clixml(result.stderr))

    def run_cmd(self, command: str, args: Sequence[str] = (), *, deadline_s: float) -> CommandResult:
        """Run a command within ``deadline_s`` seconds (plus up to 1 s to stop it); never raises."""
        started = time.monotonic()
        deadline = started + deadline_s
        if not self._lock.acquire(timeout=max(0.0, deadline_s)):
            return CommandResult(None, "", "", True, time.monotonic() - started,
                                 f"shell to {self.endpoint} stayed busy for {deadline_s:.1f}s")
        try:
            rc, out, err = self._run(command, list(args), deadline)
            return CommandResult(rc, out, err, False, time.monotonic() - started, None)
        except _Failure as failure:
            if failure.reset:
                self._reset()
            return CommandResult(None, "", "", failure.timed_out, time.monotonic() - started, str(failure))
        except Exception as e:  # noqa: BLE001 - the contract is "never raises"
            self._reset()
            return CommandResult(None, "", "", False, time.monotonic() - started,
                                 self._scrub(f"unexpected {type(e).__name__}: {_short(str(e))}"))
        finally:
            self._lock.release()

    def close(self) -> None:
        """Delete the shell (best effort, short timeout) and close the HTTP session."""
        with self._lock:
            if self._protocol is not None and self._shell_id is not None:
                self._set_timeouts(time.monotonic() + 2.0)
                try:
                    self._protocol.close_shell(self._shell_id, close_session=False)
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
            self._reset()

    def __enter__(self) -> WinRMShell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------
    def _new_protocol(self) -> _Protocol:
        s = self.settings
        password = s.password.reveal() if s.password is not None else None
        protocol = _Protocol(
            self.endpoint, transport=s.transport, username=s.user, password=password,
            server_cert_validation="validate" if s.server_cert_validation else "ignore",
            ca_trust_path=s.ca_trust_path,  # None: requests' default trust store, not env vars
            cert_pem=s.cert_pem, cert_key_pem=s.cert_key_pem,
            read_timeout_sec=30, operation_timeout_sec=20,
            proxy=None,  # WinRM goes straight to the host, never through an HTTP(S)_PROXY from the env
        )
        build_session = protocol.transport.build_session

        def build_session_without_env():
            # requests re-reads proxy env vars on every request when trust_env is on: a third of
            # our client CPU per probe. pywinrm has already applied what it needs from the env.
            session = build_session()
            session.trust_env = False
            return session

        protocol.transport.build_session = build_session_without_env  # type: ignore[method-assign]
        return protocol

    def _reset(self) -> None:
        """Forget the shell and the HTTP session (next command opens fresh ones)."""
        if self._protocol is not None:
            try:
                self._protocol.transport.close_session()
            except Exception:  # noqa: BLE001
                pass
        self._protocol, self._shell_id = None, None

    def _set_timeouts(self, deadline: float, *, receive_wait_s: float | None = None) -> None:
        """Bound the next HTTP request by the deadline (connect, read) and the server's wait."""
        assert self._protocol is not None
        remaining = max(0.05, deadline - time.monotonic())
        self._protocol.operation_timeout_override_s = receive_wait_s
        # A held Receive answers after receive_wait_s; the read timeout only catches a dead server.
        read = remaining if receive_wait_s is None else min(receive_wait_s + 2.0, remaining + 0.5)
        self._protocol.transport.read_timeout_sec = (min(self.connect_timeout_s, remaining), read)  # type: ignore[assignment]

    def _call(self, deadline: float, fn, *args, receive_wait_s: float | None = None):
        """One WS-Man request, its failures mapped to :class:`_Failure`."""
        if self._protocol is None:
            self._protocol = self._new_protocol()
        self._set_timeouts(deadline, receive_wait_s=receive_wait_s)
        try:
            return fn(*args)
        except WinRMOperationTimeoutError:
            raise
        except Exception as e:  # noqa: BLE001 - mapped to a message below
            raise self._map_error(e, deadline, _OPERATIONS.get(getattr(fn, "__name__", ""), "request")) from e

    def _map_error(self, e: Exception, deadline: float, operation: str = "request") -> _Failure:
        ep, user = self.endpoint, self.settings.user
        if isinstance(e, InvalidCredentialsError):
            return _Failure(f"authentication failed for user {user} at {ep}")
        if isinstance(e, WSManFaultError):
            # The shell stays usable: Windows refused one request, it did not drop the shell.
            subcode = f" ({e.fault_subcode})" if e.fault_subcode else ""
            return _Failure(self._scrub(f"WS-Man fault {e.wsman_fault_code}{subcode} from {ep} on {operation}: "
                                        f"{_short(_fault_message(e), 300)}"), reset=False)
        if isinstance(e, WinRMTransportError):
            return _Failure(f"HTTP {e.code} from {ep}")
        if isinstance(e, requests.exceptions.SSLError):
            if "CERTIFICATE_VERIFY_FAILED" in str(e):
                return _Failure(f"TLS certificate verification failed for {ep} ({_short(_ssl_reason(str(e)), 60)}); "
                                "trust its CA or set server_cert_validation=ignore")
            return _Failure(f"TLS error with {ep}: {_short(_ssl_reason(str(e)), 80)}")
        if isinstance(e, requests.exceptions.ConnectTimeout):
            return _Failure(f"connection to {ep} timed out", timed_out=True)
        if isinstance(e, requests.exceptions.ReadTimeout):
            return _Failure(f"no reply from {ep} before the deadline", timed_out=True)
        if isinstance(e, requests.exceptions.ConnectionError):
            if "refused" in str(e).lower():
                return _Failure(f"connection refused by {ep}")
            return _Failure(f"cannot connect to {ep}: {_short(type(e.__context__ or e).__name__)}")
        if isinstance(e, WinRMError):
            return _Failure(self._scrub(f"WinRM error with {ep}: {_short(str(e))}"))
        detail = f": {_short(str(e))}" if str(e) else ""  # e.g. StopIteration on a reply pywinrm cannot read
        return _Failure(self._scrub(f"unexpected {type(e).__name__} with {ep} on {operation}{detail}"))

    def _scrub(self, text: str) -> str:
        pw = self.settings.password.reveal() if self.settings.password is not None else ""
        return text.replace(pw, "***") if pw else text

    def _ensure_shell(self, deadline: float) -> str:
        if self._shell_id is None:
            self._shell_id = self._call(deadline, self._open_shell)
            self.shells_opened += 1
        return self._shell_id

    def _open_shell(self) -> str:
        return self._protocol.open_shell(codepage=65001)

    def _start(self, command: str, args: list[str], deadline: float) -> tuple[str, str]:
        """Start the command; reopen the shell once if the server forgot it or dropped us."""
        reused = self._shell_id is not None
        shell_id = self._ensure_shell(deadline)
        try:
            return shell_id, self._call(deadline, self._protocol.run_command, shell_id, command, args)
        except _Failure as failure:
            forgotten = (isinstance(failure.__cause__, WSManFaultError)
                         and failure.__cause__.wsman_fault_code == FAULT_SHELL_NOT_FOUND)
            dropped = isinstance(failure.__cause__, requests.exceptions.ConnectionError) and not failure.timed_out
            if not reused or not (forgotten or dropped):
                raise
        self._reset()
        shell_id = self._ensure_shell(deadline)
        return shell_id, self._call(deadline, self._protocol.run_command, shell_id, command, args)

    def _run(self, command: str, args: list[str], deadline: float) -> tuple[int, str, str]:
        started = time.monotonic()
        shell_id, command_id = self._start(command, args, deadline)
        out: list[bytes] = []
        err: list[bytes] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._stop(shell_id, command_id)
                raise _Failure(f"command did not finish within {deadline - started:.1f}s on {self.endpoint}",
                               timed_out=True, reset=False)
            wait = max(0.1, min(RECEIVE_WAIT_MAX_S, remaining - 0.25))
            try:
                o, e, rc, done = self._call(deadline, self._protocol.get_command_output_raw, shell_id, command_id,
                                            receive_wait_s=wait)
            except WinRMOperationTimeoutError:
                continue  # nothing yet: check the deadline and ask again
            out.append(o)
            err.append(e)
            if done:
                break
        try:
            self._call(deadline + CLEANUP_BUDGET_S, self._protocol.cleanup_command, shell_id, command_id)
        except _Failure as failure:
            if failure.reset:
                self._reset()
        return rc, _decode(b"".join(out)), _decode(b"".join(err))

    def _stop(self, shell_id: str, command_id: str) -> None:
        """Signal terminate to a command that overran; on failure drop the shell."""
        try:
            self._call(time.monotonic() + CLEANUP_BUDGET_S, self._protocol.cleanup_command, shell_id, command_id)
        except (_Failure, WinRMOperationTimeoutError):
            self._reset()


class WinRMShellPool:
    """One :class:`WinRMShell` per host, kept open between probes (for a long-lived worker)."""

    def __init__(self, *, connect_timeout_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._shells: dict[tuple[str, model.WinRMSettings], WinRMShell] = {}
        self.connect_timeout_s = connect_timeout_s

    def get(self, *, address: str, settings: model.WinRMSettings) -> WinRMShell:
        """The shell for this address and settings (a settings change gets a new shell)."""
        key = (address, settings)
        with self._lock:
            shell = self._shells.get(key)
            if shell is None:
                shell = self._shells[key] = WinRMShell(address=address, settings=settings,
                                                       connect_timeout_s=self.connect_timeout_s)
            return shell

    def close_all(self) -> None:
        with self._lock:
            shells, self._shells = list(self._shells.values()), {}
        for shell in shells:
            shell.close()


def _replace(result: CommandResult, **changes: object) -> CommandResult:
    return dataclasses.replace(result, **changes)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fault_message(e: WSManFaultError) -> str:
    """What Windows said: the WSManFault's message (naming the shell plugin that raised it), else s:Reason."""
    try:
        message = ET.fromstring(e.response).find(f".//{WSMANFAULT_NS}WSManFault/{WSMANFAULT_NS}Message")
    except (ET.ParseError, TypeError, ValueError):
        message = None
    text = " ".join("".join(message.itertext()).split()) if message is not None else ""
    if not text:
        return (e.reason or "").strip()
    provider = message.find(f"{WSMANFAULT_NS}ProviderFault")
    return f"{text} ({provider.get('provider')})" if provider is not None and provider.get("provider") else text


def _ssl_reason(text: str) -> str:
    match = re.search(r"certificate verify failed: ([^(]+)", text)
    return match.group(1).strip() if match else text
