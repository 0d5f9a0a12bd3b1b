"""A scripted "Windows host": its state, its command handlers, and its WinRS shells.

The test (or the lab's state file) controls what the host looks like: services running or
stopped, boot time, free space per volume, clock offset, slow replies, commands that never
end, garbage output. Commands are answered by handlers matched on the decoded PowerShell
script (or the command line), then by the built-in emulation of the probe script.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

from cr_orchestrator.observe import windows_script
from cr_orchestrator.testworld.wsman_sim import soap


@dataclass(frozen=True)
class Reply:
    """What a command prints and returns; ``delay_s``/``hang`` make it slow or endless."""

    stdout: str | bytes = ""
    stderr: str | bytes = ""
    rc: int = 0
    delay_s: float = 0.0
    hang: bool = False
    # The command fails to start: the Command is answered with this fault code from the cmd shell
    # plugin, as Windows does (e.g. 2147942402, "The system cannot find the file specified. ").
    fault_code: int | None = None
    progress: str | bytes = ""  # printed at once (Receive says Running), before stdout after delay_s
    fault_reason: str = "Access is denied."


@dataclass(frozen=True)
class ReceivedCommand:
    """One command the host received (for assertions)."""

    at: float
    shell_id: str
    command: str
    arguments: tuple[str, ...]
    script: str | None  # the decoded PowerShell of `powershell -encodedcommand`, else None

    @property
    def text(self) -> str:
        """What handlers match on: the PowerShell script, else the whole command line."""
        return self.script if self.script is not None else " ".join((self.command, *self.arguments))


@dataclass
class HostState:
    """The scripted host. Every field can come from the lab's JSON state file."""

    hostname: str = "WIN-SIM"
    services: dict = field(default_factory=dict)  # name -> "Running" | "Stopped" | ...
    boot_time: float = field(default_factory=lambda: time.time() - 86400.0)  # unix seconds
    clock_offset_s: float = 0.0  # host clock minus real time
    volumes: dict = field(default_factory=lambda: {"C:\\": {"free": 50 << 30, "size": 100 << 30}})
    reply_delay_s: float = 0.0  # added before every HTTP reply (slow host or network)
    hang_commands: bool = False  # every command runs forever
    garbage_output: bool = False  # the probe script prints garbage instead of JSON
    scripts: list = field(default_factory=list)  # [{"match": regex, "stdout", "stderr", "rc", "delay_s", "hang"}]
    files: dict = field(default_factory=dict)  # path -> text: the host's epoch and role records
    # Like the recorded Windows Server 2008 R2: a Command sent with WINRS_SKIP_CMD_SHELL=True starts
    # the program without cmd.exe, so one not named by its full path is not found (fault 2147942402).
    # Off by default: pypsrp's tests note the option "only works on older hosts".
    honour_skip_cmd_shell: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> HostState:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown host state keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**data)


Matcher = str | re.Pattern | Callable[[str], bool]
Responder = Reply | Sequence[Reply] | Callable[[ReceivedCommand], Reply]


def decode_powershell(command: str, arguments: Sequence[str]) -> str | None:
    """The script of `powershell -encodedcommand <base64 UTF-16LE>`, else None."""
    tokens = " ".join((command, *arguments)).split()
    if not tokens or not re.match(r"(?i)^(powershell|pwsh)(\.exe)?$", tokens[0].rsplit("\\", 1)[-1]):
        return None
    for i, token in enumerate(tokens[:-1]):
        if token.lower() in ("-encodedcommand", "-enc", "-e", "-ec"):
            try:
                return base64.b64decode(tokens[i + 1]).decode("utf-16-le")
            except (ValueError, UnicodeDecodeError):
                return None
    return None


class _Handler:
    def __init__(self, match: Matcher, reply: Responder) -> None:
        if isinstance(match, str):
            match = re.compile(match)
        self._match = match.search if isinstance(match, re.Pattern) else match
        self._reply = reply
        self._used = 0

    def matches(self, text: str) -> bool:
        return bool(self._match(text))

    def reply(self, call: ReceivedCommand) -> Reply:
        if isinstance(self._reply, Reply):
            return self._reply
        if callable(self._reply):
            return self._reply(call)
        # A scripted sequence: one reply per call, the last one repeats.
        seq = list(self._reply)
        reply = seq[min(self._used, len(seq) - 1)]
        self._used += 1
        return reply


