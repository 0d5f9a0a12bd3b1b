"""The peer vantage: another member checks the primary's service from where it stands.

If the orchestrator cannot see the primary but the secondary still reads its SMTP
greeting, the orchestrator is the one cut off, and nobody should fail over. The peer runs
one generated script through its own session (SSH for Linux, WinRM/PowerShell for
Windows) that connects to each check's address and port, sends the same request the
orchestrator would, and prints one line per check::

    CRPEER <index> <rc> <elapsed_ms> <base64 of the first answer bytes>

rc 0 = answered, 124 = no answer within the deadline, 111 = could not connect, 112 =
connection refused (the host answered, nothing listens). The
orchestrator classifies the bytes with :func:`cr_orchestrator.observe.protocol.classify`,
so both vantages judge by the same rules. Observations carry ``vantage=<peer name>``.

The PowerShell script is checked by unit tests for its structure and output format only:
there is no Windows host here, so it has not run under real PowerShell.
"""

from __future__ import annotations

import base64
import binascii
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cr_orchestrator.observe.health import Health, Observation
from cr_orchestrator.model import Check, CheckKind, Host, Platform
from cr_orchestrator.observe import protocol, linux_host
from cr_orchestrator.observe.protocol import CheckTarget

if TYPE_CHECKING:  # imported when first used (owned by the WinRM helper)
    from cr_orchestrator.remote.winrm import WinRMShell, WinRMShellPool

RC_ANSWERED, RC_CONNECT_FAILED, RC_REFUSED, RC_TIMEOUT = 0, 111, 112, 124
MARK = "CRPEER"
READ_LIMIT = 1024
SESSION_ALLOWANCE_S = 0.5  # inside the round's margin (probes.ROUND_MARGIN_S)


@dataclass(frozen=True)
class PeerAnswer:
    """One parsed result line from the peer's script."""

    index: int
    rc: int
    elapsed_s: float
    data: bytes


def _read_command(check: Check) -> str:
    if protocol.reads_line(check):
        return f"head -n 1 <&3 | head -c {READ_LIMIT}"
    # One read(): a PRELOGIN answer is one small packet; waiting for a byte count would
    # run into the deadline when the server sends fewer bytes than asked for.
    return f"dd bs={READ_LIMIT} count=1 status=none <&3"


def _bash_printf_escape(payload: bytes) -> str:
    return "".join(f"\\x{b:02x}" for b in payload)


def build_linux_script(*, targets: list[CheckTarget], timeout_s: float) -> str:
    """A bash script reading each target's banner through ``/dev/tcp`` on the peer.

    Every check runs at once in a subshell of one bash, under one ``timeout`` for them
    all; a check still running then is said timed out (rc 124). A peer backs every
    cluster of a group it is a member of in one session a tick, so a check costs a fork,
    not five processes: bash's clock (``EPOCHREALTIME``; ``date`` where bash is older
    than 5), no process for a plain TCP check, one directory for every check's errors."""
    secs = f"{max(timeout_s, 0.1):.2f}"
    checks = [
        "d=$1",
        # US: microseconds since the epoch, without a process where bash has its clock
        'us() { local t=${EPOCHREALTIME:-}; [ -n "$t" ] || t=$(date +%s.%6N); US=${t/./}; }',
    ]
    for index, target in enumerate(targets):
        check = target.check
        payload = protocol.request_bytes(check=check, address=target.address)
        send = f"printf '{_bash_printf_escape(payload)}' >&3; " if payload else ""
        read = "" if check.kind is CheckKind.TCP else \
            f"out=$({_read_command(check)} | base64 -w0); "
        checks += [
            "( us; t0=$US; out=''",
            f'  if {{ exec 3<>/dev/tcp/{target.address}/{check.port}; }} 2>"$d/{index}"; then'
            f" {send}{read}rc={RC_ANSWERED}",
            # "refused" means the host's kernel answered: alive, the service is not there.
            f'  else rc={RC_CONNECT_FAILED}; e=; read -r e <"$d/{index}";'
            f" [[ ${{e,,}} == *refused* ]] && rc={RC_REFUSED}; fi",
            f'  us; echo "{MARK} {index} $rc $(( (US - t0) / 1000 )) $out" ) &',
        ]
    checks.append("wait")
    indexes = " ".join(str(i) for i in range(len(targets)))
    return "\n".join([
        "set -o pipefail", "export LC_ALL=C",
        'd=$(mktemp -d) || exit 1', "trap 'rm -rf \"$d\"' EXIT",
        f'got=$(timeout -k 1 {secs} bash -c {shlex.quote(chr(10).join(checks))} _ "$d")',
        '[ -n "$got" ] && printf \'%s\\n\' "$got"',
        f'for i in {indexes}; do [[ $got == *"{MARK} $i "* ]] ||'
        f' echo "{MARK} $i {RC_TIMEOUT} {int(max(timeout_s, 0.1) * 1000)}"; done',
    ]) + "\n"


