"""Pure tests of build_topology: the subtle rules, defaults and merges, without subprocesses."""

from __future__ import annotations

import copy

import pytest

from cr_orchestrator.errors import ConfigError
from cr_orchestrator.inventory import build_topology, parse_duration
from cr_orchestrator.inventory.replication import paths_overlap
from cr_orchestrator.model import FailbackMode, Platform, Policy, Role, Secret

WEB = {
    "cr_cluster": "web",
    "cr_members": {"a": {"role": "primary", "priority": 10}, "b": {"role": "secondary"}},
    "cr_services": [{"name": "nginx", "checks": [{"http": 80}]}],
    "cr_switch": {"shared_ip": {"address": "192.0.2.10/24", "interface": "eth0"}},
    "cr_replica_sets": [{"name": "site", "path": "/srv/www", "every": "30s"}],
}


def exported(groups: dict, hostvars: dict) -> dict:
    """The JSON ansible-inventory --list --export would print for these groups."""
    data = {"_meta": {"hostvars": copy.deepcopy(hostvars)}}
    data["all"] = {"children": [g for g in groups if g != "all"], **copy.deepcopy(groups.get("all", {}))}
    for name, body in groups.items():
        if name != "all":
            data[name] = copy.deepcopy(body)
    return data


def linux(cluster_vars=None, **extra_groups) -> dict:
    groups = {
        "linux": {"hosts": ["a", "b"], "vars": {"ansible_user": "cr"}},
        "cr_cluster_web": {"hosts": ["a", "b"], "vars": cluster_vars or copy.deepcopy(WEB)},
        **extra_groups,
    }
    hostvars = {"a": {"ansible_host": "192.0.2.1", "cr_site": "one"},
                "b": {"ansible_host": "192.0.2.2", "cr_site": "one"}}
    return exported(groups, hostvars)


def errors_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build_topology(data, source="inv")
    return caught.value.problems


def web(**changes) -> dict:
    result = copy.deepcopy(WEB)
    result.update(changes)
    return result


@pytest.mark.parametrize("value, seconds", [
    (30, 30.0), (2.5, 2.5), ("45", 45.0), ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0),
    ("1h", 3600.0), (" 1.5s ", 1.5), (".5s", 0.5),
])
def test_durations_accept_seconds_and_units(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["30x", "1d", "", "s", "-5s", 0, "0s", -1, True, None, [30]])
def test_durations_refuse_nonsense_and_non_positive(value):
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize("a, b, platform, relation", [
    ("C:\\Data", "c:/data/", Platform.WINDOWS, "is the same as"),
    ("D:\\Replica\\Web", "d:\\REPLICA\\web\\", Platform.WINDOWS, "is the same as"),
    ("C:\\Data\\sub", "C:\\DATA", Platform.WINDOWS, "is inside"),
    ("D:\\", "d:\\x", Platform.WINDOWS, "contains"),
    ("C:\\Data", "C:\\Data2", Platform.WINDOWS, None),
    ("C:\\Data", "D:\\Data", Platform.WINDOWS, None),
    ("/srv/a", "/srv/A", Platform.LINUX, None),  # Linux paths are case-sensitive
    ("/srv/a/", "/srv/a", Platform.LINUX, "is the same as"),
    ("/srv/ab", "/srv/a", Platform.LINUX, None),  # a prefix is not nesting
    ("/srv/a/b/../c", "/srv/a", Platform.LINUX, "is inside"),
    ("/", "/srv", Platform.LINUX, "contains"),
])
def test_path_overlap(a, b, platform, relation):
    assert paths_overlap(a, b, platform) == relation


