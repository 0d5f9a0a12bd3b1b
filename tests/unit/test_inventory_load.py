"""load_topology against the real ansible-inventory: merge fidelity, vault, isolation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cr_orchestrator.errors import ConfigError
from cr_orchestrator.inventory import load_topology
from cr_orchestrator.inventory.loader import ansible_inventory_command, run_ansible_inventory
from cr_orchestrator.inventory.raw import RawInventory

REPO = Path(__file__).parents[2]
EXAMPLES = ("mdaemon-pair", "web-sql-dr", "cluster-plus-dr")
EXAMPLE_VAULT = REPO / "inventory" / ".vault-pass-example"
ANSIBLE_INVENTORY = str(Path(sys.executable).with_name("ansible-inventory"))


def _flat_list(inventory: Path) -> dict:
    done = subprocess.run([ANSIBLE_INVENTORY, "-i", str(inventory), "--list"], cwd=inventory,
                          capture_output=True, text=True, check=True, timeout=60)
    return json.loads(done.stdout)["_meta"]["hostvars"]


@pytest.mark.parametrize("example", [*EXAMPLES, "../tests/unit/broken_inventories/_base_two_clusters"])
def test_our_merge_of_export_equals_ansible_list(example):
    """The precedence we apply to --export output is what Ansible's own --list produces."""
    inventory = (REPO / "inventory" / example).resolve()
    raw = RawInventory.from_export(run_ansible_inventory(inventory))
    expected = _flat_list(inventory)
    assert set(raw.host_vars) == set(expected)
    for host, hostvars in expected.items():
        assert raw.merged_host_vars(host)[0] == hostvars, host


def test_example_topologies_load_with_the_example_vault_password():
    mail = load_topology(REPO / "inventory" / "mdaemon-pair", vault_password_file=EXAMPLE_VAULT)
    cluster = mail.cluster("mail")
    assert cluster.switch.shared_ip.ip == "123.123.123.101" and cluster.switch.shared_ip.prefix_length == 24
    assert (mail.hosts["mail-a"].management_address, mail.hosts["mail-b"].management_address) == (
        "123.123.123.123", "123.123.123.100")
    assert mail.hosts["mail-a"].cluster_address == "10.10.0.1"  # the separate cluster network
    assert mail.hosts["mail-a"].winrm.password.reveal() == "Example-Only-Winrm-Pass1"
    assert cluster.replica_sets[0].vss and cluster.replica_sets[0].path == "C:\\MDaemon"


def test_examples_model_n_to_1_and_1_to_n():
    n1 = load_topology(REPO / "inventory" / "web-sql-dr", vault_password_file=EXAMPLE_VAULT)
    assert {c.name: c.replica_sets[0].path_on("dr1") for c in n1.clusters.values()} == {
        "web": "D:\\Replica\\web\\wwwroot", "sql": "D:\\Replica\\sql\\SQLData"}
    one_n = load_topology(REPO / "inventory" / "cluster-plus-dr", vault_password_file=EXAMPLE_VAULT)
    app = one_n.cluster("app")
    assert app.switch.shared_ip is not None and app.switch.dns is not None
    assert [t.host for t in app.replica_sets[0].targets] == ["app2", "app-dr"]


def test_command_line_is_absolute_and_passes_the_vault_file(tmp_path):
    cmd = ansible_inventory_command(Path("inventory/x"), vault_password_file=Path("vp"))
    assert cmd[0] == ANSIBLE_INVENTORY and cmd[3:5] == ["--list", "--export"]
    assert Path(cmd[2]).is_absolute() and cmd[5] == "--vault-password-file" and Path(cmd[6]).is_absolute()


def test_stray_group_vars_in_the_working_directory_are_not_merged(tmp_path, monkeypatch):
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("cr_stray_typo: 1\n")
    monkeypatch.chdir(tmp_path)
    base = REPO / "tests" / "unit" / "broken_inventories" / "_base"
    assert load_topology(base).cluster("web")


def test_whole_file_vault_is_read_with_the_password_and_refused_without(tmp_path):
    from ansible.parsing.vault import VaultLib, VaultSecret

    inventory = tmp_path / "inv"
    shutil.copytree(REPO / "tests" / "unit" / "broken_inventories" / "_base", inventory)
    (inventory / "host_vars").mkdir()
    vault = VaultLib([("default", VaultSecret(b"pw"))])
    (inventory / "host_vars" / "b.yml").write_bytes(vault.encrypt("cr_cluster_address: 10.9.9.9\n"))
    (tmp_path / "vp").write_text("pw\n")
    topology = load_topology(inventory, vault_password_file=tmp_path / "vp")
    assert topology.hosts["b"].cluster_address == "10.9.9.9"
    with pytest.raises(ConfigError) as caught:
        load_topology(inventory)
    assert "vault-encrypted and no vault password was given" in caught.value.problems[0]


def test_missing_inventory_is_named():
    with pytest.raises(ConfigError, match="no-such-inventory: no such inventory"):
        load_topology("no-such-inventory")


def test_ini_inventory_file_loads(tmp_path):
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "hosts").write_text(
        "[linux]\na ansible_host=192.0.2.1 cr_site=one\nb ansible_host=192.0.2.2 cr_site=one\n"
        "[cr_cluster_web]\na\nb\n")
    (tmp_path / "group_vars" / "cr_cluster_web.yml").write_text(
        (REPO / "tests/unit/broken_inventories/_base/group_vars/cr_cluster_web.yml").read_text())
    topo = load_topology(tmp_path / "hosts")
    assert topo.cluster("web").configured_primary == "a"
    assert os.path.basename(topo.source) == "hosts"


def test_role_variables_come_from_the_roles_public_defaults():
    from cr_orchestrator.inventory.loader import role_variables

    names = role_variables()
    assert "cr_service_timeout" in names and "cr_shared_ip_interface" in names
    assert not any(n.startswith("__") for n in names)
