"""wanted_entries(): which RedBeat entries an inventory calls for (pure)."""

from __future__ import annotations

from dataclasses import replace

from cr_orchestrator import model as m
from cr_orchestrator.runtime.schedule import probe_entry_of, wanted_entries


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


def test_one_probe_entry_per_group_of_clusters_and_one_sync_entry_per_set_on_the_primary_site():
    topo = make_topology(sets={"maildata": 30.0, "config": 300.0}, clusters=("mail", "web"))
    wanted = {w.name: w for w in wanted_entries(topology=topo, inventory_path="/inv")}
    assert sorted(wanted) == ["cr.probe.site-a.every-2s.0", "cr.sync.mail.config",
                              "cr.sync.mail.maildata", "cr.sync.web.config",
                              "cr.sync.web.maildata"]
    probe = wanted["cr.probe.site-a.every-2s.0"]
    assert (probe.task, probe.interval_s, probe.args, probe.queue) == (
        "cr.probe_rounds", 2.0, (("mail", "web"), "/inv"), "site.site-a")
    assert probe.options() == {"queue": "site.site-a", "expires": 5.0}
    assert probe_entry_of(wanted, "web") == "cr.probe.site-a.every-2s.0"
    assert probe_entry_of(wanted, "nope") is None
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


def test_groups_are_per_site_and_interval_and_split_evenly_at_the_batch_size():
    import pytest

    topo = make_topology(clusters=tuple(f"c{k:02d}" for k in range(7)))
    slow = replace(topo.clusters["c06"], policy=replace(m.Policy(), probe_interval_s=5.0))
    topo = replace(topo, clusters={**topo.clusters, "c06": slow})
    probes = [w for w in wanted_entries(topology=topo, inventory_path="/inv", batch=4,
                                        primaries={"c05": "mail-dr"})
              if w.task == "cr.probe_rounds"]
    # site-a every 2 s: c00-c04 (5 > 4: two groups of 3 and 2, not 4 and 1); c05 on
    # site-b, where its primary is; c06 alone (another interval)
    assert [(w.name, w.args[0], w.queue) for w in probes] == [
        ("cr.probe.site-a.every-2s.0", ("c00", "c01", "c02"), "site.site-a"),
        ("cr.probe.site-a.every-2s.1", ("c03", "c04"), "site.site-a"),
        ("cr.probe.site-a.every-5s.0", ("c06",), "site.site-a"),
        ("cr.probe.site-b.every-2s.0", ("c05",), "site.site-b")]
    with pytest.raises(ValueError, match="at least 1"):
        wanted_entries(topology=topo, inventory_path="/inv", batch=0)