def test_defaults_of_a_minimal_linux_cluster():
    topo = build_topology(linux(web(cr_replica_sets=[{"name": "site", "path": "/srv/www"}])), source="inv")
    cluster = topo.cluster("web")
    assert cluster.policy == Policy() and cluster.policy.failback is FailbackMode.MANUAL
    assert cluster.configured_primary == "a"
    [rset] = cluster.replica_sets
    assert rset.every_s == 60.0 and not rset.vss and not rset.checksum
    assert rset.reconcile == "quarantine"  # safe for opaque data: never merged by default
    assert [(t.host, t.path) for t in rset.targets] == [("b", "/srv/www")]  # every other member
    host = topo.hosts["a"]
    assert host.platform is Platform.LINUX and host.winrm is None
    assert (host.ssh.user, host.ssh.port) == ("cr", 22)
    assert host.cluster_address == host.service_address == host.management_address == "192.0.2.1"
    assert topo.warnings == ()


def test_members_are_ordered_primary_then_by_priority():
    cv = web(cr_members={"c": {"role": "replica"}, "b": "secondary",
                         "d": {"role": "secondary", "priority": 5}, "a": {"role": "primary"}})
    data = linux(cv)
    data["cr_cluster_web"]["hosts"] += ["c", "d"]
    data["linux"]["hosts"] += ["c", "d"]
    data["_meta"]["hostvars"].update(c={"ansible_host": "192.0.2.3", "cr_site": "one"},
                                     d={"ansible_host": "192.0.2.4", "cr_site": "one"})
    members = build_topology(data, source="inv").cluster("web").members
    assert [(m.host, m.role) for m in members] == [
        ("a", Role.PRIMARY), ("d", Role.SECONDARY), ("b", Role.SECONDARY), ("c", Role.REPLICA)]


def test_windows_defaults_follow_ansible():
    data = linux()
    data["linux"]["vars"].update(ansible_connection="winrm", ansible_password=Secret("pw"))
    data["_meta"]["hostvars"]["b"]["ansible_port"] = 5985
    data["cr_cluster_web"]["vars"]["cr_replica_sets"][0]["path"] = "C:\\www"
    topo = build_topology(data, source="inv")
    a, b = topo.hosts["a"].winrm, topo.hosts["b"].winrm
    assert topo.hosts["a"].platform is Platform.WINDOWS
    assert (a.port, a.scheme, a.path, a.transport, a.server_cert_validation) == (5986, "https", "/wsman", "ntlm", True)
    assert (b.port, b.scheme) == (5985, "http")
    assert a.password.reveal() == "pw" and a.endpoint("192.0.2.1") == "https://192.0.2.1:5986/wsman"


def test_host_vars_beat_child_groups_which_beat_parents_and_priority_breaks_ties():
    data = linux(all={"vars": {"cr_site": "from-all"}},
                 early={"hosts": ["a", "b"], "vars": {"cr_site": "early", "ansible_group_priority": 5}},
                 late={"hosts": ["a", "b"], "vars": {"cr_site": "late"}})
    del data["_meta"]["hostvars"]["a"]["cr_site"]
    data["_meta"]["hostvars"]["b"]["cr_site"] = "own"
    topo = build_topology(data, source="inv")
    # same depth: 'late' (priority 1) is applied before 'early' (priority 5), so early wins
    assert topo.hosts["a"].site == "early"
    assert topo.hosts["b"].site == "own"


def test_policy_may_be_inherited_from_a_parent_group_and_overridden():
    data = linux(web(cr_policy={"probe_interval": "5s"}),
                 all={"vars": {"cr_policy": {"probe_interval": "1s"}, "cr_failback": "auto"}})
    policy = build_topology(data, source="inv").cluster("web").policy
    assert policy.probe_interval_s == 5.0 and policy.failback is FailbackMode.AUTO


def test_members_set_outside_the_cluster_group_are_refused():
    data = linux(all={"vars": {"cr_members": {"a": {"role": "primary"}}}})
    assert any("group 'all': cr_members: cluster variable in group 'all'" in e for e in errors_of(data))


