"""Every PowerShell script the project generates parses under a real PowerShell grammar.

There is no PowerShell here, so the scripts are parsed with tree-sitter-powershell (the
Airbus CERT grammar, from PyPI): every variant each generator produces is built, and the
parse tree is walked for ERROR and MISSING nodes; a failure names the variant and the line.

Covered, found by grepping the repository for PowerShell:

* the Python generators: the host probe (``observe/windows_script.py``, with and without
  record files), the peer checks (``observe/peer.py``), the Windows sync
  (``act/sync/robocopy_script.py``: VSS shadow, robocopy with threads or a bandwidth
  limit, cleanup, quarantine), each also with quotes and ``$`` in names and paths;
* every ``roles/*/templates/*.ps1.j2`` (and any under ``playbooks/``), rendered with
  jinja2 the way Ansible's template lookup renders them, from the role's own defaults and
  vars plus plausible inventory values;
* every ``win_powershell`` (or ``win_shell``) task under ``roles/`` and ``playbooks/``: a
  template lookup must name a template covered above, an inline script is rendered and
  parsed like a template.

What this proves: the syntax, under a third-party grammar. Not the semantics, the cmdlets
or how Windows behaves (see docs/windows.md). The grammar also accepts a few things
PowerShell rejects (a ``try`` without ``catch`` or ``finally``), so a pass is necessary,
not sufficient.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import jinja2
import pytest
import tree_sitter
import tree_sitter_powershell
import yaml

from cr_orchestrator.act import lease
from cr_orchestrator.act.sync import robocopy_script as rs
from cr_orchestrator.model import Check, CheckKind
from cr_orchestrator.observe import peer, windows_script
from cr_orchestrator.observe.protocol import CheckTarget

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
PLAYBOOKS = REPO / "playbooks"
PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))

# Places where tree-sitter-powershell rejects valid PowerShell: (variant id, the stripped
# source line the grammar flags) -> why it is valid PowerShell and a grammar gap. Each entry
# must name one line exactly and still be hit (a stale entry fails the test below); never
# a whole script or a pattern. Empty: the grammar accepts every script the project makes.
GRAMMAR_GAPS: dict[tuple[str, str], str] = {}


# ------------------------------------------------------------------ the check
def syntax_problems(script: str) -> list[tuple[int, str, str]]:
    """(line, source line, what) for each ERROR or MISSING node; [] when the script parses."""
    source = script.encode("utf-8")
    lines = script.splitlines()
    found: list[tuple[int, str, str]] = []
    stack = [PARSER.parse(source).root_node]
    while stack:
        node = stack.pop()
        row = node.start_point[0]
        text = lines[row] if row < len(lines) else ""
        if node.is_missing:
            found.append((row + 1, text, f"missing {node.type!r}"))
        elif node.is_error:
            snippet = source[node.start_byte:node.end_byte].decode("utf-8", "replace")
            found.append((row + 1, text, f"cannot parse {_short(snippet)!r}"))
        elif node.has_error:
            stack.extend(node.children)
    return sorted(found)


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def assert_parses(variant: str, script: str) -> None:
    problems = [p for p in syntax_problems(script) if (variant, p[1].strip()) not in GRAMMAR_GAPS]
    assert not problems, f"{variant}: not valid PowerShell under tree-sitter-powershell:\n" + "\n".join(
        f"  line {line}: {what}\n    {text.strip()}" for line, text, what in problems)


# ------------------------------------------------------------------ the Python generators
LINK = rs.link_path(run_id="mail-maildata-1a2b3c4d")
LOG = r"C:\ProgramData\cr-orchestrator\logs\mail-maildata-mail-b.log"
ODD_PATH = r"D:\Mail 'O''Brien' $data\MDaemon"  # quote, doubled quote, space and $ all at once


def _targets(*checks: Check, address: str = "10.0.0.1") -> list[CheckTarget]:
    return [CheckTarget(host="mail-a", address=address, check=check, service="MDaemon") for check in checks]


PYTHON_VARIANTS: dict[str, Callable[[], str]] = {
    "probe": lambda: windows_script.build_probe_script(
        services=["MDaemon", "MSSQLSERVER"], data_paths=[r"D:\MDaemon", r"E:\SQL\Data"]),
    "probe-with-record-files": lambda: windows_script.build_probe_script(
        services=["MDaemon"], data_paths=[r"D:\MDaemon"],
        record_files=(r"C:\ProgramData\cr-orchestrator\mail.epoch", r"C:\ProgramData\cr-orchestrator\mail.role")),
    "probe-quotes-in-names": lambda: windows_script.build_probe_script(
        services=["O'Brien's service", "Dienst $x"], data_paths=[ODD_PATH],
        record_files=(ODD_PATH + r"\it's.epoch", ODD_PATH + r"\it's.role")),
    "probe-nothing-asked": lambda: windows_script.build_probe_script(services=[], data_paths=[]),
    "peer-every-check-kind": lambda: peer.build_windows_script(targets=_targets(
        Check(CheckKind.SMTP, 25), Check(CheckKind.POP3, 110), Check(CheckKind.IMAP, 143),
        Check(CheckKind.HTTP, 80, path="/health"), Check(CheckKind.HTTPS, 443), Check(CheckKind.TCP, 3389),
        Check(CheckKind.SQL, 1433)), timeout_s=2.0),
    "peer-one-tcp-check": lambda: peer.build_windows_script(
        targets=_targets(Check(CheckKind.TCP, 22), address="fe80::1"), timeout_s=0.05),
    "vss-create-shadow": lambda: rs.create_shadow_script(volume="D:\\", link=LINK),
    "robocopy-threads": lambda: rs.robocopy_script(
        source=LINK + r"\MDaemon", destination=rs.unc_path(address="10.0.0.2", path=r"D:\MDaemon"),
        log_path=LOG, options=rs.RobocopyOptions()),
    "robocopy-bandwidth-limit-and-excludes": lambda: rs.robocopy_script(
        source=LINK + r"\MDaemon", destination=rs.unc_path(address="10.0.0.2", path=r"MailShare\MDaemon"),
        log_path=LOG, options=rs.RobocopyOptions(bandwidth_limit_kbps=10_000,
                                                 excludes=("Logs\\", "Temp/", "*.tmp", "it's *.lck"))),
    "robocopy-quotes-in-paths": lambda: rs.robocopy_script(
        source=ODD_PATH, destination=rs.unc_path(address="10.0.0.2", path=ODD_PATH),
        log_path=r"C:\ProgramData\cr-orchestrator\logs\it's $x.log", options=rs.RobocopyOptions(excludes=("$x",))),
    "vss-cleanup-known-shadow": lambda: rs.cleanup_script(
        link=LINK, shadow_id="{6C3E1F0A-1111-2222-3333-444455556666}"),
    "vss-cleanup-shadow-from-state-file": lambda: rs.cleanup_script(link=LINK, shadow_id=None),
    "continuous-window": lambda: rs.continuous_script(
        root=r"D:\MDaemon", epoch=3, own_epoch_record=r"C:\ProgramData\cr-orchestrator\mail.epoch",
        targets=(rs.WatchTarget("mail-b", rs.unc_path(address="10.0.1.12", path=r"D:\MDaemon"),
                                r"\\10.0.1.12\C$\ProgramData\cr-orchestrator\mail.epoch"),
                 rs.WatchTarget("mail-dr", rs.unc_path(address="10.0.1.13", path=r"E:\DR\MDaemon"),
                                r"\\10.0.1.13\C$\ProgramData\cr-orchestrator\mail.epoch")),
        batch_ms=500, window_s=300, excludes=("Logs\\", "*.tmp")),
    "continuous-window-quotes-in-paths": lambda: rs.continuous_script(
        root=ODD_PATH, epoch=1, own_epoch_record=ODD_PATH + r"\it's.epoch",
        targets=(rs.WatchTarget("it's", rs.unc_path(address="10.0.1.12", path=ODD_PATH), ODD_PATH + r"\x.epoch"),),
        batch_ms=250, window_s=10),
    "quarantine": lambda: rs.quarantine_script(
        root=r"D:\MDaemon", quarantine=r"D:\MDaemon.cr-quarantine\20261122T030001Z",
        since_utc="2026-11-22T03:00:01Z"),
    "quarantine-quotes-in-paths": lambda: rs.quarantine_script(
        root=ODD_PATH, quarantine=ODD_PATH + r".cr-quarantine\20261122T030001Z", since_utc="2026-11-22T03:00:01Z"),
    "lease-renewal": lambda: lease.windows_renewal_script(cluster="mail", epoch=7, ttl_s=3.8, paused=False),
    "lease-renewal-paused-quotes-in-path": lambda: lease.windows_renewal_script(
        cluster="mail", epoch=7, ttl_s=3.8, paused=True, directory=ODD_PATH),
}
# The modules holding PowerShell the project sends: a new one must get variants above.
GENERATOR_MODULES = {"cr_orchestrator/observe/windows_script.py", "cr_orchestrator/observe/peer.py",
                     "cr_orchestrator/act/sync/robocopy_script.py", "cr_orchestrator/act/lease.py"}


@pytest.mark.parametrize("variant", sorted(PYTHON_VARIANTS))
def test_generated_script_parses(variant):
    assert_parses(variant, PYTHON_VARIANTS[variant]())


def test_every_module_that_writes_powershell_is_covered():
    writers = {str(p.relative_to(REPO)) for p in (REPO / "cr_orchestrator").rglob("*.py")
               if "$ErrorActionPreference" in p.read_text(encoding="utf-8")}
    assert writers <= GENERATOR_MODULES, f"PowerShell in {sorted(writers - GENERATOR_MODULES)}: add its variants"


# ------------------------------------------------------------------ Ansible templates and tasks
class _AnsibleYaml(yaml.SafeLoader):
    """Reads task files as data; Ansible's tags (!unsafe, !vault) become their plain value."""


