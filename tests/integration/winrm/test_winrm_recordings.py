"""Our simulator against a real Windows host's recorded WinRS exchanges.

1. Structure: the simulator, set up to reproduce each recording's situation, is sent the
   recorded requests (IDs mapped to its own) and must answer with the same HTTP status
   (500 for a fault), elements, attributes, namespaces, streams and CommandState as Windows
   did; for a fault also the same code, subcode, fault detail, WSManFault Code and wording.
   Ids, timestamps and other text content are not compared.
2. Replay: the real Windows responses are served to our client (WinRMShell over real
   pywinrm and HTTP), which must decode the output and exit code they hold, or, for a
   fault, return one clear error naming what Windows said.

The recordings are read from shared/ beside the repository (or /work/shared) at test time
and never copied into the repo.
"""

from __future__ import annotations

import base64
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests
import yaml

from cr_orchestrator.remote.winrm import WinRMShell
from cr_orchestrator.testworld.wsman_sim import ReplayEngine, Reply, WsmanSim
from cr_orchestrator.testworld.wsman_sim.replay import recorded_status
from winrm_testlib import PASSWORD, USER, winrm_settings

# shared/ sits beside the repository (CI: a fresh clone with shared/ next to it); the
# developers' machines also have it at /work/shared. CR_WINRS_RECORDINGS overrides both.
_CANDIDATES = [Path(p) for p in (os.environ.get("CR_WINRS_RECORDINGS"),) if p] + [
    Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "winrs-recorded",
    Path("/work/shared/fixtures/winrs-recorded")]
RECORDINGS = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[-1])
RSP = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
SOAP = "{http://www.w3.org/2003/05/soap-envelope}"
WSMAN = "{http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd}"
WSMANFAULT = "{http://schemas.microsoft.com/wbem/wsman/1/wsmanfault}"
FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
COMPARED_ATTRIBUTE_VALUES = {"Name", "State", "End", "mustUnderstand"}  # the rest: presence only
# Windows adds this diagnostic header in some sessions only (5 of the 10 recordings): optional.
OPTIONAL_HEADERS = {"{http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd}ActivityId"}

pytestmark = pytest.mark.skipif(
    not RECORDINGS.is_dir() or not list(RECORDINGS.glob("*.yml")),
    reason=f"recordings of a real Windows host not found in {RECORDINGS} (present only on the project's build machine)",
)


def recordings() -> list[Path]:
    return sorted(RECORDINGS.glob("*.yml")) if RECORDINGS.is_dir() else []


def load(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))["messages"]


def action(xml: str) -> str:
    return re.search(r"<(?:\w+:)?Action[^>]*>([^<]+)<", xml).group(1)


def declared_namespaces(xml: str) -> dict[str, str]:
    start_tag = re.match(r"\s*<[^>]+>", xml).group(0)
    return dict(re.findall(r'xmlns:(\w+)="([^"]+)"', start_tag))


def shape(el: ET.Element) -> tuple:
    """Element names, attribute names (some values), children; no ids, no text."""
    # A variable's Name is data (Windows even drops a backslash from one when echoing it).
    compared = set() if el.tag == f"{{{RSP}}}Variable" else COMPARED_ATTRIBUTE_VALUES
    attrs = tuple(sorted((k, v if k in compared else "*") for k, v in el.attrib.items()))
    children = [shape(c) for c in el if c.tag not in OPTIONAL_HEADERS]
    if el.tag == f"{{{RSP}}}ReceiveResponse":
        # Windows splits a stream's data at its own boundaries: compare runs, not chunk counts.
        children = [c for i, c in enumerate(children) if i == 0 or c != children[i - 1]]
    return (el.tag, attrs, tuple(children))


def fault_facts(xml: str) -> dict:
    """What a fault says, compared as values: Windows' fixed wording and codes, not data."""
    fault = ET.fromstring(xml).find(f"{SOAP}Body/{SOAP}Fault")
    wsman = fault.find(f"{SOAP}Detail/{WSMANFAULT}WSManFault")
    provider = wsman.find(f"{WSMANFAULT}Message/{WSMANFAULT}ProviderFault")
    return {
        "code": fault.findtext(f"{SOAP}Code/{SOAP}Value"),
        "subcode": fault.findtext(f"{SOAP}Code/{SOAP}Subcode/{SOAP}Value"),
        "reason": fault.findtext(f"{SOAP}Reason/{SOAP}Text"),
        "fault_detail": fault.findtext(f"{SOAP}Detail/{WSMAN}FaultDetail"),
        "wsman_code": wsman.get("Code"),
        "message": "".join(wsman.find(f"{WSMANFAULT}Message").itertext()),
        "provider": None if provider is None else (provider.get("provider"), provider.get("path")),
    }


