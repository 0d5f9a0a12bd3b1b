"""Parse WS-Man shell requests and build replies shaped like a real Windows host's.

The reply templates copy the element names, namespace prefixes and ordering of the
responses recorded from a real Windows WinRM service (see docs/windows.md): a client
that parses Windows' replies must parse these, and the structural test compares them.
"""

from __future__ import annotations

import base64
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "e": "http://schemas.xmlsoap.org/ws/2004/08/eventing",
    "n": "http://schemas.xmlsoap.org/ws/2004/09/enumeration",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
}
SHELL_URI = NS["rsp"]
ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
ACTION_COMMAND = f"{SHELL_URI}/Command"
ACTION_RECEIVE = f"{SHELL_URI}/Receive"
ACTION_SIGNAL = f"{SHELL_URI}/Signal"
ACTION_SEND = f"{SHELL_URI}/Send"
ACTION_FAULT = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
STATE_DONE = f"{SHELL_URI}/CommandState/Done"
STATE_RUNNING = f"{SHELL_URI}/CommandState/Running"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"

# WS-Man fault codes Windows uses (winerror.h, ERROR_WSMAN_*).
FAULT_OPERATION_TIMEOUT = 2150858793  # Receive: nothing to return within OperationTimeout
FAULT_SHELL_NOT_FOUND = 2150858843  # the ShellId is unknown (server restarted, shell idle-closed)
FAULT_COMMAND_NOT_FOUND = 2150858843  # the same code for an unknown CommandId (recorded)
FAULT_INVALID_PARAMETER = 87  # ERROR_INVALID_PARAMETER, from the cmd shell plugin (recorded)
FAULT_FILE_NOT_FOUND = 2147942402  # HRESULT of ERROR_FILE_NOT_FOUND: the program to start is not found (recorded)
# Faults raised by the cmd shell plugin name it in f:ProviderFault (recorded).
CMD_PLUGIN = ("Shell cmd plugin", r"%systemroot%\system32\winrscmd.dll")


class BadRequest(ValueError):
    """The request is not a WS-Man shell request this server understands."""


@dataclass(frozen=True)
class Request:
    """The parts of a WS-Man request a shell server acts on."""

    action: str
    message_id: str
    shell_id: str | None
    operation_timeout_s: float
    command_id: str | None = None  # Receive / Signal / Send: the CommandId attribute
    command: str | None = None  # Command: rsp:Command
    arguments: tuple[str, ...] = ()
    signal_code: str | None = None
    options: dict = field(default_factory=dict)
    environment: tuple[tuple[str, str], ...] = ()  # Create: rsp:Environment/rsp:Variable
    working_directory: str | None = None  # Create: rsp:WorkingDirectory
    idle_timeout_s: float | None = None  # Create: rsp:IdleTimeOut


def _text(root: ET.Element, path: str) -> str | None:
    node = root.find(path, NS)
    return node.text if node is not None else None


def _duration_s(text: str | None, default: float) -> float:
    """xs:duration as WS-Man uses it (PT20S, PT1.500S); anything else gives default."""
    if not text or not text.startswith("PT") or not text.endswith("S"):
        return default
    try:
        return float(text[2:-1])
    except ValueError:
        return default


