"""The simulator's pieces against pywinrm's own code, without sockets."""

from __future__ import annotations

import base64

import pytest
import requests
import spnego
from requests_ntlm.requests_ntlm import ShimSessionSecurity
from winrm.encryption import Encryption
from winrm.exceptions import WinRMOperationTimeoutError, WinRMTransportError, WSManFaultError
from winrm.protocol import Protocol

from cr_orchestrator.remote.winrm import clean_clixml
from cr_orchestrator.testworld.wsman_sim import HostState, Reply, decode_powershell
from cr_orchestrator.testworld.wsman_sim import auth, soap
from cr_orchestrator.testworld.wsman_sim.host import SimHost


def ps_command(script: str, prefix: str = "powershell -encodedcommand") -> str:
    return f"{prefix} {base64.b64encode(script.encode('utf-16-le')).decode()}"


@pytest.mark.parametrize("command", [
    ps_command("Get-Service 'MDaemon' | ConvertTo-Json"),  # what winrm.Session.run_ps sends
    ps_command("Get-Service 'MDaemon' | ConvertTo-Json", "powershell -NoProfile -NonInteractive -EncodedCommand"),
    ps_command("Get-Service 'MDaemon' | ConvertTo-Json",
               "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe -e"),
])
def test_decode_powershell_encodedcommand(command):
    assert decode_powershell(command, ()) == "Get-Service 'MDaemon' | ConvertTo-Json"


def test_plain_commands_are_not_powershell():
    assert decode_powershell("robocopy", ("D:\\a", "E:\\b")) is None
    assert decode_powershell("powershell -encodedcommand !!notbase64", ()) is None


class _Captured(Exception):
    pass


def pywinrm_request(call) -> soap.Request:
    """The request pywinrm's Protocol would send for ``call(protocol)``, parsed by the simulator."""
    protocol = Protocol("http://127.0.0.1:5985/wsman", username="u", password="p", transport="basic")
    sent = []

    def capture(message):
        sent.append(message)
        raise _Captured

    protocol.transport.send_message = capture
    with pytest.raises(_Captured):
        call(protocol)
    return soap.parse_request(sent[0].encode() if isinstance(sent[0], str) else sent[0])


def test_parse_pywinrm_requests():
    create = pywinrm_request(lambda p: p.open_shell(env_vars={"A": "1"}))
    assert create.action == soap.ACTION_CREATE and create.environment == (("A", "1"),)
    command = pywinrm_request(lambda p: p.run_command("SHELL-1", "robocopy", ["D:\\a", "E:\\b"]))
    assert (command.shell_id, command.command, command.arguments) == ("SHELL-1", "robocopy", ("D:\\a E:\\b",))
    receive = pywinrm_request(lambda p: p.get_command_output_raw("SHELL-1", "CMD-1"))
    assert (receive.action, receive.command_id, receive.operation_timeout_s) == (soap.ACTION_RECEIVE, "CMD-1", 20.0)
    signal = pywinrm_request(lambda p: p.cleanup_command("SHELL-1", "CMD-1"))
    assert signal.signal_code.endswith("/signal/terminate") and signal.message_id.startswith("uuid:")


def answering(reply_xml: str, status: int = 200) -> Protocol:
    protocol = Protocol("http://127.0.0.1:5985/wsman", username="u", password="p", transport="basic")

    def send(message):
        if status != 200:
            raise WinRMTransportError("http", status, reply_xml)
        return reply_xml.encode()

    protocol.transport.send_message = send
    return protocol


REQ = soap.Request(action=soap.ACTION_RECEIVE, message_id="uuid:1", shell_id="S", operation_timeout_s=1.0,
                   command_id="C")


def test_pywinrm_reads_our_receive_replies():
    running = soap.receive_response(REQ, command_id="C", stdout=b"part", stderr=b"", exit_code=None)
    assert answering(running).get_command_output_raw("S", "C") == (b"part", b"", -1, False)
    done = soap.receive_response(REQ, command_id="C", stdout=b"out\r\n", stderr=b"err", exit_code=3)
    assert answering(done).get_command_output_raw("S", "C") == (b"out\r\n", b"err", 3, True)


def test_pywinrm_reads_our_faults():
    timeout = soap.operation_timeout_fault(REQ, machine="WIN1")
    with pytest.raises(WinRMOperationTimeoutError):
        answering(timeout, 500).get_command_output_raw("S", "C")
    gone = soap.shell_not_found_fault(REQ, machine="WIN1")
    with pytest.raises(WSManFaultError) as info:
        answering(gone, 500).run_command("S", "x")
    assert info.value.wsman_fault_code == soap.FAULT_SHELL_NOT_FOUND
    assert "shell was not found" in info.value.reason