def _ps_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def build_windows_script(*, targets: list[CheckTarget], timeout_s: float) -> str:
    """A PowerShell script doing the same banner reads with System.Net.Sockets.TcpClient."""
    ms = max(100, int(timeout_s * 1000))
    rows = []
    for index, target in enumerate(targets):
        check = target.check
        payload = base64.b64encode(protocol.request_bytes(check=check, address=target.address))
        mode = "none" if check.kind is CheckKind.TCP else (
            "line" if protocol.reads_line(check) else "bytes")
        rows.append(f"@({index}, {_ps_quote(target.address)}, {check.port}, "
                    f"'{payload.decode()}', '{mode}')")
    table = ",\n  ".join(rows)
    return _WINDOWS_TEMPLATE.replace("__TARGETS__", table).replace("__MS__", str(ms)).replace(
        "__LIMIT__", str(READ_LIMIT))


_WINDOWS_TEMPLATE = r"""$ErrorActionPreference = 'Stop'
$targets = @(
  __TARGETS__
)
foreach ($t in $targets) {
  $sw = [Diagnostics.Stopwatch]::StartNew()
  $rc = 0; $got = New-Object System.Collections.Generic.List[byte]
  $client = New-Object System.Net.Sockets.TcpClient
  try {
    $task = $client.ConnectAsync($t[1], [int]$t[2])
    if (-not $task.Wait(__MS__)) { $rc = 124 }
    elseif (-not $client.Connected) { $rc = 111 }
    else {
      $stream = $client.GetStream()
      $send = [Convert]::FromBase64String($t[3])
      if ($send.Length -gt 0) { $stream.Write($send, 0, $send.Length) }
      $buf = New-Object byte[] 1
      while ($t[4] -ne 'none' -and $got.Count -lt __LIMIT__) {
        $left = __MS__ - $sw.ElapsedMilliseconds
        if ($left -le 0) { $rc = 124; break }
        $read = $stream.ReadAsync($buf, 0, 1)
        if (-not $read.Wait([int]$left)) { $rc = 124; break }
        if ($read.Result -eq 0) { break }
        $got.Add($buf[0])
        if ($t[4] -eq 'line' -and $buf[0] -eq 10) { break }
        if ($t[4] -eq 'bytes' -and $got.Count -ge 8) {
          $want = [int]$got[2] * 256 + [int]$got[3]
          if ($got.Count -ge $want) { break }
        }
      }
    }
  } catch {
    if ($rc -eq 0) { $rc = 111 }
    $e = $_.Exception
    while ($e.InnerException) { $e = $e.InnerException }
    if ($e -is [System.Net.Sockets.SocketException] -and
        $e.SocketErrorCode -eq [System.Net.Sockets.SocketError]::ConnectionRefused) { $rc = 112 }
  }
  finally { $client.Close() }
  $b64 = [Convert]::ToBase64String($got.ToArray())
  Write-Output ("CRPEER {0} {1} {2} {3}" -f $t[0], $rc, $sw.ElapsedMilliseconds, $b64)
}
"""


def parse_answers(text: str) -> dict[int, PeerAnswer]:
    """The ``CRPEER`` lines of the script's output, by index; other lines are ignored."""
    answers: dict[int, PeerAnswer] = {}
    for line in text.splitlines():
        parts = line.strip().split(" ")
        if len(parts) < 4 or parts[0] != MARK:
            continue
        try:
            index, rc, elapsed_ms = int(parts[1]), int(parts[2]), int(parts[3])
            data = base64.b64decode(parts[4], validate=True) if len(parts) > 4 and parts[4] else b""
        except (ValueError, binascii.Error):
            continue
        answers[index] = PeerAnswer(index, rc, elapsed_ms / 1000.0, data)
    return answers


def judge(*, target: CheckTarget, answer: PeerAnswer | None, peer: str, at: float,
          timeout_s: float) -> Observation:
    """One peer observation of ``target`` from the parsed answer (pure)."""
    subject = protocol.subject_of(target.check, target.address)
    error: str | None
    detail: dict[str, object] = {"address": target.address, "port": target.check.port,
                                 "target": target.target}
    if target.service:
        detail["service"] = target.service
    if answer is None:
        return Observation(target.host, peer, "vantage", Health.UNREACHABLE, at, None,
                           f"peer {peer} reported nothing for {subject}", detail)
    if answer.rc == RC_TIMEOUT:
        health, error = Health.UNREACHABLE, f"no answer within {timeout_s:.1f}s (seen from {peer})"
    elif answer.rc == RC_REFUSED:
        health, error = Health.UNREACHABLE, f"connection refused (seen from {peer})"
        detail["refused"] = True
    elif answer.rc == RC_CONNECT_FAILED:
        health, error = Health.UNREACHABLE, f"could not connect (seen from {peer})"
    else:
        verdict = protocol.slow_verdict(
            verdict=protocol.classify(check=target.check, data=answer.data),
            elapsed_s=answer.elapsed_s, slow_s=timeout_s / 2)
        health, error = verdict.health, verdict.error
        detail.update(verdict.detail)
    return Observation(target.host, peer, subject, health, at, round(answer.elapsed_s, 4),
                       error, detail)


