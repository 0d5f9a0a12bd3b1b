"""The one PowerShell script a Windows host probe sends, and the parser of what it prints.

All checks of a host (service states, boot time, free space of the data volumes, clock)
run in ONE script so a probe costs one WinRM command. The script prints one line of
compact JSON; :func:`parse_probe_output` turns it into a :class:`ProbeReport` or raises
:class:`ProbeOutputError` with a short reason.

The parameters (service names, paths) travel as a JSON literal inside the script, never
spliced into PowerShell code, so a service name cannot inject code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PROBE_MARKER = "# cr-orchestrator windows host probe v1"
_PARAMS_RE = re.compile(r"^\$crParams = ConvertFrom-Json '(?P<json>(?:[^']|'')*)'$", re.MULTILINE)

_SCRIPT_BODY = r"""
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$os = Get-CimInstance -ClassName Win32_OperatingSystem
$services = @(foreach ($name in @($crParams.services)) {
    $svc = Get-Service -Name $name -ErrorAction SilentlyContinue
    if ($svc) { [pscustomobject]@{ name = $name; status = [string]$svc.Status } }
    else { [pscustomobject]@{ name = $name; status = 'NotFound' } }
})
$volumes = @(foreach ($path in @($crParams.paths)) {
    $root = [System.IO.Path]::GetPathRoot($path)
    try {
        $drive = New-Object System.IO.DriveInfo -ArgumentList $root
        [pscustomobject]@{ path = $path; root = $root; free = $drive.AvailableFreeSpace;
            size = $drive.TotalSize; error = $null }
    } catch {
        [pscustomobject]@{ path = $path; root = $root; free = $null; size = $null; error = $_.Exception.Message }
    }
})
function Read-CrRecord([string]$Path) {
    # Only characters a record may hold; $null when the file does not exist, '' when it
    # cannot be read (which the orchestrator treats as malformed, never as absent).
    if (-not (Test-Path -LiteralPath $Path -PathType Leaf)) { return $null }
    try { return ((Get-Content -LiteralPath $Path -Raw) -replace '[^0-9A-Za-z .-]', '').Trim() }
    catch { return '' }
}
$records = $null
if ($crParams.records) {
    $records = [pscustomobject]@{
        epoch = Read-CrRecord $crParams.records[0]
        role = Read-CrRecord $crParams.records[1]
    }
}
[pscustomobject]@{
    v = 1
    clock_ms = [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()
    boot_s = ([DateTimeOffset]$os.LastBootUpTime).ToUnixTimeSeconds()
    services = $services
    volumes = $volumes
    records = $records
} | ConvertTo-Json -Compress -Depth 4
"""


class ProbeOutputError(ValueError):
    """The probe's output is not the JSON document the script prints."""


@dataclass(frozen=True)
class VolumeReport:
    path: str
    root: str
    free_bytes: int | None
    size_bytes: int | None
    error: str | None = None


@dataclass(frozen=True)
class ProbeReport:
    """What the host said about itself."""

    clock_s: float  # host clock, unix seconds (UTC)
    boot_s: float  # last boot, unix seconds
    services: dict[str, str]  # name -> Windows status string ("Running", "Stopped", "NotFound", ...)
    volumes: tuple[VolumeReport, ...]
    records: dict[str, str | None] | None = None  # {"epoch": text|None, "role": text|None}; None: not asked


def _ps_single_quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def build_probe_script(*, services: Sequence[str], data_paths: Sequence[str],
                       record_files: tuple[str, str] | None = None) -> str:
    """The PowerShell script checking ``services`` and the volumes holding ``data_paths``
    (and reading the cluster's epoch and role records, ``record_files``)."""
    wanted: dict[str, list[str]] = {"services": list(services), "paths": list(data_paths)}
    if record_files is not None:
        wanted["records"] = list(record_files)
    params = json.dumps(wanted, separators=(",", ":"))
    return f"{PROBE_MARKER}\n$crParams = ConvertFrom-Json {_ps_single_quoted(params)}\n{_SCRIPT_BODY.lstrip()}"


def extract_probe_params(script: str) -> dict[str, Any] | None:
    """The parameters of a probe script built by :func:`build_probe_script`, else None
    (the JSON object :func:`build_probe_script` wrote: ``services``, ``paths``, maybe
    ``records``)."""
    if not script.startswith(PROBE_MARKER):
        return None
    match = _PARAMS_RE.search(script)
    if not match:
        return None
    params: dict[str, Any] = json.loads(match.group("json").replace("''", "'"))  # parsed JSON
    return params


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(doc: Mapping[str, object], key: str) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProbeOutputError(f"probe output has no number {key!r}")
    return float(value)


def _as_list(value: object) -> list[object]:
    # ConvertTo-Json in Windows PowerShell 5.1 may turn a one-element array into the element.
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _volume(item: object) -> VolumeReport:
    if not isinstance(item, dict) or not isinstance(item.get("path"), str):
        raise ProbeOutputError(f"probe output has a malformed volume entry: {_short(repr(item))}")
    free, size = item.get("free"), item.get("size")
    return VolumeReport(
        path=item["path"], root=str(item.get("root") or ""),
        free_bytes=int(free) if isinstance(free, (int, float)) else None,
        size_bytes=int(size) if isinstance(size, (int, float)) else None,
        error=_short(str(item["error"])) if item.get("error") else None,
    )


def parse_probe_output(stdout: str) -> ProbeReport:
    """Parse what the probe script printed; raise :class:`ProbeOutputError` if it is not that."""
    text = stdout.strip().lstrip("\ufeff")
    try:
        doc = json.loads(text)
    except ValueError:
        raise ProbeOutputError(f"probe output is not JSON: {_short(text) or '(empty)'!r}") from None
    if not isinstance(doc, dict) or doc.get("v") != 1:
        raise ProbeOutputError(f"probe output is not a version 1 probe report: {_short(text)!r}")
    services: dict[str, str] = {}
    for item in _as_list(doc.get("services")):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProbeOutputError(f"probe output has a malformed service entry: {_short(repr(item))}")
        services[item["name"]] = str(item.get("status"))
    records = doc.get("records")
    if records is not None and not (isinstance(records, dict) and all(
            isinstance(records.get(k), (str, type(None))) for k in ("epoch", "role"))):
        raise ProbeOutputError(f"probe output has malformed records: {_short(repr(records))}")
    return ProbeReport(
        clock_s=_number(doc, "clock_ms") / 1000.0,
        boot_s=_number(doc, "boot_s"),
        services=services,
        volumes=tuple(_volume(v) for v in _as_list(doc.get("volumes"))),
        records={k: records.get(k) for k in ("epoch", "role")} if records else None,
    )
