"""Shared fixtures: a real Redis client and a unique key prefix, cleaned up afterwards."""

from __future__ import annotations

import os
import uuid

import pytest
import redis

REDIS_URL = os.environ.get("CR_REDIS_URL", "redis://127.0.0.1:6379/0")


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=500))
    if keys:
        client.delete(*keys)


@pytest.fixture
def prefix(redis_client):
    value = f"crtest-{uuid.uuid4().hex[:8]}"
    yield value
    delete_prefix(redis_client, value)


def make_topology(*, probe_interval_s: float = 2.0, sets: dict[str, float] | None = None,
                  clusters: tuple[str, ...] = ("mail",), source: str = "/tmp/inv.yml"):
    """A small Topology built in code: mail-a (site-a) primary, mail-b secondary, mail-dr
    replica (site-b); one cluster per name in ``clusters``."""
    from dataclasses import replace

    from cr_orchestrator import model as m

    sets = {"maildata": 30.0} if sets is None else sets
    hosts = {
        name: m.Host(name, site, m.Platform.LINUX, addr, addr, addr,
                     ssh=m.SshSettings("root", 22, None))
        for name, site, addr in (("mail-a", "site-a", "198.18.80.11"),
                                 ("mail-b", "site-a", "198.18.80.12"),
                                 ("mail-dr", "site-b", "198.18.82.21"))
    }
    out = {}
    for name in clusters:
        out[name] = m.Cluster(
            name=name, group=f"cr_cluster_{name}",
            members=(m.Member("mail-a", m.Role.PRIMARY, 100), m.Member("mail-b", m.Role.SECONDARY, 50),
                     m.Member("mail-dr", m.Role.REPLICA, 10)),
            services=(m.Service("mail", (m.Check(m.CheckKind.SMTP, 25),)),),
            switch=m.ClientSwitch(shared_ip=m.SharedIp("198.18.80.100/24", "eth0")),
            replica_sets=tuple(
                m.ReplicaSet(s, "/srv/mail", (m.ReplicaTarget("mail-b", "/srv/mail"),
                                              m.ReplicaTarget("mail-dr", "/srv/mail")), every)
                for s, every in sets.items()),
            policy=replace(m.Policy(), probe_interval_s=probe_interval_s),
        )
    return m.Topology(source=source, hosts=hosts, clusters=out)


UNREACHABLE_INVENTORY = """\
all:
  children:
    linux:
      vars: {ansible_user: root, ansible_port: 1}
      hosts:
        mail-a: {ansible_host: 127.0.0.2, cr_site: site-a}
        mail-b: {ansible_host: 127.0.0.3, cr_site: site-a}
        mail-dr: {ansible_host: 127.0.0.4, cr_site: site-b}
    cr_cluster_mail:
      hosts: {mail-a: {}, mail-b: {}, mail-dr: {}}
      vars:
        cr_cluster: mail
        cr_members: {mail-a: {role: primary}, mail-b: {role: secondary}, mail-dr: {role: replica}}
        cr_services: [{name: mail, checks: [{smtp: 1}]}]
        cr_switch: {shared_ip: {address: 127.0.0.99/8, interface: lo}}
        cr_replica_sets: [{name: maildata, path: /srv/mail, every: 1h}]
        cr_policy: {probe_interval: 1s, probe_timeout: 500ms}
"""


@pytest.fixture(scope="module")
def unreachable_inventory(tmp_path_factory):
    """A valid inventory whose hosts refuse every connection (127.0.0.2-4 port 1): a probe
    round runs for real and ends in a decision without any lab."""
    path = tmp_path_factory.mktemp("inv") / "hosts.yml"
    path.write_text(UNREACHABLE_INVENTORY)
    return str(path)