def vantage_failed(*, targets: list[CheckTarget], peer: str, at: float, latency_s: float,
                   error: str) -> list[Observation]:
    """The peer could not run its checks: say so, without claiming anything of the target.

    Subject ``vantage`` is not a check, so the detector gives it no weight for the target.
    """
    hosts = sorted({t.host for t in targets})
    return [Observation(h, peer, "vantage", Health.UNREACHABLE, at, latency_s,
                        f"peer {peer} could not run its checks: {error}") for h in hosts]


_PEER_POOL: WinRMShellPool | None = None


def _peer_pool() -> WinRMShellPool:
    """Peer scripts get their own shells: the host probe of the same host runs concurrently."""
    global _PEER_POOL
    if _PEER_POOL is None:
        from cr_orchestrator.remote.winrm import WinRMShellPool  # owned by the WinRM helper

        _PEER_POOL = WinRMShellPool()
    return _PEER_POOL


def _run_windows(peer: Host, script: str, deadline_s: float,
                 shell: WinRMShell | None) -> tuple[str | None, str]:
    if peer.winrm is None:
        return None, f"no WinRM settings for {peer.name}"
    try:
        shell = shell or _peer_pool().get(address=peer.management_address, settings=peer.winrm)
        result = shell.run_ps(script, deadline_s=deadline_s)
    except Exception as exc:  # noqa: BLE001 - a probe reports, it never raises
        return None, f"{type(exc).__name__}: {exc}"[:200]
    if result.timed_out or result.error:
        return None, result.error or f"no answer within {deadline_s:.1f}s"
    return result.stdout, ""


def _run_linux(peer: Host, script: str, deadline_s: float,
               control_dir: Path | None) -> tuple[str | None, str]:
    control_dir = control_dir or linux_host.default_control_dir()
    try:
        control_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        return None, f"cannot create ssh control dir {control_dir}: {exc}"
    connect_timeout_s = deadline_s
    deadline_s += linux_host.session_deadline(host=peer, control_dir=control_dir, timeout_s=0.0)
    argv = linux_host.build_ssh_command(host=peer, control_dir=control_dir,
                                       connect_timeout_s=connect_timeout_s,
                                       remote_command="bash -s")
    run = linux_host.run_ssh(argv=argv, deadline_s=deadline_s, stdin=script)
    if run.timed_out:
        return None, f"no answer over SSH within {deadline_s:.1f}s"
    if run.rc == 255 or run.rc is None:
        last = (run.stderr.strip().splitlines() or ["failed"])[-1][:200]
        return None, last if last.startswith("ssh:") else f"ssh: {last}"
    return run.stdout, ""


def probe_from_peer(*, peer: Host, targets: list[CheckTarget], timeout_s: float,
                    at: float | None = None, control_dir: Path | None = None,
                    shell: WinRMShell | None = None) -> list[Observation]:
    """Have ``peer`` run ``targets`` within ``timeout_s`` in total; never raises.

    Each connect/read gets a share of the budget so the session's own set-up fits too.
    """
    return probe_from_peer_groups(peer=peer, groups=[targets], timeout_s=timeout_s, at=at,
                                  control_dir=control_dir, shell=shell)[0]


def probe_from_peer_groups(*, peer: Host, groups: list[list[CheckTarget]], timeout_s: float,
                           at: float | None = None, control_dir: Path | None = None,
                           shell: WinRMShell | None = None) -> list[list[Observation]]:
    """:func:`probe_from_peer` of several groups of targets (several clusters' checks
    from the same peer) in one session; the observations of each group, in order."""
    at = time.time() if at is None else at
    targets = [t for group in groups for t in group]
    if not targets:
        return [[] for _ in groups]
    per_check = max(0.2, timeout_s * 0.6)
    # The session itself (mux'ed SSH, process start on a loaded peer) needs its own share:
    # a peer that timed out its own session would say nothing about the target.
    session = timeout_s + SESSION_ALLOWANCE_S
    started = time.monotonic()
    if peer.platform is Platform.WINDOWS:
        script = build_windows_script(targets=targets, timeout_s=per_check)
        # PowerShell reads the targets one after another.
        out, error = _run_windows(peer, script, session + per_check * (len(targets) - 1), shell)
    else:
        script = build_linux_script(targets=targets, timeout_s=per_check)
        out, error = _run_linux(peer, script, session, control_dir)
    latency = round(time.monotonic() - started, 4)
    if out is None:
        return [vantage_failed(targets=group, peer=peer.name, at=at, latency_s=latency,
                               error=error) if group else [] for group in groups]
    answers = parse_answers(out)
    result, first = [], 0
    for group in groups:
        result.append([judge(target=t, answer=answers.get(first + i), peer=peer.name, at=at,
                             timeout_s=per_check) for i, t in enumerate(group)])
        first += len(group)
    return result