def _to_bytes(value: str | bytes) -> bytes:
    # Windows console output uses CRLF; scripts written with \n get CRLF like the real thing.
    return value if isinstance(value, bytes) else value.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


@dataclass
class _Command:
    progress: bytes
    stdout: bytes
    stderr: bytes
    rc: int
    ready_at: float  # monotonic time the output appears; inf = never ends
    signalled: threading.Event = field(default_factory=threading.Event)


def emulate_probe(state: HostState, params: dict, *, now: float) -> Reply:
    """What the probe script prints on a Windows host in ``state``."""
    if state.garbage_output:
        return Reply(stdout="Get-Service : \x07garbled <<< output {\n", rc=0)
    services = [{"name": n, "status": state.services.get(n, "NotFound")} for n in params.get("services", [])]
    volumes = []
    for path in params.get("paths", []):
        root = path[:3].upper() if re.match(r"^[A-Za-z]:\\", path) else path
        vol = state.volumes.get(root)
        if vol is None:
            volumes.append({"path": path, "root": root, "free": None, "size": None,
                            "error": f"Could not find the drive '{root}'. The drive might not be ready "
                                     "or might not be mapped."})
        else:
            volumes.append({"path": path, "root": root, "free": vol["free"], "size": vol["size"], "error": None})
    doc = {"v": 1, "clock_ms": int((now + state.clock_offset_s) * 1000), "boot_s": int(state.boot_time),
           "services": services, "volumes": volumes}
    records = params.get("records")
    if records:
        # as the script reads them: trimmed text, or null for a file that does not exist
        doc["records"] = {key: (None if state.files.get(path) is None
                                else re.sub(r"[^0-9A-Za-z .-]", "", state.files[path]).strip())
                          for key, path in zip(("epoch", "role"), records)}
    return Reply(stdout=json.dumps(doc, separators=(",", ":")) + "\n")


_NOT_FOUND = Reply(fault_code=soap.FAULT_FILE_NOT_FOUND, fault_reason="The system cannot find the file specified. ")


def _started_without_cmd(req: soap.Request, state: HostState) -> bool:
    """True when the host would start a bare program name without cmd.exe, which cannot find it."""
    skip = (req.options.get("WINRS_SKIP_CMD_SHELL") or "").strip().lower() == "true"
    full_path = re.match(r"^([A-Za-z]:\\|\\\\)", req.command or "")
    return state.honour_skip_cmd_shell and skip and not full_path


