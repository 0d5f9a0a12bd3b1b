"""The observation store against the real Redis: round trip, cap, malformed entries."""

from __future__ import annotations

import logging

from cr_orchestrator.decide.detector import assess
from cr_orchestrator.observe.health import ORCHESTRATOR, Health, Liveness, Observation
from cr_orchestrator.model import (Check, CheckKind, ClientSwitch, Cluster, Member, Policy, Role,
                                   Service)
from cr_orchestrator.observe.store import ObservationStore


def _obs(host: str, at: float, health: Health = Health.OK, subject: str = "host") -> Observation:
    return Observation(host, ORCHESTRATOR, subject, health, at, 0.012,
                       None if health is Health.OK else "no answer within 1.5s",
                       {"free_bytes": {"/srv": 123}, "target": "host"})


def test_round_trip_keeps_every_field(redis_client, prefix):
    store = ObservationStore(client=redis_client, prefix=prefix)
    written = [_obs("mail-a", 100.0), _obs("mail-a", 101.0, Health.UNREACHABLE),
               Observation("mail-a", "mail-b", "check:smtp:25@198.18.0.11", Health.DEGRADED,
                           102.0, 0.5, "SMTP greeting '421 busy'", {"service": "MDaemon"})]
    assert store.add(observations=written) == 3
    read = store.recent(host="mail-a")
    assert read == written  # oldest first
    assert [o.detail for o in read] == [o.detail for o in written]
    assert store.hosts() == ["mail-a"]
    assert all(k.decode().startswith(prefix + ":") for k in redis_client.scan_iter(f"{prefix}:*"))


def test_history_is_capped_per_host(redis_client, prefix):
    store = ObservationStore(client=redis_client, prefix=prefix, maxlen=5)
    store.add(observations=[_obs("mail-a", float(i)) for i in range(12)])
    store.add(observations=[_obs("mail-b", 1.0)])
    kept = store.recent(host="mail-a")
    assert [o.at for o in kept] == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert redis_client.llen(store.key("mail-a")) == 5
    assert len(store.recent(host="mail-b")) == 1
    assert [o.at for o in store.recent(host="mail-a", since=9.5)] == [10.0, 11.0]
    assert redis_client.ttl(store.key("mail-a")) > 0


def test_malformed_entries_are_skipped_with_a_warning_naming_the_key(redis_client, prefix,
                                                                     caplog):
    store = ObservationStore(client=redis_client, prefix=prefix)
    store.add(observations=[_obs("mail-a", 1.0)])
    key = store.key("mail-a")
    redis_client.lpush(key, b"not json", b'{"host": "mail-a"}', b'[1,2]',
                       b'{"host":"mail-a","vantage":"orchestrator","subject":"host",'
                       b'"health":"splendid","at":3}')
    store.add(observations=[_obs("mail-a", 5.0)])
    with caplog.at_level(logging.WARNING, logger="cr_orchestrator.observe.store"):
        read = store.recent(host="mail-a")
    assert [o.at for o in read] == [1.0, 5.0]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 4 and all(key in w for w in warnings)


def test_detector_reads_what_the_store_holds(redis_client, prefix):
    cluster = Cluster("mail", "g", (Member("mail-a", Role.PRIMARY), Member("mail-b", Role.SECONDARY)),
                      (Service("MDaemon", (Check(CheckKind.SMTP, 25),)),), ClientSwitch(), (),
                      Policy(probe_interval_s=1.0, failures_before_down=3, required_vantages=1))
    store = ObservationStore(client=redis_client, prefix=prefix)
    for i in range(5):
        store.add(observations=[
            _obs("mail-a", 10.0 + i, Health.OK if i < 2 else Health.UNREACHABLE),
            _obs("mail-a", 10.0 + i, Health.OK if i < 2 else Health.UNREACHABLE,
                 "service:MDaemon"),
            _obs("mail-b", 10.0 + i), _obs("mail-b", 10.0 + i, subject="service:MDaemon")])
    result = assess(cluster=cluster, observations=store.recent_for(hosts=["mail-a", "mail-b"]),
                    now=14.5)
    assert result.hosts["mail-a"].machine.liveness is Liveness.DOWN
    assert result.hosts["mail-a"].machine.confirmed  # one vantage required here
    assert result.hosts["mail-b"].machine.liveness is Liveness.UP