def reproduce(sim: WsmanSim, path: Path, messages: list[dict]) -> None:
    """Script the simulator into the situation the recording was made in."""
    out, err, rc = recorded_output(messages)
    sim.register(".*", Reply(stdout=out, stderr=err, rc=0 if rc is None else rc))
    if path.stem == "winrs_no_cmd_shell":  # recorded on Windows Server 2008 R2, which honours the option
        sim.state.honour_skip_cmd_shell = True
    # winrs_bad_cmd_id (a Receive for a CommandId the shell never had) and winrs_fail_poll_process
    # (a Receive naming no command) need no set-up: the requests themselves make the situation.


def recorded_output(messages: list[dict]) -> tuple[bytes, bytes, int]:
    """stdout, stderr and exit code in the recorded ReceiveResponse(s)."""
    out, err, rc = b"", b"", None
    for m in messages:
        if "ReceiveResponse" not in m["response"]:
            continue
        root = ET.fromstring(m["response"])
        for stream in root.iter(f"{{{RSP}}}Stream"):
            data = base64.b64decode(stream.text or "")
            if stream.get("Name") == "stdout":
                out += data
            else:
                err += data
        code = root.find(f".//{{{RSP}}}ExitCode")
        if code is not None:
            rc = int(code.text)
    return out, err, rc


@pytest.mark.parametrize("path", recordings(), ids=lambda p: p.stem)
def test_simulator_answers_with_the_structure_windows_uses(path):
    messages = load(path)
    ids: dict[str, str] = {}  # recorded ShellId/CommandId -> the simulator's
    with WsmanSim(users={USER: PASSWORD}) as sim:
        reproduce(sim, path, messages)
        http = requests.Session()
        for m in messages:
            request = m["request"]
            for recorded, ours in ids.items():
                request = request.replace(recorded, ours)
            reply = http.post(sim.endpoint, data=request.encode("utf-8"), auth=(USER, PASSWORD),
                              headers={"Content-Type": "application/soap+xml;charset=UTF-8"}, timeout=10)
            ours, windows = reply.text, m["response"]
            assert reply.status_code == recorded_status(m), (action(m["request"]), reply.text)
            assert action(ours) == action(windows), ours
            assert declared_namespaces(ours) == declared_namespaces(windows), action(windows)
            assert shape(ET.fromstring(ours)) == shape(ET.fromstring(windows)), action(windows)
            if action(windows) == FAULT_ACTION:
                assert fault_facts(ours) == fault_facts(windows), action(m["request"])
            for tag in ("ShellId", "CommandId"):
                w = re.search(rf"<rsp:{tag}>([^<]+)<", windows)
                o = re.search(rf"<rsp:{tag}>([^<]+)<", ours)
                if w and o:
                    ids[w.group(1)] = o.group(1)


def replayed_exchange(messages: list[dict]) -> list[dict]:
    """The recording as served to our client.

    winrs_fail_poll_process polls a process that was never started, which our client never
    does (it always starts one first): its Command is answered with Windows' recorded
    CommandResponse from winrs_standard, everything else as this recording holds it.
    """
    if any(action(m["request"]).endswith("/Command") for m in messages):
        return messages
    standard = load(RECORDINGS / "winrs_standard.yml")
    return [*messages, *(m for m in standard if action(m["request"]).endswith("/Command"))]


def expected_error(messages: list[dict], endpoint: str) -> str | None:
    """The error our client must give for the first fault Windows sent, or None."""
    for m in messages:
        if action(m["response"]) == FAULT_ACTION:
            facts = fault_facts(m["response"])
            operation = action(m["request"]).rsplit("/", 1)[-1]
            provider = f" ({facts['provider'][0]})" if facts["provider"] else ""
            return (f"WS-Man fault {facts['wsman_code']} ({facts['subcode']}) from {endpoint} on {operation}: "
                    f"{' '.join(facts['message'].split())}{provider}")
    return None


@pytest.mark.parametrize("path", recordings(), ids=lambda p: p.stem)
def test_client_decodes_real_windows_responses(path):
    messages = replayed_exchange(load(path))
    out, err, rc = recorded_output(messages)
    command = ET.fromstring(next(m["request"] for m in messages if "CommandLine" in m["request"]))
    exe = command.find(f".//{{{RSP}}}Command").text
    args = [a.text or "" for a in command.iter(f"{{{RSP}}}Arguments")]
    replay = ReplayEngine(messages)
    with WsmanSim(users={USER: PASSWORD}, engine=replay) as sim:
        shell = WinRMShell(address="127.0.0.1", settings=winrm_settings(sim, validate=False))
        result = shell.run_cmd(exe, args, deadline_s=5)
        shell.close()
        error = expected_error(messages, sim.endpoint)
    assert replay.unmatched == []  # every request was answered by Windows' recorded replies
    if error is not None:
        # One clear sentence naming what Windows said: no traceback, no hang, no output.
        assert result.error == error
        assert (result.rc, result.stdout, result.timed_out) == (None, "", False)
        assert result.duration_s < 2.0
        return
    assert result.error is None, result.error
    assert (result.rc, result.stdout, result.stderr) == (rc, out.decode("utf-8"), err.decode("utf-8"))
    assert result.stdout  # every recording printed something
