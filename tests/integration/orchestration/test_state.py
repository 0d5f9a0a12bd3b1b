"""ClusterState against a real Redis: CAS promotion, epoch, lock contention, events."""

from __future__ import annotations

import os
import threading
import time

import pytest

from cr_orchestrator.errors import StateError
from cr_orchestrator.model import Secret
from cr_orchestrator.state.cluster import ClusterState, PromotionConflict


@pytest.fixture
def state(redis_client, prefix):
    return ClusterState(redis_client, prefix)


def test_first_start_records_the_configured_primary_at_epoch_0(state):
    assert state.ensure(cluster="mail", configured_primary="mail-a") == ("mail-a", 0)
    # a second ensure (another worker) keeps what is there
    state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0)
    assert state.ensure(cluster="mail", configured_primary="mail-a") == ("mail-b", 1)


def test_promote_is_compare_and_set_on_the_epoch(state):
    state.ensure(cluster="mail", configured_primary="mail-a")
    assert state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0) == 1
    with pytest.raises(PromotionConflict, match="epoch is 1 \\(primary mail-b\\), not the expected 0"):
        state.promote(cluster="mail", new_primary="mail-dr", expected_epoch=0)
    assert (state.primary("mail"), state.epoch("mail")) == ("mail-b", 1)


def test_two_threads_racing_to_promote_only_one_wins(state):
    state.ensure(cluster="mail", configured_primary="mail-a")
    barrier = threading.Barrier(8)
    results: list[object] = []

    def race(host: str) -> None:
        barrier.wait()
        try:
            results.append(state.promote(cluster="mail", new_primary=host, expected_epoch=0))
        except PromotionConflict as exc:
            results.append(exc)

    threads = [threading.Thread(target=race, args=(f"mail-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r for r in results if r == 1] == [1]
    assert sum(isinstance(r, PromotionConflict) for r in results) == 7
    assert state.epoch("mail") == 1


def test_lock_admits_one_holder_at_a_time_and_is_released_only_by_its_owner(state, redis_client):
    inside, overlaps, refused = [], [], []
    barrier = threading.Barrier(2)

    def change(name: str) -> None:
        barrier.wait()
        try:
            with state.lock(cluster="mail", ttl_s=5, wait_s=0):
                if inside:
                    overlaps.append(name)
                inside.append(name)
                time.sleep(0.3)
                inside.remove(name)
        except StateError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=change, args=(n,)) for n in ("w1", "w2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert len(refused) == 1 and "cluster mail is locked by" in refused[0]
    assert state.lock_holder("mail") is None  # released

    # a waiting second worker gets it once the first lets go
    order = []

    def wait_for_it() -> None:
        with state.lock(cluster="mail", ttl_s=5, wait_s=5):
            order.append("w2")

    with state.lock(cluster="mail", ttl_s=5):
        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        time.sleep(0.2)
        order.append("w1 done")
    waiter.join()
    assert order == ["w1 done", "w2"]


def test_lock_is_extended_while_held_and_not_deleted_when_stolen(state, redis_client):
    with state.lock(cluster="mail", ttl_s=0.6) as lease:
        time.sleep(1.0)  # longer than the TTL: the keeper re-armed it
        assert state.lock_holder("mail") == lease.lock.local.token.decode()
        assert not lease.lost.is_set()
    key = state.lock_key("mail")
    # someone else's lock (e.g. ours expired and another worker took it) survives our release
    with state.lock(cluster="mail", ttl_s=5):
        redis_client.set(key, "other-worker")
    assert redis_client.get(key) == b"other-worker"


def test_a_lease_taken_over_says_so_and_sets_lost(state, redis_client, caplog):
    """The work a lock protects must stop when its keeper cannot extend it: the flows
    pass ``lost`` to the playbook runner as its cancel event."""
    with state.lock(cluster="mail", ttl_s=0.8) as lease:
        redis_client.set(state.lock_key("mail"), "other-worker", px=5000)
        assert lease.lost.wait(2.0), "the keeper did not notice"
        assert "expired or was taken over" in lease.why
    assert "lost the lock" in caplog.text and state.lock_key("mail") in caplog.text
    assert redis_client.get(state.lock_key("mail")) == b"other-worker"


def test_a_dead_holders_lease_frees_the_lock_within_its_ttl(state, redis_client):
    """A worker SIGKILLed mid-change extends its lease no more: the lock is free again
    within the TTL, not after a long fixed timeout."""
    import subprocess
    import sys

    url = os.environ.get("CR_REDIS_URL", "redis://127.0.0.1:6379/0")
    code = ("import os, redis; from cr_orchestrator.state.cluster import ClusterState; "
            f"s = ClusterState(redis.Redis.from_url({url!r}), {state.prefix!r}); "
            "cm = s.lock(cluster='mail', ttl_s=1.5); cm.__enter__(); "
            "print('held', flush=True); os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert proc.stdout.strip() == "held", proc.stderr
    assert state.lock_holder("mail") is not None
    deadline = time.monotonic() + 5
    while state.lock_holder("mail") is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state.lock_holder("mail") is None


def test_the_promotion_journals_its_change_until_it_is_finished(state):
    state.ensure(cluster="mail", configured_primary="mail-a")
    assert state.seeded("mail")
    epoch = state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0, now=50.0,
                          change={"kind": "failover", "old_primary": "mail-a",
                                  "old_primary_down": True})
    assert not state.seeded("mail")  # a promotion is more than the inventory's word
    change = state.change("mail")
    assert change["epoch"] == epoch == 1
    assert (change["kind"], change["new_primary"], change["old_primary"]) == \
        ("failover", "mail-b", "mail-a")
    assert change["old_primary_down"] is True and change["at"] == 50.0
    assert not state.finish_change("mail", 7)  # another epoch's change stays
    assert state.finish_change("mail", 1)
    assert state.change("mail") is None


def test_adopt_takes_the_hosts_word_and_clears_seed_and_journal(state, redis_client):
    state.ensure(cluster="mail", configured_primary="mail-a")
    state.adopt(cluster="mail", primary="mail-b", epoch=6, expected_epoch=0)
    assert (state.primary("mail"), state.epoch("mail"), state.seeded("mail")) == \
        ("mail-b", 6, False)
    from cr_orchestrator.state.cluster import PromotionConflict
    with pytest.raises(PromotionConflict, match="not the expected 0"):
        state.adopt(cluster="mail", primary="mail-a", epoch=9, expected_epoch=0)
    redis_client.hset(state.key("mail"), "change", "{not json")
    with pytest.raises(StateError, match="malformed Redis state: .*change"):
        state.change("mail")


def test_replica_set_lock_is_separate_from_the_cluster_lock(state):
    with state.lock(cluster="mail", ttl_s=5):
        with state.lock(cluster="mail", replica_set="maildata", ttl_s=5):
            assert state.lock_holder("mail", "maildata")


def test_event_stream_round_trip_and_quiet_repeats(state):
    assert state.record_decision(cluster="mail", action="none", target=None,
                                 reason="mail-a is primary", epoch=0, now=100.0,
                                 situation="primary_up")
    assert not state.record_decision(cluster="mail", action="none", target=None,
                                     reason="mail-a is primary; 3 s", epoch=0, now=102.0,
                                     situation="primary_up")
    assert state.record_decision(cluster="mail", action="failover", target="mail-b",
                                 reason="failing over from mail-a to mail-b", epoch=0, now=104.0)
    state.append_event(cluster="mail", kind="playbook", at=105.0,
                       data={"playbook": "failover", "ok": True, "rc": 0})
    events = state.events("mail", count=10)
    assert [(e.kind, e.at) for e in events] == [("decision", 100.0), ("decision", 104.0),
                                               ("playbook", 105.0)]
    assert events[1].data["reason"] == "failing over from mail-a to mail-b"
    assert state.last_decision("mail")["action"] == "failover"
    assert [e.kind for e in state.events("mail", count=1)] == ["playbook"]


def test_failovers_restarts_pause_and_failback_clock(state):
    state.record_failover("mail", 10.0)
    state.record_failover("mail", 20.0)
    assert state.failovers("mail") == (10.0, 20.0)
    assert state.count_restart("mail") == 1 and state.restarts("mail") == 1
    state.reset_restarts("mail")
    assert state.restarts("mail") == 0
    assert not state.paused("mail")
    state.set_paused("mail", True)
    assert state.paused("mail")
    assert state.in_sync_since(cluster="mail", host="mail-a") is None
    state.set_in_sync_since(cluster="mail", host="mail-a", since=50.0)
    assert state.in_sync_since(cluster="mail", host="mail-a") == 50.0
    state.set_in_sync_since(cluster="mail", host="mail-a", since=None)
    assert state.in_sync_since(cluster="mail", host="mail-a") is None


@pytest.mark.parametrize("key_part,field,value,call", [
    (None, "epoch", "three", lambda s: s.epoch("mail")),
    (None, "paused", "maybe", lambda s: s.paused("mail")),
    ("restarts", None, "x", lambda s: s.restarts("mail")),
    ("decision", None, "{not json", lambda s: s.last_decision("mail")),
])
def test_malformed_state_names_the_key(state, redis_client, key_part, field, value, call):
    key = state.key("mail", key_part)
    if field:
        redis_client.hset(key, field, value)
    else:
        redis_client.set(key, value)
    with pytest.raises(StateError, match=f"malformed Redis state: {key}"):
        call(state)


def test_nothing_secret_reaches_redis(state, redis_client, prefix):
    secret = Secret("hunter2-very-secret")
    with pytest.raises(StateError, match="refusing to write a Secret"):
        state.append_event(cluster="mail", kind="playbook", data={"password": secret})
    state.append_event(cluster="mail", kind="playbook", data={"host": "mail-a"})
    state.record_decision(cluster="mail", action="none", target=None, reason="ok", epoch=0,
                          now=1.0)
    from redis_dump import redis_text

    dump = b"".join(redis_text(redis_client, k) for k in redis_client.scan_iter(match=f"{prefix}*"))
    assert b"hunter2" not in dump
    assert b"mail-a" in dump  # the scan did see what was written


def test_live_status_reports_what_redis_says(state, redis_client, prefix):
    from cr_orchestrator.state.cluster import live_status
    from cr_orchestrator.state.freshness import FreshnessStore

    from .conftest import make_topology

    topo = make_topology()
    state.ensure(cluster="mail", configured_primary="mail-a")
    state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0, now=time.time())
    state.record_failover("mail", time.time())
    state.record_decision(cluster="mail", action="none", target=None, reason="mail-b is up",
                          epoch=1, now=time.time(), members={"mail-a": "host down", "mail-b": "up"})
    now = time.time()
    FreshnessStore(redis_client, prefix).record_success(
        cluster="mail", set_name="maildata", host="mail-a", source="mail-b", epoch=1,
        started_at=now - 12, ended_at=now - 10, bytes_sent=5, files=1)
    live = live_status(topo, redis_client, prefix)["mail"]
    assert (live["primary"], live["epoch"], live["paused"], live["failovers"]) == (
        "mail-b", 1, False, 1)
    assert live["health"] == {"mail-a": "host down", "mail-b": "up"}
    assert 11 < live["freshness_s"]["mail-a"] < 60
    assert live["last_decision"]["reason"] == "mail-b is up"
    assert live["lock"] is None


def test_a_quiet_decision_whose_situation_changes_is_recorded_once(state):
    # up → suspect (not yet down) → suspect again → up → up: three events, keyed on the
    # situation code, whatever the sentence says (its numbers change every round)
    rounds = [("primary_up", "mail-a is primary (epoch 0) and up; mail-b replica 3 s behind"),
              ("primary_suspect", "waiting: primary mail-a is suspect (service), not yet down"),
              ("primary_suspect", "waiting: primary mail-a is suspect (host), not yet down"),
              ("primary_up", "mail-a is primary (epoch 0) and up; mail-b replica 4 s behind"),
              ("primary_up", "mail-a is primary (epoch 0) and up; mail-b is back, 9 s behind")]
    recorded = [state.record_decision(cluster="mail", action="none", target=None, reason=r,
                                      situation=code, epoch=0, now=100.0 + i)
                for i, (code, r) in enumerate(rounds)]
    assert recorded == [True, True, False, True, False]
    assert [e.data["situation"] for e in state.events("mail")] == [
        "primary_up", "primary_suspect", "primary_up"]


def test_locks_of_dead_processes_here_are_freed_others_kept(state, redis_client):
    import socket
    import subprocess

    from cr_orchestrator.state.cluster import release_dead_holders

    gone = subprocess.Popen(["true"])
    gone.wait()
    me = socket.gethostname()
    redis_client.set(state.lock_key("mail"), f"{me}:{gone.pid}:abcd", px=8000)
    redis_client.set(state.lock_key("mail", "maildata"), f"{me}:{os.getpid()}:abcd", px=8000)
    redis_client.set(state.lock_key("web"), f"another-machine:{gone.pid}:abcd", px=8000)
    assert release_dead_holders(redis_client, state.prefix) == [state.lock_key("mail")]
    assert state.lock_holder("mail") is None
    assert state.lock_holder("mail", "maildata") and state.lock_holder("web")


def test_a_rounds_batched_read_says_what_the_single_reads_say(state, redis_client):
    # a probe round reads its state in one pipeline (state/batch.py); it must give the
    # values, and refuse the malformed ones, exactly as the one-key reads do
    from cr_orchestrator.state.batch import Batch

    state.ensure(cluster="mail", configured_primary="mail-a")
    state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0, now=5.0,
                  change={"kind": "failover", "old_primary": "mail-a"})
    state.set_paused("mail", True)
    state.count_restart("mail")
    state.record_failover("mail", 10.0)
    state.set_in_sync_since(cluster="mail", host="mail-a", since=50.0)
    state.record_decision(cluster="mail", action="none", target=None, reason="ok", epoch=1,
                          now=1.0, situation="primary_up")
    batch = Batch(redis_client)
    later = state.read_round(batch, "mail", home="mail-a")
    batch.run()
    read = later.value
    assert (read.record.primary, read.record.epoch, read.record.paused, read.record.seeded,
            read.record.change, read.record.lock_holder) == (
        state.primary("mail"), state.epoch("mail"), True, state.seeded("mail"),
        state.change("mail"), None)
    assert (read.restarts, read.failovers, read.in_sync_since, read.last_decision) == (
        1, (10.0,), 50.0, state.last_decision("mail"))

    # written with the decision's pipeline: quiet repeats stay out of the stream
    pipe = redis_client.pipeline(transaction=True)
    assert not state.record_decision(cluster="mail", action="none", target=None,
                                     reason="ok again", epoch=1, now=2.0,
                                     situation="primary_up", pipe=pipe,
                                     last=read.last_decision)
    pipe.execute()
    assert state.last_decision("mail")["reason"] == "ok again"
    assert len(state.events("mail")) == 1

    redis_client.hset(state.key("mail"), "paused", "maybe")
    redis_client.set(state.key("mail", "decision"), "{not json")
    batch = Batch(redis_client)
    later = state.read_round(batch, "mail", home="mail-a")
    batch.run()  # nothing is parsed yet: a value raises where it is used
    with pytest.raises(StateError, match=f"malformed Redis state: {state.key('mail')} paused"):
        assert later.value.record.paused
    with pytest.raises(StateError, match="malformed Redis state: .*:decision"):
        assert later.value.last_decision
