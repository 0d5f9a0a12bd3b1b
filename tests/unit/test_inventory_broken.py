"""Each broken inventory under broken_inventories/ is refused with an error naming its culprit.

These go through the real ``ansible-inventory`` (one call per case), so they also prove
that file locations in messages are right for YAML, INI, group_vars and host_vars.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cr_orchestrator.errors import ConfigError
from cr_orchestrator.inventory import load_topology

CASES_DIR = Path(__file__).parent / "broken_inventories"
TEST_VAULT_PASSWORD = CASES_DIR / ".vault-pass-test"  # test-only password for vault cases

GV_WEB = "group_vars/cr_cluster_web.yml"
# case -> (file the error must name, fragments the same error line must contain)
CASES = {
    "typo_top_level": (GV_WEB, ["group 'cr_cluster_web'", "cr_falback", "did you mean 'cr_failback'"]),
    "typo_in_policy": (GV_WEB, ["cr_policy.probe_intervall", "did you mean 'probe_interval'"]),
    "typo_in_switch": (GV_WEB, ["cr_switch.shared_ip.adress", "did you mean 'address'"]),
    "typo_in_replica_set": (GV_WEB, ["cr_replica_sets[0].evry", "did you mean 'every'"]),
    "typo_in_member": (GV_WEB, ["cr_members.b.priorty", "did you mean 'priority'"]),
    "typo_host_var": ("host_vars/b.yml", ["host 'b'", "cr_sit", "did you mean 'cr_site'"]),
    "cluster_var_on_host": ("host_vars/a.yml", ["host 'a'", "cr_failback", "cluster variable"]),
    "no_primary": (GV_WEB, ["cr_members", "exactly one member must have role primary (found: none)"]),
    "two_primaries": (GV_WEB, ["cr_members", "(found: a, b)"]),
    "unknown_role": (GV_WEB, ["cr_members.b.role", "unknown role 'standby'"]),
    "member_not_in_inventory": (GV_WEB, ["cr_members.ghost", "no host 'ghost' in the inventory"]),
    "member_not_in_group": (GV_WEB, ["cr_members.c", "host 'c' is not in group 'cr_cluster_web'"]),
    "group_host_not_member": (GV_WEB, ["host 'c' is in group 'cr_cluster_web' but not in cr_members"]),
    "target_not_in_inventory": (GV_WEB, ["cr_replica_sets[0].targets[1].host", "no host 'backup9'"]),
    "replica_without_target": (GV_WEB, ["cr_members.b", "role replica, but no replica set"]),
    "empty_targets": (GV_WEB, ["cr_replica_sets[0].targets", "is empty"]),
    "shared_ip_not_cidr": (GV_WEB, ["cr_switch.shared_ip.address", "'192.0.2.10' is not in CIDR form"]),
    "bad_ip_ini": ("bad_ip_ini/hosts:", ["host 'b'", "cr_cluster_address", "'10.0.0.300' is not a valid IP"]),
    "dns_without_key": (GV_WEB, ["cr_switch.dns.key_name", "needs a TSIG key"]),
    "dns_without_zone": (GV_WEB, ["cr_switch.dns.zone", "missing"]),
    "windows_without_connection": ("host_vars/b.yml", ["host 'b'", "ansible_connection",
                                                        "Windows host without WinRM"]),
    "windows_without_password": ("hosts.yml", ["host 'w1'", "ansible_password", "missing"]),
    "vault_without_password": ("group_vars/windows.yml", ["group 'windows'", "ansible_password",
                                                           "vault-encrypted", "--vault-password-file"]),
    "service_on_host_twice": ("group_vars/cr_cluster_", ["service 'nginx' on host 'b'",
                                                          "already controlled by cluster"]),
    "nested_targets": (GV_WEB, ["cr_replica_sets[0].targets[0].path", "on host 'b'",
                                "'/srv/replica'", "contains '/srv/replica/api'"]),
    "windows_paths_case": ("group_vars/cr_cluster_sql.yml", ["on host 'dr'", "'d:/replica/web/'",
                                                             "is the same as"]),
    "unknown_reconcile": (GV_WEB, ["cr_replica_sets[0].reconcile", "'mbox' is not a reconcile policy",
                                   "quarantine, maildir"]),
    "batch_not_shorter_than_every": (GV_WEB, ["cr_replica_sets[0].batch", "5s is not shorter than every (5s)"]),
    "batch_without_continuous": (GV_WEB, ["cr_replica_sets[0].batch", "only applies with continuous: true"]),
    "bad_duration": (GV_WEB, ["cr_replica_sets[0].every", "'30x' is not a duration"]),
    "zero_interval": (GV_WEB, ["cr_policy.probe_interval", "must be positive"]),
    "missing_site": ("hosts.yml", ["host 'b'", "cr_site", "missing"]),
    "unparsable_yaml": ("unparsable_yaml/hosts.yml:14:1", ["YAML syntax error", "expected ',' or ']'",
                                                           "flow sequence that starts at line 13, column 9"]),
}


BASES = ("_base", "_base_two_clusters", "_base_windows")


def _load(name: str):
    try:
        return load_topology(CASES_DIR / name)
    except ConfigError as exc:
        return exc


@pytest.fixture(scope="module")
def outcomes():
    """Every case loaded once; ansible-inventory calls run two at a time (~0.5 s each)."""
    names = sorted(CASES) + list(BASES)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(names, pool.map(_load, names)))


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_inventory_names_its_culprit(case, outcomes):
    file, fragments = CASES[case]
    outcome = outcomes[case]
    assert isinstance(outcome, ConfigError), f"{case} was accepted"
    matching = [line for line in outcome.problems
                if file in line and all(f in line for f in fragments)]
    assert matching, f"no error names {file} with {fragments}; got:\n" + "\n".join(outcome.problems)


@pytest.mark.parametrize("base", BASES)
def test_the_unbroken_bases_are_valid(base, outcomes):
    """Each case is one mistake away from a valid base, so its error comes from that mistake."""
    outcome = outcomes[base]
    assert not isinstance(outcome, ConfigError), "\n".join(outcome.problems)
    assert outcome.clusters


def test_vault_value_decrypts_with_the_right_password_and_names_the_variable_with_a_wrong_one():
    case = CASES_DIR / "vault_without_password"
    topology = load_topology(case, vault_password_file=TEST_VAULT_PASSWORD)
    assert topology.hosts["w1"].winrm.password.reveal() == "Vaulted-Pa55-Never-Shown"
    wrong = Path(__file__).parents[2] / "inventory" / ".vault-pass-example"
    with pytest.raises(ConfigError) as caught:
        load_topology(case, vault_password_file=wrong)
    assert any("group_vars/windows.yml" in p and "ansible_password" in p and "does not decrypt" in p
               for p in caught.value.problems), caught.value.problems