class SimHost:
    """The WinRS shells of one scripted host, answering parsed WS-Man requests."""

    def __init__(self, state: HostState, *, state_loader: Callable[[], HostState] | None = None) -> None:
        self._state = state
        self._state_loader = state_loader
        self._lock = threading.Lock()
        self._shells: dict[str, dict[str, _Command]] = {}
        self._handlers: list[_Handler] = []
        self.commands: list[ReceivedCommand] = []
        self.requests: list[str] = []  # the Action of every request, in order

    @property
    def state(self) -> HostState:
        if self._state_loader is not None:
            self._state = self._state_loader()
        return self._state

    def set_state(self, state: HostState) -> None:
        self._state = state

    def register(self, match: Matcher, reply: Responder) -> None:
        """Answer commands whose script (or command line) matches ``match`` with ``reply``."""
        with self._lock:
            self._handlers.append(_Handler(match, reply))

    def clear_handlers(self) -> None:
        with self._lock:
            self._handlers.clear()

    def drop_shells(self) -> None:
        """Forget every shell, as a restarted WinRM service would."""
        with self._lock:
            for commands in self._shells.values():
                for cmd in commands.values():
                    cmd.signalled.set()
            self._shells.clear()

    @property
    def open_shells(self) -> int:
        with self._lock:
            return len(self._shells)

    def _reply_for(self, call: ReceivedCommand, state: HostState) -> Reply:
        with self._lock:
            handlers = list(self._handlers)
        for handler in handlers:
            if handler.matches(call.text):
                return handler.reply(call)
        for rule in state.scripts:
            if re.search(rule["match"], call.text):
                return Reply(**{k: v for k, v in rule.items() if k != "match"})
        params = windows_script.extract_probe_params(call.script) if call.script else None
        if params is not None:
            return emulate_probe(state, params, now=time.time())
        if call.script is not None:
            first = call.script.split()[0] if call.script.split() else ""
            return Reply(stderr=f"{first} : The term '{first}' is not recognized as the name of a cmdlet, function, "
                                "script file, or operable program.\n", rc=1)
        name = call.command.split()[0] if call.command.split() else call.command
        return Reply(stderr=f"'{name}' is not recognized as an internal or external command,\n"
                            "operable program or batch file.\n", rc=1)

    def handle(self, req: soap.Request, *, endpoint: str, user: str, client_ip: str) -> tuple[int, str]:
        """Answer one request: (HTTP status, SOAP envelope)."""
        state = self.state
        self.requests.append(req.action.rsplit("/", 1)[-1])
        if req.action == soap.ACTION_CREATE:
            shell_id = str(uuid.uuid4()).upper()
            with self._lock:
                self._shells[shell_id] = {}
            return 200, soap.create_response(req, shell_id=shell_id, endpoint=endpoint, owner=user, client_ip=client_ip)
        with self._lock:
            shell = self._shells.get(req.shell_id or "")
        if shell is None:
            return 500, soap.shell_not_found_fault(req, machine=state.hostname)
        if req.action == soap.ACTION_COMMAND:
            return self._command(req, shell, state)
        if req.action == soap.ACTION_RECEIVE:
            return self._receive(req, shell, state)
        if req.action == soap.ACTION_SIGNAL:
            cmd = shell.pop(req.command_id or "", None)
            if cmd is not None:
                cmd.signalled.set()
            return 200, soap.signal_response(req)
        if req.action == soap.ACTION_SEND:
            return 200, soap.send_response(req)
        if req.action == soap.ACTION_DELETE:
            with self._lock:
                for cmd in self._shells.pop(req.shell_id or "", {}).values():
                    cmd.signalled.set()
            return 200, soap.delete_response(req)
        return 500, soap.fault_response(req, code=2150858817, subcode="w:ActionNotSupported",
                                        reason=f"The action is not supported by the service: {req.action}",
                                        machine=state.hostname)

    def _command(self, req: soap.Request, shell: dict, state: HostState) -> tuple[int, str]:
        call = ReceivedCommand(at=time.time(), shell_id=req.shell_id or "", command=req.command or "",
                               arguments=req.arguments, script=decode_powershell(req.command or "", req.arguments))
        self.commands.append(call)
        reply = _NOT_FOUND if _started_without_cmd(req, state) else self._reply_for(call, state)
        if reply.fault_code is not None:
            return 500, soap.command_start_fault(req, code=reply.fault_code, reason=reply.fault_reason,
                                                 machine=state.hostname)
        endless = reply.hang or state.hang_commands
        command_id = str(uuid.uuid4()).upper()
        shell[command_id] = _Command(progress=_to_bytes(reply.progress), stdout=_to_bytes(reply.stdout),
                                     stderr=_to_bytes(reply.stderr), rc=reply.rc,
                                     ready_at=float("inf") if endless else time.monotonic() + reply.delay_s)
        return 200, soap.command_response(req, command_id=command_id)

    def _receive(self, req: soap.Request, shell: dict, state: HostState) -> tuple[int, str]:
        if req.command_id is None:  # e.g. polling a process that was never started
            return 500, soap.invalid_parameter_fault(req, machine=state.hostname)
        cmd = shell.get(req.command_id)
        if cmd is None:
            return 500, soap.command_not_found_fault(req, machine=state.hostname)
        wait = cmd.ready_at - time.monotonic()
        if wait > 0 and cmd.progress:
            progress, cmd.progress = cmd.progress, b""
            return 200, soap.receive_response(req, command_id=req.command_id or "", stdout=progress, stderr=b"",
                                              exit_code=None)
        if wait > req.operation_timeout_s:
            # Like Windows: hold the Receive for OperationTimeout, then fault (unless signalled).
            cmd.signalled.wait(req.operation_timeout_s)
            return 500, soap.operation_timeout_fault(req, machine=state.hostname)
        if wait > 0:
            cmd.signalled.wait(wait)
        out, err, cmd.stdout, cmd.stderr = cmd.stdout, cmd.stderr, b"", b""
        return 200, soap.receive_response(req, command_id=req.command_id or "", stdout=out, stderr=err,
                                          exit_code=cmd.rc)
