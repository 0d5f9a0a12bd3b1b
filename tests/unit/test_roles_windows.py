"""The PowerShell the Windows task files send: rendered from the roles' templates by
Ansible's own templating, then checked (no Windows machine here)."""

import re
from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"


def render(template: Path, **variables) -> str:
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    templar = Templar(loader=DataLoader(), variables=variables)
    return templar.template(trust_as_template(template.read_text(encoding="utf-8")))


def assert_well_formed_powershell(script: str) -> None:
    assert "{{" not in script and "{%" not in script, "template left unrendered"
    code = re.sub(r"(?m)#.*$", "", script)  # comments may say anything
    for number, line in enumerate(code.splitlines(), 1):
        # '' is an escaped quote inside a single-quoted string: what is left must pair up
        assert line.replace("''", "").count("'") % 2 == 0, f"unbalanced quote on line {number}: {line}"
    bare = re.sub(r"'(?:[^']|'')*'", "''", code)
    bare = re.sub(r'"[^"]*"', '""', bare)
    for opening, closing in ("{}", "()", "[]"):
        assert bare.count(opening) == bare.count(closing), f"unbalanced {opening}{closing}"


SHARED_IP = ROLES / "cr_shared_ip" / "templates" / "shared_ip.ps1.j2"


def shared_ip_script(state="present", interface="Ethernet0", address="192.0.2.100/24"):
    ip, prefix = address.split("/")
    return render(SHARED_IP, cr_shared_ip_state=state, cr_shared_ip_interface=interface,
                  __cr_shared_ip_ip=ip, __cr_shared_ip_prefix=prefix)


def test_taking_the_shared_ip_uses_new_netipaddress_skip_as_source_and_active_store():
    script = shared_ip_script()
    assert_well_formed_powershell(script)
    assert "[CmdletBinding(SupportsShouldProcess)]" in script  # check mode runs it with -WhatIf
    assert "$address = '192.0.2.100'" in script
    assert "$prefixLength = [byte]24" in script
    assert "$interfaceAlias = 'Ethernet0'" in script
    assert "$wanted = 'present'" in script
    new = re.search(r"New-NetIPAddress[^|]*", script, re.S).group(0)
    for part in ("-InterfaceAlias $interfaceAlias", "-IPAddress $address",
                 "-PrefixLength $prefixLength", "-SkipAsSource $true", "-PolicyStore ActiveStore"):
        assert part in new
    assert "$PSCmdlet.ShouldProcess(" in script and "$Ansible.Changed = $true" in script


def test_releasing_the_shared_ip_uses_remove_netipaddress_without_prompt():
    script = shared_ip_script(state="absent")
    assert_well_formed_powershell(script)
    assert "$wanted = 'absent'" in script
    assert "Remove-NetIPAddress -IPAddress $address -Confirm:$false" in script


def test_idempotence_is_decided_by_reading_the_address_first():
    script = shared_ip_script()
    read = script.index("Get-NetIPAddress -IPAddress $address")
    assert read < script.index("New-NetIPAddress") and read < script.index("Remove-NetIPAddress")
    assert "$Ansible.Changed = $false" in script


@pytest.mark.parametrize("interface", ["Ethernet 'LAN'", "vEthernet (Cluster)", "a'; Remove-Item C:\\ -Recurse; '"])
def test_interface_names_cannot_break_out_of_their_string(interface):
    script = shared_ip_script(interface=interface)
    assert_well_formed_powershell(script)
    assert f"$interfaceAlias = '{interface.replace(chr(39), chr(39) * 2)}'" in script


READ_EPOCH = ROLES / "cr_fence" / "templates" / "read_epoch.ps1.j2"


