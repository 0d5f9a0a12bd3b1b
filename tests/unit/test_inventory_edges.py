"""Hardening at the edges: the address plan and file-level mistakes name their culprit.

Like test_inventory_broken.py, each case under broken_inventories/ is one mistake away from
a valid base (_base, _base_two_clusters, _base_windows) and goes through the real
``ansible-inventory``. ERRORS are refused; WARNINGS are accepted with a warning (a layout a
NAT, jump host or separate network can make legitimate). Permission cases cannot live in
git (it keeps no modes) and root reads everything, so they are built at test time and
loaded as user ``nobody``.
"""

from __future__ import annotations

import contextlib
import json
import stat
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cr_orchestrator.errors import ConfigError
from cr_orchestrator.inventory import load_topology
from cr_orchestrator.inventory.loader import run_ansible_inventory

REPO = Path(__file__).parents[2]
CASES_DIR = Path(__file__).parent / "broken_inventories"
CRCTL = str(Path(sys.executable).with_name("crctl"))
ANSIBLE_INVENTORY = str(Path(sys.executable).with_name("ansible-inventory"))

GV_WEB = "group_vars/cr_cluster_web.yml"
# case -> (file the line must name, fragments the same line must contain)
ERRORS = {
    # address plan
    "dup_management_address": ("dup_management_address/hosts.yml", [
        "host 'b': ansible_host: 192.0.2.1", "of both host 'b' and host 'a'",
        "one machine under two names"]),
    "dup_service_address_in_cluster": ("host_vars/b.yml", [
        "host 'b': cr_service_address: 192.0.2.1", "host 'a'", "members of cluster 'web'"]),
    "dup_service_address_common_port": ("dup_service_address_common_port/hosts.yml", [
        "host 'c': cr_service_address: 192.0.2.1", "host 'a'", "both are checked on port 80"]),
    "dup_cluster_address_in_group": ("group_vars/linux.yml", [
        "group 'linux': cr_cluster_address: 10.0.0.1", "host 'b' and host 'a'",
        "replication and peer probes in cluster 'web'"]),
    "dup_cluster_address_common_peer": ("dup_cluster_address_common_peer/hosts.yml", [
        "host 'c': cr_cluster_address: 10.0.0.5", "host 'a'", "host 'b' replicates with or probes both"]),
    "service_address_is_cluster_address": ("service_address_is_cluster_address/hosts.yml", [
        "host 'b': cr_cluster_address: 192.0.2.11", "service address of host 'a'",
        "one address belongs to one machine"]),
    "shared_ip_is_member_address": (GV_WEB, [
        "group 'cr_cluster_web': cr_switch.shared_ip.address: 192.0.2.2 is also",
        "of member 'b' (ansible_host)", "no host owns"]),
    "shared_ip_outside_subnet": (GV_WEB, [
        "cr_switch.shared_ip.address: member 'a'", "may take 198.18.0.100/24",
        "service address 192.0.2.1 (ansible_host)", "subnet 198.18.0.0/24"]),
    "shared_ip_prefix_too_small": (GV_WEB, [
        "cr_switch.shared_ip.address: member 'b'", "192.0.2.20 (cr_service_address)",
        "subnet 192.0.2.0/28", "prefix length"]),
    "shared_ip_outside_subnet_on_its_site": ("group_vars/cr_cluster_iis.yml", [
        "cr_switch.shared_ip.address: member 'w1' (on the shared IP's site 'one')",
        "198.51.100.31 (cr_service_address)", "subnet 192.0.2.0/24"]),
    "dns_target_ipv6": ("group_vars/cr_cluster_iis.yml", [
        "group 'cr_cluster_iis': cr_switch.dns: member 'dr'", "2001:db8::33 (cr_service_address)",
        "A record"]),
    # files
    "yaml_error_in_group_vars": (f"{GV_WEB}:5:12", [
        "YAML syntax error: expected ',' or '}'", "flow mapping that starts at line 4, column 6"]),
    "yaml_error_in_host_vars": ("host_vars/b.yml:3:21", [
        "YAML syntax error", "mapping values are not allowed here"]),
    "yaml_error_in_group_vars_dir": ("group_vars/cr_cluster_web/switch.yml:7:4", [
        "YAML syntax error", "block mapping that starts at line 5, column 3"]),
    "group_vars_not_a_mapping": ("group_vars/linux.yml:1:1", ["is a list", "must be a mapping"]),
    "empty_inventory_file": ("empty_inventory_file/hosts.yml", ["the inventory file is empty"]),
    "binary_group_vars": (GV_WEB, ["is a binary file"]),
    "latin1_host_vars": ("host_vars/a.yml:1:20", ["is not UTF-8 text (byte 0xe9)"]),
}
WARNINGS = {
    "dup_management_nat": ("dup_management_nat/hosts.yml", [
        "host 'b': ansible_host: 203.0.113.7", "of both host 'b' and host 'a'",
        "legitimate only behind a NAT gateway or jump host"]),
    "dup_service_address_nat": ("dup_service_address_nat/hosts.yml", [
        "host 'c': cr_service_address: 192.0.2.1", "host 'a'",
        "legitimate only behind a NAT that forwards each cluster's ports"]),
    "dup_cluster_address_separate_networks": ("dup_cluster_address_separate_networks/hosts.yml", [
        "host 'c': cr_cluster_address: 10.0.0.1", "host 'a'", "separate cluster networks"]),
    "dns_server_on_member": ("group_vars/cr_cluster_iis.yml", [
        "group 'cr_cluster_iis': cr_switch.dns.server: 192.0.2.33", "member 'dr' (ansible_host)",
        "while 'dr' is down"]),
    "ini_file_ignored": ("ini_file_ignored/more_hosts.ini", ["ignored", "skips files ending in .ini"]),
    "empty_extra_inventory_file": ("empty_extra_inventory_file/more_hosts.yml", [
        "the inventory file is empty", "placeholder"]),
}