@pytest.mark.parametrize("fault, code, subcode, value", [
    (soap.command_not_found_fault, 2150858843, "w:InvalidSelectors", "s:Sender"),
    (soap.invalid_parameter_fault, 87, "w:InvalidParameter", "s:Sender"),
])
def test_pywinrm_reads_our_receive_faults(fault, code, subcode, value):
    with pytest.raises(WSManFaultError) as info:
        answering(fault(REQ, machine="WIN1"), 500).get_command_output_raw("S", "C")
    assert (info.value.wsman_fault_code, info.value.fault_subcode, info.value.fault_code) == (code, subcode, value)


def test_create_echoes_working_directory_and_idle_timeout():
    create = pywinrm_request(lambda p: p.open_shell(working_directory="C:\\Windows", idle_timeout="PT60S"))
    assert (create.working_directory, create.idle_timeout_s) == ("C:\\Windows", 60.0)
    reply = soap.create_response(create, shell_id="S1", endpoint="http://h/wsman", owner="u", client_ip="1.2.3.4")
    assert ("<rsp:WorkingDirectory>C:\\Windows</rsp:WorkingDirectory>"
            "<rsp:IdleTimeOut>PT60.000S</rsp:IdleTimeOut>") in reply
    default = soap.create_response(pywinrm_request(lambda p: p.open_shell()), shell_id="S1", endpoint="http://h/wsman",
                                   owner="u", client_ip="1.2.3.4")
    assert "WorkingDirectory" not in default and "<rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>" in default


def command_status(host: SimHost, command: str, *, skip_cmd_shell: bool) -> int:
    """The HTTP status the host answers a Command with, in a fresh shell."""
    created = host.handle(pywinrm_request(lambda p: p.open_shell()), endpoint="e", user="u", client_ip="c")[1]
    shell_id = created.split("<rsp:ShellId>")[1].split("<")[0]
    req = pywinrm_request(lambda p: p.run_command(shell_id, command, ["Write-Host", "hi"],
                                                  skip_cmd_shell=skip_cmd_shell))
    return host.handle(req, endpoint="e", user="u", client_ip="c")[0]


def test_skip_cmd_shell_needs_a_full_path_only_where_windows_honours_it():
    host = SimHost(HostState(honour_skip_cmd_shell=True))
    host.register(".*", Reply(stdout="hi\n"))
    assert command_status(host, "powershell.exe", skip_cmd_shell=True) == 500  # not searched on PATH
    assert command_status(host, "C:\\Windows\\system32\\WindowsPowerShell\\v1.0\\powershell.exe",
                          skip_cmd_shell=True) == 200
    assert command_status(host, "powershell.exe", skip_cmd_shell=False) == 200  # cmd.exe finds it
    assert command_status(SimHost(HostState()), "powershell.exe", skip_cmd_shell=True) == 200  # option ignored


def test_host_state_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown host state keys: servics"):
        HostState.from_dict({"servics": {}})


class _Session:
    def __init__(self, security):
        self.auth = type("Auth", (), {"session_security": security})()

    def prepare_request(self, request):
        return requests.Session().prepare_request(request)


def test_ntlm_message_encryption_matches_pywinrm_both_ways(tmp_path):
    users = auth.write_ntlm_user_file({"Administrator": "pw-unit"}, str(tmp_path))
    client = spnego.client("Administrator", "pw-unit", protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
    server = auth.NtlmConnection(users)
    challenge, done = server.step(client.step())
    assert challenge and not done
    _, done = server.step(client.step(challenge))
    assert done and server.user.endswith("Administrator")

    session = _Session(ShimSessionSecurity(client))
    encryption = Encryption(session, "ntlm")
    request = encryption.prepare_encrypted_request(session, "http://127.0.0.1:5985/wsman", b"<s:Envelope/>")
    assert server.decrypt(request.body) == b"<s:Envelope/>"

    reply = requests.Response()
    reply._content = server.encrypt("<réponse/>".encode())
    reply.headers["Content-Type"] = auth.ENCRYPTED_CONTENT_TYPE
    reply.request = request
    assert encryption.parse_encrypted_response(reply) == "<réponse/>".encode()


def test_ntlm_wrong_password_is_not_authenticated(tmp_path):
    users = auth.write_ntlm_user_file({"Administrator": "pw-unit"}, str(tmp_path))
    client = spnego.client("Administrator", "other", protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
    server = auth.NtlmConnection(users)
    challenge, _ = server.step(client.step())
    assert server.step(client.step(challenge)) == (None, False)
    assert not server.authenticated


def test_powershell_clixml_errors_become_text():
    clixml = ('#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
              '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T></TN>'
              '</Obj><S S="Error">Get-Service : Cannot find any service with service name \'x\'._x000D__x000A_</S>'
              '<S S="Error">At line:1 char:1_x000D__x000A_</S></Objs>')
    assert clean_clixml(clixml) == "Get-Service : Cannot find any service with service name 'x'.\nAt line:1 char:1"
    assert clean_clixml("plain error\r\n") == "plain error\r\n"
    assert clean_clixml("#< CLIXML\r\n<Objs") == "#< CLIXML\r\n<Objs"  # not XML: left as is