def test_every_problem_is_reported_at_once():
    cv = web(cr_members={"a": {"role": "primary"}, "b": {"role": "boss"}},
             cr_policy={"probe_interval": "2x", "max_failovers": 0},
             cr_switch={"shared_ip": {"address": "192.0.2.300/24", "interface": "eth0"}})
    data = linux(cv)
    del data["_meta"]["hostvars"]["b"]["cr_site"]
    problems = errors_of(data)
    for fragment in ("cr_members.b.role", "cr_policy.probe_interval", "cr_policy.max_failovers",
                     "cr_switch.shared_ip.address", "host 'b': cr_site"):
        assert any(fragment in p for p in problems), (fragment, problems)


def test_errors_name_the_file_locate_returns():
    calls = []

    def locate(kind, name, var):
        calls.append((kind, name, var))
        return f"{kind}_vars/{name}.yml"

    with pytest.raises(ConfigError) as caught:
        build_topology(linux(web(cr_falback="auto")), source="inv", locate=locate)
    assert caught.value.problems == [
        "group_vars/cr_cluster_web.yml: group 'cr_cluster_web': cr_falback: unknown key "
        "'cr_falback'; did you mean 'cr_failback'?"]
    assert ("group", "cr_cluster_web", "cr_falback") in calls


def test_ini_style_text_values_are_read_as_numbers_and_booleans():
    cv = web(cr_replica_sets=[{"name": "s", "path": "/srv/www", "every": "30", "vss": "false",
                               "checksum": "yes", "bandwidth_limit_kbps": "100"}])
    rset = build_topology(linux(cv), source="inv").cluster("web").replica_sets[0]
    assert (rset.every_s, rset.vss, rset.checksum, rset.bandwidth_limit_kbps) == (30.0, False, True, 100)


@pytest.mark.parametrize("value, error", [
    ("maildir", None),
    ("quarantine", None),
    ("newer-wins", "'newer-wins' is not a reconcile policy (one of: quarantine, maildir)"),
    ("", "cr_replica_sets[0].reconcile"),
])
def test_reconcile_policy_is_one_of_the_known_ones(value, error):
    inv = linux(web(cr_replica_sets=[{"name": "s", "path": "/srv/mail", "reconcile": value}]))
    if error is None:
        rset = build_topology(inv, source="inv").cluster("web").replica_sets[0]
        assert rset.reconcile == value
    else:
        problems = errors_of(inv)
        assert any("cr_replica_sets[0].reconcile" in p and error in p for p in problems), problems


def test_maildir_reconcile_is_refused_on_windows_members():
    inv = linux(web(cr_replica_sets=[{"name": "s", "path": "D:\\Mail", "reconcile": "maildir"}]))
    inv["linux"]["vars"].update(ansible_connection="winrm", ansible_password=Secret("pw"))
    problems = errors_of(inv)
    assert any("cr_replica_sets[0].reconcile" in p and "Linux only" in p for p in problems), problems


def test_probe_timeout_longer_than_interval_is_refused():
    problems = errors_of(linux(web(cr_policy={"probe_interval": "1s", "probe_timeout": "2s"})))
    assert any("cr_policy.probe_timeout" in p and "longer than probe_interval" in p for p in problems)


def test_shared_ip_site_must_reach_every_member_unless_dns_follows():
    data = linux(web(cr_switch={"shared_ip": {"address": "192.0.2.10/24", "interface": "eth0",
                                              "site": "one"}}))
    data["_meta"]["hostvars"]["b"]["cr_site"] = "two"
    assert any("member 'b' is on site 'two'" in p for p in errors_of(data))
    dns = {"zone": "example.com", "record": "www", "server": "192.0.2.53", "provider": "microsoft"}
    data["cr_cluster_web"]["vars"]["cr_switch"]["dns"] = dns
    assert build_topology(data, source="inv").cluster("web").switch.dns.key_secret is None