def _load(name: str):
    try:
        return load_topology(CASES_DIR / name)
    except ConfigError as exc:
        return exc


@pytest.fixture(scope="module")
def outcomes():
    names = sorted({*ERRORS, *WARNINGS})
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(names, pool.map(_load, names)))


def _matching(lines, file: str, fragments: list[str]) -> list[str]:
    return [line for line in lines if file in line and all(f in line for f in fragments)]


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_broken_inventory_names_its_culprit(case, outcomes):
    file, fragments = ERRORS[case]
    outcome = outcomes[case]
    assert isinstance(outcome, ConfigError), f"{case} was accepted"
    assert _matching(outcome.problems, file, fragments), (
        f"no error names {file} with {fragments}; got:\n" + "\n".join(outcome.problems))


@pytest.mark.parametrize("case", sorted(WARNINGS))
def test_doubtful_inventory_is_accepted_with_a_warning_naming_its_culprit(case, outcomes):
    file, fragments = WARNINGS[case]
    outcome = outcomes[case]
    assert not isinstance(outcome, ConfigError), "\n".join(outcome.problems)
    assert _matching(outcome.warnings, file, fragments), (
        f"no warning names {file} with {fragments}; got:\n" + "\n".join(outcome.warnings))


def test_members_of_other_sites_are_not_held_to_the_shared_ips_subnet(outcomes):
    """dr (site two, reached through DNS) has an address outside the subnet too: no error."""
    problems = outcomes["shared_ip_outside_subnet_on_its_site"].problems
    assert len(problems) == 1 and "member 'w1'" in problems[0], problems