def parse_request(body: bytes) -> Request:
    """Read one SOAP 1.2 WS-Man request; raise BadRequest when it is not one."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise BadRequest(f"request is not XML: {e}") from e
    header = root.find("s:Header", NS)
    if header is None:
        raise BadRequest("request has no SOAP 1.2 s:Header")
    action = _text(header, "a:Action") or ""
    message_id = _text(header, "a:MessageID") or ""
    shell_id = None
    for sel in header.iterfind("w:SelectorSet/w:Selector", NS):
        if sel.get("Name") == "ShellId":
            shell_id = sel.text
    options = {o.get("Name"): o.text for o in header.iterfind("w:OptionSet/w:Option", NS)}
    op_timeout = _duration_s(_text(header, "w:OperationTimeout"), 60.0)
    body_el = root.find("s:Body", NS)
    kw: dict = {}
    if body_el is not None:
        line = body_el.find("rsp:CommandLine", NS)
        if line is not None:
            kw["command"] = _text(line, "rsp:Command") or ""
            kw["arguments"] = tuple(a.text or "" for a in line.iterfind("rsp:Arguments", NS))
        for tag in ("rsp:Receive/rsp:DesiredStream", "rsp:Signal", "rsp:Send/rsp:Stream"):
            node = body_el.find(tag, NS)
            if node is not None:
                kw["command_id"] = node.get("CommandId")
        kw["signal_code"] = _text(body_el, "rsp:Signal/rsp:Code")
        kw["environment"] = tuple((v.get("Name") or "", v.text or "")
                                  for v in body_el.iterfind("rsp:Shell/rsp:Environment/rsp:Variable", NS))
        kw["working_directory"] = _text(body_el, "rsp:Shell/rsp:WorkingDirectory")
        kw["idle_timeout_s"] = _duration_s(_text(body_el, "rsp:Shell/rsp:IdleTimeOut"), 0.0) or None
    return Request(action=action, message_id=message_id, shell_id=shell_id,
                   operation_timeout_s=op_timeout, options=options, **kw)


# Which prefixes Windows declares on each reply (from the recordings).
_ALL = ("s", "a", "x", "w", "rsp", "p")
_NO_TRANSFER = ("s", "a", "w", "rsp", "p")
_DELETE = ("s", "a", "w", "p")
_FAULT = ("s", "a", "x", "e", "n", "w", "p")  # every recorded fault, whatever the request


def _envelope(action: str, relates_to: str, body: str, *, prefixes: tuple[str, ...] = _ALL) -> str:
    # Same prefixes and header order as Windows' replies in the recordings.
    declared = " ".join(f'xmlns:{p}="{NS[p]}"' for p in prefixes)
    return (
        f'<s:Envelope xml:lang="en-US" {declared}><s:Header><a:Action>{action}</a:Action>'
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID><a:To>{ANONYMOUS}</a:To>"
        f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )


def create_response(req: Request, *, shell_id: str, endpoint: str, owner: str, client_ip: str) -> str:
    """Reply to Create: the new shell's ShellId as a Selector, then the rsp:Shell."""
    # Windows echoes the shell's environment variables and working directory between ClientIP
    # and IdleTimeOut (recorded one at a time; together, in MS-WSMV's schema order), and the
    # IdleTimeOut asked for, in its own format (PT60S -> PT60.000S). Name and Lifetime: not echoed.
    env = "".join(f"<rsp:Variable Name={quoteattr(k)}>{escape(v)}</rsp:Variable>" for k, v in req.environment)
    env = f"<rsp:Environment>{env}</rsp:Environment>" if env else ""
    if req.working_directory is not None:
        env += f"<rsp:WorkingDirectory>{escape(req.working_directory)}</rsp:WorkingDirectory>"
    idle = req.idle_timeout_s or 7200.0
    body = (
        f"<x:ResourceCreated><a:Address>{escape(endpoint)}</a:Address><a:ReferenceParameters>"
        f"<w:ResourceURI>{SHELL_URI}/cmd</w:ResourceURI><w:SelectorSet>"
        f'<w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet></a:ReferenceParameters>'
        f'</x:ResourceCreated><rsp:Shell xmlns:rsp="{SHELL_URI}"><rsp:ShellId>{shell_id}</rsp:ShellId>'
        f"<rsp:ResourceUri>{SHELL_URI}/cmd</rsp:ResourceUri><rsp:Owner>{escape(owner)}</rsp:Owner>"
        f"<rsp:ClientIP>{escape(client_ip)}</rsp:ClientIP>{env}<rsp:IdleTimeOut>PT{idle:.3f}S</rsp:IdleTimeOut>"
        "<rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams>"
        "<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>"
        "</rsp:Shell>"
    )
    return _envelope(f"{ACTION_CREATE}Response", req.message_id, body)


def command_response(req: Request, *, command_id: str) -> str:
    body = f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"
    return _envelope(f"{ACTION_COMMAND}Response", req.message_id, body)


def receive_response(req: Request, *, command_id: str, stdout: bytes, stderr: bytes,
                     exit_code: int | None) -> str:
    """Reply to Receive: data streams, then (when done) End markers and CommandState Done."""
    cid = quoteattr(command_id)
    parts = []
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        if data:
            parts.append(f'<rsp:Stream Name="{name}" CommandId={cid}>{base64.b64encode(data).decode()}</rsp:Stream>')
    if exit_code is None:
        parts.append(f'<rsp:CommandState CommandId={cid} State="{STATE_RUNNING}"/>')
    else:
        for name in ("stdout", "stderr"):
            parts.append(f'<rsp:Stream Name="{name}" CommandId={cid} End="true"></rsp:Stream>')
        parts.append(f'<rsp:CommandState CommandId={cid} State="{STATE_DONE}">'
                     f"<rsp:ExitCode>{int(exit_code)}</rsp:ExitCode></rsp:CommandState>")
    body = f"<rsp:ReceiveResponse>{''.join(parts)}</rsp:ReceiveResponse>"
    return _envelope(f"{ACTION_RECEIVE}Response", req.message_id, body, prefixes=_NO_TRANSFER)


