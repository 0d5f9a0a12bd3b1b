"""A cluster round on loopback without a lab: what runs, with which vantage, in one ``at``.

The members' SSH port is closed (host probes and peer sessions fail at once), their
service answers on a real banner server: the round must still report every part.
"""

from __future__ import annotations

from cr_orchestrator.observe.health import ORCHESTRATOR, Health
from cr_orchestrator.model import (Check, CheckKind, ClientSwitch, Cluster, Host, Member, Platform,
                                   Policy, Role, Service, SharedIp, SshSettings, Topology)
from cr_orchestrator.observe.round import probe_cluster

from . import servers


def _topology(smtp_port: int, ssh_port: int) -> Topology:
    ssh = SshSettings("root", ssh_port, None, "-o StrictHostKeyChecking=no "
                      "-o UserKnownHostsFile=/dev/null")
    hosts = {n: Host(n, "site-a", Platform.LINUX, "127.0.0.1", "127.0.0.1", "127.0.0.1", ssh=ssh)
             for n in ("h1", "h2", "h3")}
    cluster = Cluster("c", "cr_cluster_c", (Member("h1", Role.PRIMARY), Member("h2", Role.SECONDARY),
                                            Member("h3", Role.REPLICA)),
                      (Service("svc", (Check(CheckKind.SMTP, smtp_port),)),),
                      ClientSwitch(shared_ip=SharedIp("127.0.0.1/8", "lo")), (), Policy())
    return Topology("test", hosts, {"c": cluster})


def test_round_reports_every_part_with_one_timestamp(tmp_path):
    with servers.serve(servers.banner(b"220 ok\r\n")) as smtp:
        topology = _topology(smtp, servers.closed_port())
        obs = probe_cluster(topology=topology, cluster=topology.cluster("c"), primary="h1",
                            timeout_s=1.5, control_dir=tmp_path, now=lambda: 42.0)
    assert {o.at for o in obs} == {42.0}
    by = {(o.host, o.vantage, o.subject): o for o in obs}
    for host in ("h1", "h2", "h3"):
        assert by[(host, ORCHESTRATOR, "host")].health is Health.UNREACHABLE
        assert "ssh" in by[(host, ORCHESTRATOR, "host")].error
        assert by[(host, ORCHESTRATOR, "service:svc")].health is Health.UNREACHABLE
    checks = [o for o in obs if o.subject.startswith("check:")]
    assert len(checks) == 4 and all(o.health is Health.OK for o in checks)  # 3 hosts + shared IP
    assert [o.host for o in checks if o.detail["target"] == "shared_ip"] == ["h1"]
    # Both peers tried; their sessions failed, which says nothing about h1 itself.
    assert sorted(o.vantage for o in obs if o.subject == "vantage") == ["h2", "h3"]


def test_only_one_secondary(tmp_path):
    with servers.serve(servers.banner(b"220 ok\r\n")) as smtp:
        topology = _topology(smtp, servers.closed_port())
        obs = probe_cluster(topology=topology, cluster=topology.cluster("c"), primary="h1",
                            timeout_s=1.5, control_dir=tmp_path, only={"h2"})
    assert {(o.host, o.vantage) for o in obs} == {("h2", ORCHESTRATOR), ("h1", "h2")}


def test_primary_outside_the_cluster_still_observes_members(tmp_path):
    with servers.serve(servers.banner(b"220 ok\r\n")) as smtp:
        topology = _topology(smtp, servers.closed_port())
        obs = probe_cluster(topology=topology, cluster=topology.cluster("c"), primary="elsewhere",
                            timeout_s=1.5, control_dir=tmp_path)
    assert {o.vantage for o in obs} == {ORCHESTRATOR}
    assert {o.host for o in obs} == {"h1", "h2", "h3"}