def test_warnings_are_printed_by_validate_after_the_summary():
    done = subprocess.run([CRCTL, "validate", "-i", str(CASES_DIR / "dup_management_nat")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    last = done.stdout.rstrip().splitlines()[-1]
    assert last.startswith("warning: ") and "ansible_host: 203.0.113.7" in last, done.stdout


def test_ini_files_in_a_directory_are_skipped_as_the_playbooks_skip_them():
    """Ansible 2.19's default reads extra.ini; our ansible.cfg (playbooks and validate) skips it."""
    case = CASES_DIR / "ini_file_ignored"
    ours = run_ansible_inventory(case)
    assert "c" not in ours["_meta"]["hostvars"]
    with tempfile.TemporaryDirectory() as cwd:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        plain = subprocess.run([ANSIBLE_INVENTORY, "-i", str(case), "--list", "--export"], cwd=cwd,
                               env=env, capture_output=True, text=True, check=True, timeout=60)
    assert "c" in json.loads(plain.stdout)["_meta"]["hostvars"]


# --- permissions -------------------------------------------------------------------------
# case -> (how to break a copy of _base, file the line must name, fragments)
PERMISSION_CASES = {
    "unreadable_inventory_file": (lambda d: (d / "hosts.yml").chmod(0), "hosts.yml",
                                  ["permission denied", "cannot read this file"]),
    "unreadable_group_vars_file": (lambda d: (d / GV_WEB).chmod(0), GV_WEB,
                                   ["permission denied", "cannot read this file"]),
    "unreadable_group_vars_dir": (lambda d: (d / "group_vars").chmod(0), "unreadable_group_vars_dir/group_vars:",
                                  ["permission denied", "cannot be listed", "Ansible would skip"]),
    "unsearchable_host_vars_dir": (lambda d: _host_vars(d, 0o644), "unsearchable_host_vars_dir/host_vars:",
                                   ["permission denied", "may list this directory but not open"]),
    "unreachable_inventory": (lambda d: _enclose(d), "unreachable_inventory/inv:",
                              ["permission denied", "cannot reach it"]),
}


def _host_vars(inventory: Path, mode: int) -> None:
    (inventory / "host_vars").mkdir()
    (inventory / "host_vars" / "b.yml").write_text("cr_cluster_address: 10.0.0.2\n")
    (inventory / "host_vars").chmod(mode)


def _enclose(inventory: Path) -> None:
    inner = inventory / "inv"
    inner.mkdir()
    for name in ("hosts.yml", "group_vars"):
        shutil.move(str(inventory / name), inner / name)
    inventory.chmod(0)  # the inventory itself is fine; its parent cannot be entered


def _unlock(root: Path) -> None:
    """Give every directory back its modes (top down), so a non-root owner can remove them."""
    root.chmod(0o700)
    for folder, subfolders, _ in os.walk(root):
        for sub in subfolders:
            os.chmod(os.path.join(folder, sub), 0o700)


def _as_other_user() -> tuple[list[str], str]:
    """A command prefix that drops root (root bypasses file modes), and that user's name."""
    if os.geteuid() != 0:
        return [], pwd.getpwuid(os.geteuid()).pw_name
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot test as an unprivileged user")
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"], "nobody"


@contextlib.contextmanager
def _traversable(*paths: Path):
    """Let the unprivileged user pass through (x, not read) the directories above the
    checkout and the venv for the run: a clone in a private directory (mktemp -d, 0700)
    would otherwise hide the code under test from it. Modes are put back afterwards."""
    changed: dict[Path, int] = {}
    for path in paths:
        for folder in [path, *path.parents]:
            mode = folder.stat().st_mode
            if folder not in changed and not mode & stat.S_IXOTH:
                changed[folder] = stat.S_IMODE(mode)
                folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    try:
        yield
    finally:
        for folder, mode in changed.items():
            folder.chmod(mode)


LOADER = """
import json, sys
from cr_orchestrator.errors import ConfigError
from cr_orchestrator.inventory import load_topology
out = {}
for name, path, vault in json.loads(sys.argv[1]):
    try:
        load_topology(path, vault_password_file=vault)
        out[name] = []
    except ConfigError as exc:
        out[name] = exc.problems
print(json.dumps(out))
"""


def test_unreadable_files_and_directories_are_named_with_permission_denied():
    prefix, user = _as_other_user()
    root = Path(tempfile.mkdtemp(prefix="cr-perm-"))
    try:
        root.chmod(0o755)  # the unprivileged user must reach the cases
        (root / "home").mkdir(mode=0o777)
        (root / "home").chmod(0o777)
        jobs = []
        for name, (breaker, _, _) in PERMISSION_CASES.items():
            shutil.copytree(CASES_DIR / "_base", root / name)
            breaker(root / name)
            path = root / name / "inv" if name == "unreachable_inventory" else root / name
            jobs.append((name, str(path), None))
        (root / "vault-pass").write_text("pw\n")
        (root / "vault-pass").chmod(0)
        jobs.append(("unreadable_vault_password_file", str(CASES_DIR / "_base"), str(root / "vault-pass")))
        env = {**os.environ, "HOME": str(root / "home"), "PYTHONDONTWRITEBYTECODE": "1"}
        with _traversable(Path(sys.prefix), CASES_DIR, Path(__file__).resolve().parents[2]):
            done = subprocess.run([*prefix, sys.executable, "-c", LOADER, json.dumps(jobs)],
                                  cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        problems = json.loads(done.stdout)
    finally:
        _unlock(root)
        shutil.rmtree(root, ignore_errors=True)
    expected = {name: (file, fragments) for name, (_, file, fragments) in PERMISSION_CASES.items()}
    expected["unreadable_vault_password_file"] = ("vault-pass", ["permission denied",
                                                                 "cannot read this vault password file"])
    for name, (file, fragments) in expected.items():
        lines = problems[name]
        assert _matching(lines, file, [*fragments, f"user {user}"]), (name, lines)
        assert not any("Traceback" in line or "ansible-inventory refused" in line for line in lines)