def signal_response(req: Request) -> str:
    return _envelope(f"{ACTION_SIGNAL}Response", req.message_id, "<rsp:SignalResponse/>")


def send_response(req: Request) -> str:
    return _envelope(f"{ACTION_SEND}Response", req.message_id, "<rsp:SendResponse/>")


def delete_response(req: Request) -> str:
    return _envelope(f"{ACTION_DELETE}Response", req.message_id, "", prefixes=_DELETE)


def fault_response(req: Request | None, *, code: int, subcode: str, reason: str, machine: str = "localhost",
                   message: str | None = None, sender: bool = False, detail: str | None = None,
                   provider: tuple[str, str] | None = None) -> str:
    """A SOAP 1.2 fault shaped like Windows' (sent with HTTP 500).

    ``message``: the ``f:Message`` text when Windows words it differently from ``reason``.
    ``sender``: the request was wrong (``s:Sender``), else the service failed (``s:Receiver``).
    ``detail``: the ``w:FaultDetail`` URI's last part (e.g. ``InvalidValue``), when Windows adds one.
    ``provider``: (name, path) of the shell plugin that raised it; Windows then wraps the message
    in ``f:ProviderFault``. pywinrm reads the Code attribute and ``s:Reason``.
    """
    value = "s:Sender" if sender else "s:Receiver"
    fault_detail = (f"<w:FaultDetail>http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/{detail}</w:FaultDetail>"
                    if detail else "")
    text = escape(reason if message is None else message)
    if provider is not None:
        text = (f"<f:ProviderFault provider={quoteattr(provider[0])} path={quoteattr(provider[1])}>"
                f"{text}</f:ProviderFault>")
    body = (
        f'<s:Fault><s:Code><s:Value>{value}</s:Value><s:Subcode><s:Value>{escape(subcode)}</s:Value>'
        f'</s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{escape(reason)}</s:Text></s:Reason>'
        f'<s:Detail>{fault_detail}<f:WSManFault xmlns:f="{NS["f"]}" Code="{code}" Machine={quoteattr(machine)}>'
        f"<f:Message>{text}</f:Message></f:WSManFault></s:Detail></s:Fault>"
    )
    relates = req.message_id if req else "uuid:00000000-0000-0000-0000-000000000000"
    return _envelope(ACTION_FAULT, relates, body, prefixes=_FAULT)


# Windows' wording below is copied from the recordings, trailing space included.

def command_not_found_fault(req: Request, *, machine: str) -> str:
    """Receive (or Send, Signal) naming a CommandId the shell does not have."""
    return fault_response(
        req, code=FAULT_COMMAND_NOT_FOUND, subcode="w:InvalidSelectors", machine=machine, sender=True,
        detail="UnexpectedSelectors",
        reason="The WS-Management service cannot process the request because the request contained invalid "
               "selectors for the resource. ",
        message="The Windows Remote Shell received a request to perform an operation on a command identifier "
                "that does not exist. Either the command has completed execution or the client specified an "
                "invalid command identifier. ",
    )


def invalid_parameter_fault(req: Request, *, machine: str) -> str:
    """The cmd plugin refusing a request it cannot act on, e.g. a Receive naming no command."""
    return fault_response(req, code=FAULT_INVALID_PARAMETER, subcode="w:InvalidParameter", machine=machine,
                          sender=True, detail="InvalidValue", provider=CMD_PLUGIN,
                          reason="The parameter is incorrect. ")


def command_start_fault(req: Request, *, code: int, reason: str, machine: str) -> str:
    """The cmd plugin could not start the command (e.g. 2147942402: the program was not found)."""
    return fault_response(req, code=code, subcode="w:InternalError", machine=machine, provider=CMD_PLUGIN,
                          reason=reason)


def operation_timeout_fault(req: Request, *, machine: str) -> str:
    return fault_response(
        req, code=FAULT_OPERATION_TIMEOUT, subcode="w:TimedOut", machine=machine,
        reason="The WS-Management service cannot complete the operation within the time specified in OperationTimeout.",
    )


def shell_not_found_fault(req: Request, *, machine: str) -> str:
    return fault_response(
        req, code=FAULT_SHELL_NOT_FOUND, subcode="w:InvalidSelectors", machine=machine,
        reason=f"The request for the Windows Remote Shell with ShellId {req.shell_id} failed "
               "because the shell was not found on the server.",
    )