def test_epoch_read_is_read_only_and_strict_about_the_record():
    script = render(READ_EPOCH, __cr_fence_file_windows="C:\\ProgramData\\cr-orchestrator\\mail.epoch")
    assert_well_formed_powershell(script)
    assert "$path = 'C:\\ProgramData\\cr-orchestrator\\mail.epoch'" in script
    assert "$Ansible.Changed = $false" in script
    assert "Test-Path -LiteralPath $path" in script and "Get-Content -LiteralPath $path -Raw" in script
    assert "-notmatch '^[0-9]+$'" in script and "$Ansible.Result = 0" in script
    assert not re.search(r"Set-Content|Remove-|New-Item|Out-File", script)


def _tasks(path: Path) -> list[dict]:
    tasks = []
    for task in yaml.safe_load(path.read_text()) or []:
        if "block" in task:
            tasks.extend(task["block"])
        else:
            tasks.append(task)
    return tasks


def test_windows_task_files_use_full_names_and_existing_templates():
    files = sorted(ROLES.glob("*/tasks/windows*.yml"))
    assert {f.parts[-3] for f in files} >= {"cr_fence", "cr_service", "cr_shared_ip", "cr_dns_record"}
    for path in files:
        for task in _tasks(path):
            modules = [k for k in task if "." in k and k.split(".")[0] in ("ansible", "community")]
            assert len(modules) == 1, f"{path}: task {task.get('name')!r} uses no FQCN module"
            args = task[modules[0]]
            if modules[0] == "ansible.windows.win_powershell":
                # a script from a template must name one that exists; an inline script is
                # parsed by the grammar test (test_powershell_grammar)
                found = re.search(r"lookup\('ansible.builtin.template', '([^']+)'\)", args["script"])
                if found:
                    assert (path.parents[1] / "templates" / found.group(1)).is_file()


def _render_text(text: str, **variables):
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    return Templar(loader=DataLoader(), variables=variables).template(trust_as_template(text))


@pytest.mark.parametrize("role, action", [("cr_promote", "started"), ("cr_demote", "stopped")])
def test_promote_and_demote_leave_windows_services_on_manual_start(role, action):
    # Cluster-managed services: after a reboot no member may start them by itself (one
    # node runs them, one licence), so both roles leave the start mode on manual.
    # Both run one sequence (cr_common's member_role.yml) with their own values.
    defaults = yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text())
    wiring = yaml.safe_load((ROLES / role / "tasks" / "main.yml").read_text())
    shared = next(t for t in wiring
                  if t.get("ansible.builtin.import_role", {}).get("tasks_from") == "member_role.yml")
    assert shared["ansible.builtin.import_role"]["name"] == "cr_common"
    params = {name: _render_text(shared["vars"][name], **defaults)
              for name in ("__cr_common_role", "__cr_common_start_mode")}
    sequence = yaml.safe_load((ROLES / "cr_common" / "tasks" / "member_role.yml").read_text())
    service_step = next(t for t in sequence
                        if t.get("ansible.builtin.import_role", {}).get("name") == "cr_service")
    assert _render_text(service_step["vars"]["cr_service_action"], **params) == action
    mode = _render_text(service_step["vars"]["cr_service_start_mode"], **params)
    tasks = yaml.safe_load((ROLES / "cr_service" / "tasks" / "windows.yml").read_text())
    module = tasks[0]["ansible.windows.win_service"]
    role_vars = yaml.safe_load((ROLES / "cr_service" / "vars" / "main.yml").read_text())
    variables = {"cr_service_action": action, "cr_service_start_mode": mode, "omit": "__omit__",
                 "__cr_service_win_state": role_vars["__cr_service_win_state"]}
    assert _render_text(module["state"], **variables) == action
    assert _render_text(module["start_mode"], **variables) == "manual"


def test_a_failover_leaves_both_members_on_manual_start():
    move = yaml.safe_load((ROLES.parent / "playbooks" / "includes" / "move.yml").read_text())
    steps = [t for block in move for t in block.get("block", [block])]
    service = next(t for t in steps if t.get("ansible.builtin.import_role", {}).get("name") == "cr_service")
    assert service["vars"]["cr_service_start_mode"] == "manual"
