"""sync_schedule(): RedBeat entries in real Redis follow the inventory."""

from __future__ import annotations

import pytest
from redbeat import RedBeatSchedulerEntry

from cr_orchestrator.runtime.celery_app import make_app
from cr_orchestrator.runtime.schedule import existing_entries, sync_schedule

from .conftest import REDIS_URL, make_topology


@pytest.fixture
def app(redis_client, prefix):
    return make_app(redis_url=REDIS_URL, prefix=prefix)


def test_entries_are_added_updated_and_removed_with_the_inventory(app, redis_client, prefix):
    first = make_topology(sets={"maildata": 30.0, "config": 300.0}, clusters=("mail", "web"))
    change = sync_schedule(app, first, "/inv/hosts.yml")
    group = "cr.probe.site-a.every-2s.0"
    assert sorted(change.added) == [group, "cr.sync.mail.config",
                                    "cr.sync.mail.maildata", "cr.sync.web.config",
                                    "cr.sync.web.maildata"]
    # the schedule lives under our prefix, where beat reads it
    members = {k.decode() for k in redis_client.zrange(f"{prefix}:redbeat::schedule", 0, -1)}
    assert f"{prefix}:redbeat:{group}" in members
    entry = RedBeatSchedulerEntry.from_key(f"{prefix}:redbeat:{group}", app=app)
    assert entry.task == "cr.probe_rounds"
    assert entry.args == [["mail", "web"], "/inv/hosts.yml"]
    assert entry.options["queue"] == "site.site-a"
    assert entry.schedule.run_every.total_seconds() == 2.0

    # unchanged inventory: nothing rewritten
    again = sync_schedule(app, first, "/inv/hosts.yml")
    assert (again.added, again.updated, again.removed) == ((), (), ())

    # web removed, config set removed, probe interval changed, primary moved to site-b
    second = make_topology(probe_interval_s=5.0, sets={"maildata": 30.0}, clusters=("mail",))
    change = sync_schedule(app, second, "/inv/hosts.yml", primaries={"mail": "mail-dr"})
    moved = "cr.probe.site-b.every-5s.0"
    assert change.added == (moved,)
    assert sorted(change.updated) == ["cr.sync.mail.maildata"]
    assert sorted(change.removed) == [group, "cr.sync.mail.config",
                                      "cr.sync.web.config", "cr.sync.web.maildata"]
    have = existing_entries(app)
    assert sorted(have) == [moved, "cr.sync.mail.maildata"]
    assert have[moved].args == [["mail"], "/inv/hosts.yml"]
    assert have[moved].schedule.run_every.total_seconds() == 5.0
    assert have[moved].options["queue"] == "site.site-b"
    assert not redis_client.exists(f"{prefix}:redbeat:{group}")


def test_foreign_entries_are_left_alone(app, prefix):
    from datetime import timedelta

    from celery.schedules import schedule

    RedBeatSchedulerEntry(name="someone-elses", task="x.y", schedule=schedule(timedelta(60)),
                          app=app).save()
    change = sync_schedule(app, make_topology(clusters=()), "/inv")
    assert change.removed == ()
    assert RedBeatSchedulerEntry.from_key(f"{prefix}:redbeat:someone-elses", app=app)


def test_rounds_go_to_a_site_whose_orchestrator_node_is_alive():
    """A site lost whole takes its orchestrator node with it: the rounds of a cluster
    whose primary was there go to the other site's workers, and come home after."""
    from cr_orchestrator.runtime.schedule import route_site

    topology = make_topology()
    mail = topology.clusters["mail"]
    assert route_site(topology, mail, "mail-a", None) == "site-a"
    assert route_site(topology, mail, "mail-a", frozenset({"site-a", "site-b"})) == "site-a"
    assert route_site(topology, mail, "mail-a", frozenset({"site-b"})) == "site-b"
    assert route_site(topology, mail, "mail-dr", frozenset({"site-b"})) == "site-b"
    assert route_site(topology, mail, "mail-a", frozenset({"elsewhere"})) == "site-a"


def test_crctl_run_marks_its_sites_alive_and_re_routes_when_one_goes(redis_client, prefix):
    from cr_orchestrator.runtime.schedule import alive_sites, mark_sites_alive, site_alive_key

    topology = make_topology()
    assert alive_sites(topology, redis_client, prefix) is None
    mark_sites_alive(redis_client, prefix, ["site-b"], "cr-site-b")
    assert alive_sites(topology, redis_client, prefix) == frozenset({"site-b"})
    assert 0 < redis_client.pttl(site_alive_key(prefix, "site-b")) <= 5000


def test_two_beats_one_sends_and_the_standby_takes_over_when_it_dies(app, prefix, tmp_path):
    """Two beats on one schedule: only the one holding RedBeat's lock sends; SIGKILL it
    and the standby (which waits tick by tick, never blocked on a lock call) sends
    within the lock's timeout."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from cr_orchestrator.runtime.celery_app import REDBEAT_LOCK_TIMEOUT_S

    sync_schedule(app, make_topology(probe_interval_s=1.0, sets={}), "/inv/hosts.yml")
    env = {**os.environ, "CR_REDIS_URL": REDIS_URL, "CR_PREFIX": prefix}
    logs = [tmp_path / f"beat{i}.log" for i in range(2)]
    beats = [subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "cr_orchestrator.runtime.celery_app", "beat",
         "-S", "cr_orchestrator.runtime.schedule.RedisTolerantScheduler", "--max-interval", "1",
         "--loglevel", "INFO", "-s", str(tmp_path / f"beat{i}.db")],
        env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT) for i, log in enumerate(logs)]

    def sent(i: int) -> int:
        return logs[i].read_text().count("Sending due task cr.probe.site-a.every-1s.0")

    try:
        deadline = time.monotonic() + 30
        while sent(0) + sent(1) < 4 and time.monotonic() < deadline:
            time.sleep(0.5)
        active = 0 if sent(0) else 1
        standby = 1 - active
        assert sent(active) >= 4 and sent(standby) == 0, (sent(0), sent(1))
        beats[active].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        while not sent(standby) and time.monotonic() - killed < REDBEAT_LOCK_TIMEOUT_S + 10:
            time.sleep(0.2)
        took = time.monotonic() - killed
        assert sent(standby), logs[standby].read_text()[-2000:]
        print(f"\nstandby beat sent its first round {took:.1f} s after the active one was killed")
    finally:
        for beat in beats:
            beat.kill()
            beat.wait()