def test_shared_ip_across_sites_without_site_or_dns_is_a_warning():
    data = linux()
    data["_meta"]["hostvars"]["b"]["cr_site"] = "two"
    topo = build_topology(data, source="inv")
    assert any("several sites" in w for w in topo.warnings)


def test_a_secondary_that_receives_no_data_is_a_warning_a_replica_an_error():
    cv = web(cr_replica_sets=[{"name": "s", "path": "/srv/www", "targets": []}])
    data = linux(web(cr_members={"a": "primary", "b": "secondary"}, cr_replica_sets=[]))
    assert build_topology(data, source="inv").warnings == ()  # no data to miss
    data = linux(web(cr_members={"a": "primary", "b": "replica"}, cr_replica_sets=[]))
    assert any("role replica, but no replica set" in p for p in errors_of(data))
    assert any("targets: is empty" in p for p in errors_of(linux(cv)))


def test_two_clusters_may_not_share_a_shared_ip_or_dns_record():
    other = web(cr_cluster="api", cr_services=[{"name": "api", "checks": []}],
                cr_replica_sets=[{"name": "d", "path": "/srv/api"}])
    data = linux(cr_cluster_api={"hosts": ["a", "b"], "vars": other})
    assert any("192.0.2.10 is already the shared IP of cluster" in p for p in errors_of(data))
    dns = {"zone": "example.com.", "record": "WWW", "server": "192.0.2.53", "provider": "microsoft"}
    data["cr_cluster_api"]["vars"]["cr_switch"] = {"dns": dns}
    data["cr_cluster_web"]["vars"]["cr_switch"] = {"dns": {**dns, "zone": "Example.com", "record": "www"}}
    assert any("record 'WWW' in zone 'example.com.' is already switched" in p or
               "record 'www' in zone 'Example.com' is already switched" in p for p in errors_of(data))


def test_linux_paths_differing_in_case_do_not_clash_across_clusters():
    other = web(cr_cluster="api", cr_services=[{"name": "api", "checks": []}],
                cr_switch={"shared_ip": {"address": "192.0.2.20/24", "interface": "eth0"}},
                cr_replica_sets=[{"name": "d", "path": "/srv/WWW"}])
    data = linux(cr_cluster_api={"hosts": ["a", "b"], "vars": other})
    assert set(build_topology(data, source="inv").clusters) == {"web", "api"}


def test_windows_service_names_clash_case_insensitively_on_a_shared_host():
    data = linux()
    data["linux"]["vars"].update(ansible_connection="winrm", ansible_password=Secret("pw"))
    data["cr_cluster_web"]["vars"].update(cr_services=[{"name": "W3SVC", "checks": []}],
                                          cr_replica_sets=[{"name": "s", "path": "C:\\www"}])
    other = web(cr_cluster="api", cr_services=[{"name": "w3svc", "checks": []}],
                cr_switch={"shared_ip": {"address": "192.0.2.20/24", "interface": "eth0"}},
                cr_replica_sets=[{"name": "d", "path": "C:\\api"}])
    data["cr_cluster_api"] = {"hosts": ["a", "b"], "vars": other}
    data["all"]["children"].append("cr_cluster_api")
    problems = errors_of(data)
    # groups are read in name order: cr_cluster_api first, so web's W3SVC is the clash
    assert any("service 'W3SVC' on host 'a' is already controlled by cluster 'api'" in p
               for p in problems), problems


def test_relative_and_foreign_paths_are_refused():
    cv = web(cr_replica_sets=[{"name": "s", "path": "srv/www"},
                              {"name": "t", "path": "/srv/t", "targets": [{"host": "b", "path": "D:\\t"}]}])
    problems = errors_of(linux(cv))
    assert any("cr_replica_sets[0].path: 'srv/www' is not an absolute linux path on host 'a'" in p
               for p in problems)
    assert any("cr_replica_sets[1].targets[0].path" in p and "is a Windows path but host 'b' is linux"
               in p for p in problems), problems


