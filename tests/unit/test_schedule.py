"""wanted_entries(): which RedBeat entries an inventory calls for (pure)."""

from __future__ import annotations

from dataclasses import replace

from cr_orchestrator import model as m
from cr_orchestrator.runtime.schedule import wanted_entries


def make_topology(*, sets: dict[str, float] | None = None, clusters=("mail",)) -> m.Topology:
    sets = {"maildata": 30.0} if sets is None else sets
    hosts = {name: m.Host(name, site, m.Platform.LINUX, "198.18.80.1", "198.18.80.1",
                          "198.18.80.1")
             for name, site in (("mail-a", "site-a"), ("mail-b", "site-a"),
                                ("mail-dr", "site-b"))}
    members = (m.Member("mail-a", m.Role.PRIMARY), m.Member("mail-b", m.Role.SECONDARY),
               m.Member("mail-dr", m.Role.REPLICA))
    sets_ = tuple(m.ReplicaSet(s, "/srv/mail", (m.ReplicaTarget("mail-b", "/srv/mail"),), e)
                  for s, e in sets.items())
    return m.Topology("/inv", hosts, {
        c: m.Cluster(c, f"cr_cluster_{c}", members, (), m.ClientSwitch(), sets_,
                     replace(m.Policy(), probe_interval_s=2.0))
        for c in clusters})


def test_one_probe_entry_per_cluster_and_one_sync_entry_per_set_on_the_primary_site():
    topo = make_topology(sets={"maildata": 30.0, "config": 300.0}, clusters=("mail", "web"))
    wanted = {w.name: w for w in wanted_entries(topology=topo, inventory_path="/inv")}
    assert sorted(wanted) == ["cr.probe.mail", "cr.probe.web", "cr.sync.mail.config",
                              "cr.sync.mail.maildata", "cr.sync.web.config",
                              "cr.sync.web.maildata"]
    probe = wanted["cr.probe.mail"]
    assert (probe.task, probe.interval_s, probe.args, probe.queue) == (
        "cr.probe_round", 2.0, ("mail", "/inv"), "site.site-a")
    assert probe.options() == {"queue": "site.site-a", "expires": 5.0}
    sync = wanted["cr.sync.mail.config"]
    assert (sync.task, sync.interval_s, sync.args) == ("cr.sync_set", 300.0,
                                                       ("mail", "config", "/inv"))


def test_entries_follow_the_live_primary_to_its_site():
    topo = make_topology()
    wanted = wanted_entries(topology=topo, inventory_path="/inv", primaries={"mail": "mail-dr"})
    assert {w.queue for w in wanted} == {"site.site-b"}
    # a live primary the inventory no longer knows falls back to the configured one
    wanted = wanted_entries(topology=topo, inventory_path="/inv", primaries={"mail": "gone"})
    assert {w.queue for w in wanted} == {"site.site-a"}
