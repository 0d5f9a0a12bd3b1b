"""roles/ and playbooks/: layout, documented role-prefixed variables, syntax check of every
playbook and of every Windows task file, and ansible-lint's production profile (offline)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (REPO / "roles").iterdir() if p.is_dir())
BIN = Path(sys.executable).parent
ORDER = ["-e", "cr_cluster=mail", "-e", "cr_epoch=1", "-e", "cr_old_primary=mail-a",
         "-e", "cr_new_primary=mail-b"]
INVENTORY = """
all:
  children:
    mail:
      hosts:
        mail-a: {ansible_host: 192.0.2.11, cr_site: a}
        mail-b: {ansible_host: 192.0.2.12, cr_site: a}
        win-a: {ansible_host: 192.0.2.21, cr_site: a, ansible_connection: winrm}
      vars:
        cr_cluster: mail
        cr_members: {mail-a: {role: primary}, mail-b: {role: secondary}}
        cr_services: [{name: mail, checks: [{smtp: 25}]}]
        cr_switch: {shared_ip: {address: 192.0.2.100/24, interface: eth0}}
"""


def ansible_env() -> dict:
    return {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "PATH": f"{BIN}:{os.environ['PATH']}",
            "ANSIBLE_NOCOLOR": "1"}


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_role_has_documented_prefixed_defaults_and_a_spec(role):
    for part in ("defaults/main.yml", "meta/argument_specs.yml", "meta/main.yml", "tasks/main.yml"):
        assert (role / part).is_file(), f"{role.name} lacks {part}"
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    spec = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]
    options = spec["options"]
    for name in list(defaults) + list(options):
        assert name.startswith(f"{role.name}_"), f"{role.name}: {name} is not prefixed with the role name"
    assert set(defaults) <= set(options), f"{role.name}: undocumented defaults {set(defaults) - set(options)}"
    for name, option in options.items():
        assert option.get("description"), f"{role.name}: {name} has no description"
    comments = (role / "defaults/main.yml").read_text().count("\n#")
    assert comments >= len(defaults) // 2, f"{role.name}: defaults/main.yml explains too little"


def test_platform_task_files_exist_where_the_platform_matters():
    for role in ("cr_fence", "cr_service", "cr_shared_ip", "cr_dns_record"):
        for platform in ("linux", "windows"):
            assert (REPO / "roles" / role / "tasks" / f"{platform}.yml").is_file()


def test_every_playbook_and_windows_task_file_passes_syntax_check(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY)
    # Dynamic includes are not loaded by --syntax-check: import every Windows task file
    # statically in a play of its own so that Ansible parses it.
    plays = [{"name": f"Syntax of {f.relative_to(REPO)}", "hosts": "win-a", "gather_facts": False,
              "roles": [], "tasks": [{"name": "Windows tasks", "ansible.builtin.import_tasks": str(f)}]}
             for f in sorted((REPO / "roles").glob("*/tasks/windows*.yml"))]
    windows = tmp_path / "windows_syntax.yml"
    windows.write_text(yaml.safe_dump(plays, sort_keys=False))
    playbooks = sorted((REPO / "playbooks").glob("*.yml")) + [windows]
    proc = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(inventory),
                           *ORDER, *map(str, playbooks)], env=ansible_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ERROR" not in proc.stderr


@pytest.mark.slow
def test_ansible_lint_production_profile_offline():
    # .ansible-lint sets profile production, offline (Galaxy is not reachable) and the
    # extra vars the syntax check needs.
    proc = subprocess.run([str(BIN / "ansible-lint"), "--offline", "--nocolor", "--format=pep8",
                           "roles", "playbooks"], cwd=REPO, env=ansible_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr
