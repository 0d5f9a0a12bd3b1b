"""A group's rounds (one probe-rounds task) against the lab: the clusters that share hosts
share the tick's probes and lease renewals, and each still gets what is its own.

Two clusters, ``grpone`` and ``grptwo``, copies of the lab's mail cluster under new names
(their records and leases are files of their own on the hosts, removed afterwards). The
SSH commands are counted by wrapping the real transport: every command still runs.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from cr_orchestrator.inventory import load_topology
from cr_orchestrator.observe import linux_host
from cr_orchestrator.observe.health import ORCHESTRATOR
from cr_orchestrator.observe.round import probe_cluster
from cr_orchestrator.observe.shared import SharedProbes
from cr_orchestrator.runtime import cycle
from cr_orchestrator.state.cluster import ClusterState

pytestmark = pytest.mark.lab
NAMES = ("grpone", "grptwo")


@pytest.fixture
def group(lab):
    topology = load_topology(lab.inventory_path)
    mail = topology.cluster("mail")
    clusters = {n: replace(mail, name=n, group=f"cr_cluster_{n}", replica_sets=())
                for n in NAMES}
    lab.run_on("mail-a", [lab.mailctl, "start"], check=True)
    yield replace(topology, clusters={**topology.clusters, **clusters})
    for host in ("mail-a", "mail-b", "mail-dr"):
        for leftover in Path(lab.state_dir_of(host)).glob("grp*"):
            leftover.unlink()


@pytest.fixture
def commands(monkeypatch):
    """Every SSH command of the probes and renewals: (host address, first script line)."""
    seen: list[tuple[str, str]] = []
    real = linux_host.run_ssh

    def counted(*, argv, deadline_s, stdin=""):
        seen.append((argv[-2], stdin))
        return real(argv=argv, deadline_s=deadline_s, stdin=stdin)

    monkeypatch.setattr(linux_host, "run_ssh", counted)
    return seen


def test_one_command_per_host_and_per_peer_for_the_group_each_cluster_its_own_records(
        lab, group, commands):
    Path(lab.state_dir_of("mail-a"), "grpone.epoch").write_text("5\n")
    clusters = [group.cluster(n) for n in NAMES]
    shared = SharedProbes(topology=group, clusters=clusters,
                          primaries={n: "mail-a" for n in NAMES}, at=time.time(),
                          timeout_s=1.5)
    seen = {c.name: probe_cluster(topology=group, cluster=c, primary="mail-a",
                                  timeout_s=1.5, shared=shared) for c in clusters}
    # 3 members probed once each and 2 peers (mail-b, mail-dr) in one session each, for
    # both clusters: 5 commands where two rounds alone send 10
    assert len(commands) == 5, [c[0] for c in commands]
    for name, obs in seen.items():
        assert {o.at for o in obs} == {shared.at}
        hosts = {o.host: o for o in obs if o.subject == "host" and o.vantage == ORCHESTRATOR}
        assert sorted(hosts) == ["mail-a", "mail-b", "mail-dr"]
        assert all(o.detail["records"]["cluster"] == name for o in hosts.values()), name
        assert {o.vantage for o in obs if o.subject.startswith("check:")} >= {
            ORCHESTRATOR, "mail-b", "mail-dr"}
        served = [o for o in obs if o.subject == "service:mail" and o.host == "mail-a"]
        assert [o.health.value for o in served] == ["ok"], served
    # the record written for grpone is grpone's alone
    epoch = {n: next(o for o in obs if o.host == "mail-a" and o.subject == "host")
             .detail["records"]["epoch"] for n, obs in seen.items()}
    assert epoch == {"grpone": "5", "grptwo": None}


def test_a_group_decides_each_cluster_and_renews_their_leases_in_one_command_per_host(
        lab, group, commands, redis_client, prefix):
    state = ClusterState(redis_client, prefix)
    for name in NAMES:
        state.set_paused(name, True)  # decided and recorded, nothing acted on
    env = cycle.Env(topology=group, redis=redis_client, prefix=prefix)
    renewals: list[list[str]] = []
    for _ in range(6):  # up needs successes_before_up rounds in a row, then renewals
        started = time.monotonic()
        del commands[:]
        runs = cycle.probe_rounds(env, list(NAMES))
        assert [r.cluster for r in runs] == list(NAMES)
        assert all(r.outcome.ok for r in runs), [r.outcome.summary for r in runs]
        renewals.append([host for host, stdin in commands if ".lease.new" in stdin])
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    for name in NAMES:
        decision = state.last_decision(name)
        assert decision and decision["members"]["mail-a"] == "up", decision
    # once mail-a is up, both clusters' leases go to it in one command a tick
    assert renewals[-1] == [group.hosts["mail-a"].management_address], renewals
    for name in NAMES:
        lease = Path(lab.state_dir_of("mail-a"), f"{name}.lease").read_text().split()
        assert lease[0] == "0" and lease[3] == "1", lease  # epoch 0, paused