_AnsibleYaml.add_multi_constructor("!", lambda loader, suffix, node: (
    loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None))


def _load(path: Path):
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_AnsibleYaml)  # noqa: S506 (safe loader)


def _jinja() -> jinja2.Environment:
    # As Ansible's template lookup renders: trim_blocks, the trailing newline kept, and an
    # undefined variable is an error. Ansible's own filters are added where jinja2 has none.
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)
    from ansible.plugins.filter.core import FilterModule

    for name, function in FilterModule().filters().items():
        env.filters.setdefault(name, function)
    return env


JINJA = _jinja()


def _render_value(value, variables):
    if isinstance(value, str):
        return JINJA.from_string(value).render(variables) if ("{{" in value or "{%" in value) else value
    if isinstance(value, list):
        return [_render_value(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _render_value(v, variables) for k, v in value.items()}
    return value


def role_variables(role: str, inputs: dict) -> dict:
    """The role's defaults and vars, their templates resolved from ``inputs`` (what the
    inventory and the play give); a value that needs what only a run has is left out."""
    raw: dict = {}
    for part in ("defaults", "vars"):
        path = ROLES / role / part / "main.yml"
        if path.is_file():
            raw.update(_load(path) or {})
    raw.update(inputs)
    resolved = {k: v for k, v in raw.items() if "{{" not in repr(v) and "{%" not in repr(v)}
    pending = {k: v for k, v in raw.items() if k not in resolved}
    while pending:
        progressed = False
        for name, value in list(pending.items()):
            try:
                resolved[name] = _render_value(value, resolved)
            except jinja2.TemplateError:
                continue
            del pending[name]
            progressed = True
        if not progressed:
            break
    return resolved


CLUSTER_INPUTS = {"cr_cluster": "mail", "cr_epoch": 7, "inventory_hostname": "mail-a",
                  "cr_switch": {"shared_ip": {"address": "192.0.2.100/24", "interface": "Ethernet0"}}}


def _shared_ip(state: str, interface: str) -> dict:
    return {**CLUSTER_INPUTS, "cr_shared_ip_state": state,
            "cr_switch": {"shared_ip": {"address": "192.0.2.100/24", "interface": interface}}}


# Each PowerShell template: (variant, what the inventory and the play give the role).
TEMPLATE_VARIANTS: dict[str, list[tuple[str, dict]]] = {
    "cr_fence/read_epoch.ps1.j2": [
        ("default-directory", CLUSTER_INPUTS),
        ("directory-with-quote", {**CLUSTER_INPUTS, "cr_cluster": "mail-eu.1",
                                  "cr_fence_dir_windows": r"D:\O'Brien's data\cr $x"}),
    ],
    "cr_lease_agent/agent.ps1.j2": [
        ("shared-ip-and-two-services", {**CLUSTER_INPUTS,
                                        "cr_service_services": [{"name": "MDaemon"}, {"name": "W3SVC"}]}),
        ("no-shared-ip-quotes-in-names", {"cr_cluster": "mail", "inventory_hostname": "mail-a", "cr_switch": {},
                                          "cr_service_services": [{"name": "O'Brien's $svc"}],
                                          "cr_lease_agent_dir_windows": r"D:\O'Brien's data\cr $x"}),
    ],
    "cr_shared_ip/shared_ip.ps1.j2": [
        ("take", _shared_ip("present", "Ethernet0")),
        ("release", _shared_ip("absent", "Ethernet0")),
        ("take-interface-with-quote", _shared_ip("present", "Ethernet 'LAN' (2)")),
        ("release-interface-with-quote", _shared_ip("absent", "vEthernet (Cluster) 'x' $y")),
    ],
}


def _templates() -> list[str]:
    found = list(ROLES.glob("*/templates/**/*.ps1.j2")) + list(PLAYBOOKS.glob("**/*.ps1.j2"))
    return sorted(str(p.relative_to(ROLES if p.is_relative_to(ROLES) else REPO)).replace("/templates/", "/", 1)
                  for p in found)


def _template_path(key: str) -> Path:
    role, name = key.split("/", 1)
    return ROLES / role / "templates" / name


def render_template(key: str, inputs: dict) -> str:
    role = key.split("/", 1)[0]
    return JINJA.from_string(_template_path(key).read_text(encoding="utf-8")).render(
        role_variables(role, inputs))


def test_every_powershell_template_has_variants():
    assert set(_templates()) == set(TEMPLATE_VARIANTS), (
        "give each roles/*/templates/*.ps1.j2 plausible variables in TEMPLATE_VARIANTS")


@pytest.mark.parametrize("key,variant,inputs", [
    pytest.param(key, variant, inputs, id=f"{key}[{variant}]")
    for key, variants in TEMPLATE_VARIANTS.items() for variant, inputs in variants])
def test_rendered_template_parses(key, variant, inputs):
    script = render_template(key, inputs)
    assert "{{" not in script and "{%" not in script
    assert_parses(f"{key}[{variant}]", script)


_POWERSHELL_MODULES = ("ansible.windows.win_powershell", "win_powershell", "ansible.windows.win_shell", "win_shell")
_LOOKUP = re.compile(r"""^\s*\{\{\s*lookup\(\s*['"](?:ansible\.builtin\.)?template['"]\s*,\s*"""
                     r"""['"](?P<name>[^'"]+)['"]\s*\)\s*\}\}\s*$""")


def powershell_scripts(node) -> Iterator[tuple[str, str]]:
    """(task name, script) of every task in a loaded YAML document that runs PowerShell."""
    if isinstance(node, list):
        for item in node:
            yield from powershell_scripts(item)
    elif isinstance(node, dict):
        for module in _POWERSHELL_MODULES:
            if module not in node:
                continue
            args = node[module]
            if module.endswith("win_shell"):
                options = {**(node.get("args") or {}), **(args if isinstance(args, dict) else {})}
                if "powershell" not in str(options.get("executable", "powershell")).lower():
                    continue  # cmd.exe, not PowerShell
                script = args if isinstance(args, str) else options.get("cmd", "")
            else:
                script = (args or {}).get("script", "") if isinstance(args, dict) else ""
            yield str(node.get("name", "(unnamed)")), str(script)
        for value in node.values():
            yield from powershell_scripts(value)


def _powershell_tasks() -> Iterator[tuple[Path, str, str]]:
    """(task file, task name, script) of every task under roles/ and playbooks/ that runs PowerShell."""
    for path in sorted([*ROLES.rglob("*.yml"), *ROLES.rglob("*.yaml"), *PLAYBOOKS.rglob("*.yml")]):
        for name, script in powershell_scripts(_load(path)):
            yield path, name, script


POWERSHELL_TASKS = list(_powershell_tasks())


def test_powershell_tasks_are_found():
    # the epoch fence's read and the shared IP's two steps at least
    assert len(POWERSHELL_TASKS) >= 3 and any("read_epoch" in script for _, _, script in POWERSHELL_TASKS)


def test_inline_scripts_are_found_in_blocks_and_cmd_is_left_out():
    doc = yaml.load("""
- name: a block
  block:
    - name: inline
      ansible.windows.win_powershell:
        script: |
          $Ansible.Result = '{{ cr_cluster }}'
  rescue:
    - name: free-form shell
      ansible.windows.win_shell: Get-Service -Name MDaemon
    - name: cmd, not PowerShell
      ansible.windows.win_shell: dir C:\\
      args:
        executable: cmd
""", Loader=_AnsibleYaml)
    found = dict(powershell_scripts(doc))
    assert found == {"inline": "$Ansible.Result = '{{ cr_cluster }}'\n", "free-form shell": "Get-Service -Name MDaemon"}
    rendered = JINJA.from_string(found["inline"]).render(CLUSTER_INPUTS)
    assert rendered == "$Ansible.Result = 'mail'\n"
    assert_parses("inline", rendered)
    with pytest.raises(AssertionError, match="not valid PowerShell"):
        assert_parses("inline-broken", rendered.replace("'mail'", "'mail"))


@pytest.mark.parametrize("path,name,script", [
    pytest.param(path, name, script, id=f"{path.relative_to(REPO)}:{name}") for path, name, script in POWERSHELL_TASKS])
def test_powershell_task_script_is_covered_or_parses(path, name, script):
    lookup = _LOOKUP.match(script)
    role = path.relative_to(ROLES).parts[0] if path.is_relative_to(ROLES) else None
    if lookup:
        key = f"{role}/{lookup.group('name')}"
        assert key in TEMPLATE_VARIANTS, f"{path}: task {name!r} runs template {key}, which no variant renders"
        return
    # An inline script: rendered from the role's variables and the cluster's, then parsed.
    variables = role_variables(role, CLUSTER_INPUTS) if role else CLUSTER_INPUTS
    assert_parses(f"{path.relative_to(REPO)}:{name}", JINJA.from_string(script).render(variables))


# ------------------------------------------------------------------ the check itself is known to work
def _drop_line(script: str, line: str) -> str:
    assert script.count(line) == 1
    return script.replace(line, "", 1)


PLANTED = {
    # the closing brace of cleanup's "read the shadow ID from the state file" block
    "missing-closing-brace": lambda: _drop_line(
        rs.cleanup_script(link=LINK, shadow_id=None),
        "    $shadowId = (Get-Content -LiteralPath $stateFile -Raw).Trim()\n}\n"),
    "unterminated-string": lambda: windows_script.build_probe_script(
        services=["MDaemon"], data_paths=[r"D:\x"]).replace(
        "$ErrorActionPreference = 'Stop'", "$ErrorActionPreference = 'Stop"),
    "missing-closing-parenthesis": lambda: peer.build_windows_script(
        targets=_targets(Check(CheckKind.SMTP, 25)), timeout_s=1).replace(
        "if (-not $task.Wait(", "if (-not $task.Wait(("),
    "else-if-instead-of-elseif": lambda: render_template("cr_shared_ip/shared_ip.ps1.j2", _shared_ip(
        "present", "Ethernet0")).replace("elseif ($wanted -eq 'absent'", "else if ($wanted -eq 'absent'"),
    "quote-not-doubled": lambda: rs.robocopy_script(
        source=r"D:\it's\MDaemon", destination=r"\\10.0.0.2\D$\x", log_path=LOG,
        options=rs.RobocopyOptions()).replace("it''s", "it's"),
}


@pytest.mark.parametrize("mutation", sorted(PLANTED))
def test_a_planted_syntax_error_fails_the_check(mutation):
    script = PLANTED[mutation]()
    assert script, "the mutation found nothing to change"
    with pytest.raises(AssertionError, match="not valid PowerShell"):
        assert_parses(f"planted-{mutation}", script)


def test_the_error_is_reported_on_its_line():
    script = "$ErrorActionPreference = 'Stop'\n$x = 1\nif ($x -eq) { Write-Output 'x' }\nexit 0\n"
    assert [(line, text) for line, text, _ in syntax_problems(script)] == [(3, "if ($x -eq) { Write-Output 'x' }")]
    missing = syntax_problems("foreach ($x in @(1, 2)) {\n    Write-Output $x\n")
    assert missing and "missing '}'" in missing[-1][2]


def test_grammar_gaps_are_each_still_needed():
    flagged = set()
    for variant, build in PYTHON_VARIANTS.items():
        flagged |= {(variant, text.strip()) for _, text, _ in syntax_problems(build())}
    for key, variants in TEMPLATE_VARIANTS.items():
        for variant, inputs in variants:
            name = f"{key}[{variant}]"
            flagged |= {(name, text.strip()) for _, text, _ in syntax_problems(render_template(key, inputs))}
    assert set(GRAMMAR_GAPS) <= flagged, f"stale GRAMMAR_GAPS entries: {sorted(set(GRAMMAR_GAPS) - flagged)}"
