"""The lab's plan and generated inventory: pure functions, no root needed."""

from __future__ import annotations

import ipaddress

import pytest

from cr_orchestrator.errors import ConfigError
from cr_orchestrator.testworld.lab.inventory import build_inventory
from cr_orchestrator.testworld.lab.plan import plan_lab


@pytest.mark.parametrize("name", ["", "toolong", "1abc", "a-b", "AB"])
def test_bad_lab_names_are_refused(name):
    with pytest.raises(ConfigError, match="lab name"):
        plan_lab(name=name, base="198.18.16.0/20")


@pytest.mark.parametrize("base", ["10.0.0.0/20", "198.18.16.0/24", "198.18.16.1/20", "nonsense",
                                  "198.20.0.0/20"])
def test_bases_outside_the_lab_space_or_not_a_20_are_refused(base):
    with pytest.raises(ConfigError, match="lab base"):
        plan_lab(name="t", base=base)


def test_default_plan_follows_the_contract_address_plan():
    plan = plan_lab(name="crlab", base="198.18.0.0/20")
    assert [h.name for h in plan.hosts()] == ["mail-a", "mail-b", "mail-dr"]
    assert [(h.role, h.site) for h in plan.hosts()] == [
        ("primary", "site-a"), ("secondary", "site-a"), ("replica", "site-b")]
    assert plan.service_address("mail-a") == "198.18.0.11"
    assert plan.cluster_address("mail-b") == "198.18.1.12"
    assert plan.service_address("mail-dr") == "198.18.2.21"
    assert plan.cluster_address("mail-dr") == "198.18.3.21"
    assert plan.shared_ip == "198.18.0.100"
    assert plan.dns_server == "198.18.0.53"
    assert plan.node("client").links[0].address == "198.18.0.2"
    assert plan.root_addresses() == ("198.18.0.1", "198.18.1.1", "198.18.2.1", "198.18.3.1")
    assert {lk.address for lk in plan.node("router").links} == {
        "198.18.0.254", "198.18.1.254", "198.18.2.254", "198.18.3.254"}


def test_every_address_stays_inside_the_base_and_no_route_leaves_the_lab():
    plan = plan_lab(name="ldev", base="198.18.16.0/20", secondaries=3, windows=2)
    base = ipaddress.ip_network(plan.base)
    for node in plan.nodes:
        for lk in node.links:
            assert ipaddress.ip_address(lk.address) in base
        for dest, gateway in node.routes:
            assert ipaddress.ip_network(dest).subnet_of(base)
            assert ipaddress.ip_address(gateway) in base


def test_interface_names_carry_the_lab_name_and_fit_linux_limits():
    plan = plan_lab(name="abcde", base="198.18.16.0/20", secondaries=8, windows=8)
    names = [n.root_if for n in plan.nets] + [lk.port for n in plan.nodes for lk in n.links]
    assert all(len(n) <= 15 for n in names)
    assert all(n.root_if.startswith("abcde-") for n in plan.nets)
    assert len(set(names)) == len(names)
    assert len({n.namespace for n in plan.nodes} | {plan.switch_ns}) == len(plan.nodes) + 1


def test_inventory_is_the_reference_mdaemon_example():
    plan = plan_lab(name="crlab", base="198.18.0.0/20")
    inv = build_inventory(plan, tsig_secret="c2VjcmV0")
    hosts = inv["all"]["children"]["lab_linux"]["hosts"]
    assert hosts["mail-a"] == {"ansible_host": "198.18.1.11", "cr_site": "site-a",
                               "cr_cluster_address": "198.18.1.11",
                               "cr_service_address": "198.18.0.11"}
    cluster = inv["all"]["children"]["cr_cluster_mail"]["vars"]
    assert {h: m["role"] for h, m in cluster["cr_members"].items()} == {
        "mail-a": "primary", "mail-b": "secondary", "mail-dr": "replica"}
    assert cluster["cr_services"][0]["checks"] == [{"smtp": 25}, {"pop3": 110}, {"imap": 143}]
    assert cluster["cr_switch"]["shared_ip"] == {"address": "198.18.0.100/24",
                                                 "interface": "eth0", "site": "site-a"}
    dns = cluster["cr_switch"]["dns"]
    assert (dns["zone"], dns["record"], dns["server"], dns["ttl"], dns["provider"]) == (
        "lab.test.", "mail", "198.18.0.53", 5, "rfc2136")
    assert cluster["cr_replica_sets"] == [{"name": "maildata", "path": "/srv/mail", "every": "30s",
                                           "reconcile": "maildir"}]
    unknown = [k for k in cluster if k.startswith("cr_")
               and k not in {"cr_cluster", "cr_members", "cr_services", "cr_switch", "cr_replica_sets"}]
    assert unknown == []


def test_orchestrator_nodes_add_a_witness_segment_and_change_no_existing_address():
    plain = plan_lab(name="abcde", base="198.18.16.0/20", secondaries=8, windows=8)
    grown = plan_lab(name="abcde", base="198.18.16.0/20", secondaries=8, windows=8,
                     orchestrators=True)
    assert set(plain.nets) < set(grown.nets)
    assert {n.name: n for n in plain.nodes if n.name != "router"}.items() <= \
        {n.name: n for n in grown.nodes}.items()
    assert set(plain.node("router").links) < set(grown.node("router").links)
    assert [(n.name, n.site) for n in grown.quorum_nodes()] == [
        ("orch-a", "site-a"), ("orch-b", "site-b"), ("witness", "witness")]
    assert [grown.cluster_address(n.name) for n in grown.quorum_nodes()] == [
        "198.18.17.41", "198.18.19.41", "198.18.20.41"]
    assert grown.node("client-b").links[0].address == "198.18.18.2"
    names = [n.root_if for n in grown.nets] + [lk.port for n in grown.nodes for lk in n.links]
    assert all(len(n) <= 15 for n in names) and len(set(names)) == len(names)
    addresses = [lk.address for n in grown.nodes for lk in n.links]
    assert len(set(addresses)) == len(addresses)
    with pytest.raises(ConfigError, match="no orchestrator node 'orch-a'.*--orchestrators"):
        plain.quorum_node("orch-a")


def test_quorum_configuration_follows_the_site_loss_design():
    from cr_orchestrator.testworld.lab.quorum import redis_config, sentinel_config

    plan = plan_lab(name="crlab", base="198.18.0.0/20", orchestrators=True)
    orch_a, orch_b, witness = plan.quorum_nodes()
    first = redis_config(plan, orch_a)
    assert "replicaof" not in first and "min-replicas-to-write 1" in first
    assert "appendonly yes" in first and "replica-priority 0" not in first
    assert "replicaof 198.18.1.41 6379" in redis_config(plan, orch_b)
    assert "replica-priority 0" in redis_config(plan, witness)  # never promoted
    sentinel = sentinel_config(plan, witness)
    assert "sentinel monitor cr 198.18.1.41 6379 2" in sentinel
    assert "sentinel announce-ip 198.18.4.41" in sentinel