def test_vss_needs_windows_and_control_needs_linux():
    cv = web(cr_replica_sets=[{"name": "s", "path": "/srv/www", "vss": True}])
    assert any("VSS snapshots need Windows members, but a, b is linux" in p for p in errors_of(linux(cv)))
    data = linux(web(cr_services=[{"name": "svc", "control": {"start": "x", "stop": "y", "status": "z"}}]))
    assert build_topology(data, source="inv").cluster("web").services[0].control.status == "z"


def test_undecrypted_vault_value_is_named_and_decrypted_one_is_used():
    data = linux()
    data["linux"]["vars"].update(ansible_connection="winrm",
                                 ansible_password={"__ansible_vault": "$ANSIBLE_VAULT;1.1;AES256\n00"})
    problems = errors_of(data)
    assert problems == ["inv: group 'linux': ansible_password: is vault-encrypted and no vault "
                        "password was given (use --vault-password-file)"]


def test_secrets_never_appear_in_errors_or_reprs():
    password, tsig = "Pl41n-Passw0rd-Leak?", "VFNJRy1rZXktbGVhaw=="
    data = linux(web(cr_switch={"dns": {"zone": "example.com", "record": "www", "server": "192.0.2.53",
                                        "key_name": "k", "key_secret": tsig, "key_secrt": tsig}}))
    data["linux"]["vars"].update(ansible_connection="winrm", ansible_password=password,
                                 ansible_winrm_transport="ntlmx")
    problems = "\n".join(errors_of(data))
    assert "key_secrt" in problems and "ntlmx" in problems  # the errors are there...
    assert password not in problems and tsig not in problems  # ...the secrets are not
    del data["cr_cluster_web"]["vars"]["cr_switch"]["dns"]["key_secrt"]
    data["linux"]["vars"]["ansible_winrm_transport"] = "ntlm"
    data["cr_cluster_web"]["vars"]["cr_replica_sets"][0]["path"] = "C:\\www"
    topo = build_topology(data, source="inv")
    text = repr(topo) + repr(topo.hosts["a"].hostvars) + str(topo.hosts["a"].hostvars)
    assert password not in text and tsig not in text
    assert topo.cluster("web").switch.dns.key_secret.reveal() == tsig


def test_role_defaults_may_be_set_in_the_inventory_and_their_typos_are_caught():
    roles = frozenset({"cr_service_timeout", "cr_fence_dir_linux"})
    data = linux(web(cr_service_timeout=120))
    data["_meta"]["hostvars"]["a"]["cr_fence_dir_linux"] = "/run/fence"
    assert build_topology(data, source="inv", role_variables=roles).cluster("web")
    data["_meta"]["hostvars"]["b"]["cr_service_timout"] = 5
    problems = errors_of_with(data, role_variables=roles)
    assert problems == ["inv: host 'b': cr_service_timout: unknown key 'cr_service_timout'; "
                        "did you mean 'cr_service_timeout'?"]


def errors_of_with(data: dict, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build_topology(data, source="inv", **kwargs)
    return caught.value.problems


def test_policies_that_would_never_let_a_failover_happen_are_refused():
    problems = errors_of(linux(web(cr_policy={"required_vantages": 3})))
    assert any("cr_policy.required_vantages: 3 vantages can never agree" in p for p in problems)
    slow = web(cr_replica_sets=[{"name": "s", "path": "/srv/www", "every": "5m"}])
    warnings = build_topology(linux(slow), source="inv").warnings
    assert any("cr_replica_sets[0].every" in w and "too stale" in w for w in warnings), warnings
    ok = web(cr_replica_sets=[{"name": "s", "path": "/srv/www", "every": "5m"}],
             cr_policy={"max_replica_lag": "15m", "required_vantages": 2})
    topo = build_topology(linux(ok), source="inv")
    assert topo.cluster("web").policy.max_replica_lag_s == 900 and topo.warnings == ()
