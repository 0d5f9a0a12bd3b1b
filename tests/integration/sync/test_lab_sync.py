"""Replication in the namespace lab, told as one story.

mail-a is the primary of a 5,000-message Maildir replicated to mail-b (same path) and
mail-dr (another directory). Initial and incremental syncs leave every target identical
by content hash; mail-a crashes and mail-b becomes primary (epoch 2): the sync turns
round by itself, the crashed mail-a fails cleanly while mail-dr still syncs, and
mail-a's lag grows; when mail-a is back, the mail it had received but never replicated
is moved to quarantine (and reported) before the reverse sync makes it a copy of mail-b.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import threading
import time
import uuid

import pytest

from cr_orchestrator.model import ReplicaSet, ReplicaTarget
from cr_orchestrator.act.sync import FreshnessStore, TargetPathLock, sync_replica_set
from .lab_helpers import forget_promotions, generate_maildir, make_message, reset, tree_hashes

pytestmark = pytest.mark.lab

PATH = "/srv/crsync/Maildir"
DR_PATH = "/srv/dr/crsync/Maildir"
# how rsync reports a peer it cannot reach depends on when the connection dies: ssh
# failing (255), or the protocol stream breaking (12) / socket I/O error (10)
CONNECTION_LOST = r"rsync exit (255|12|10):"
DEADLINE_S = 120.0  # generous: CI machines are shared and loaded


@pytest.fixture(scope="module")
def world(sync_lab, redis_client):
    from cr_orchestrator.inventory import load_topology

    lab = sync_lab
    topo = load_topology(lab.inventory_path)
    cluster = topo.cluster("mail")
    maildir = ReplicaSet(name="maildir", path=PATH, every_s=30,
                         targets=(ReplicaTarget("mail-b", PATH), ReplicaTarget("mail-dr", DR_PATH)))
    topo = dataclasses.replace(topo, clusters={
        **topo.clusters, "mail": dataclasses.replace(cluster, replica_sets=(maildir,))})
    roots = {"mail-a": lab.data_dir("mail-a") + "/crsync/Maildir",
             "mail-b": lab.data_dir("mail-b") + "/crsync/Maildir",
             "mail-dr": lab.data_dir("mail-dr") + "/dr/crsync/Maildir"}
    for root in roots.values():
        reset(root)
    forget_promotions(lab)
    prefix = f"crtest-{uuid.uuid4().hex[:8]}"
    store = FreshnessStore(redis_client, prefix)
    yield lab, topo, store, roots
    lab.heal()
    keys = list(redis_client.scan_iter(match=f"{prefix}:*"))
    if keys:
        redis_client.delete(*keys)
    for root in roots.values():
        reset(root)


def sync(topo, store, source, epoch):
    return sync_replica_set(topology=topo, cluster="mail", replica_set="maildir", source=source,
                            epoch=epoch, store=store, deadline_s=DEADLINE_S)


def assert_copies_of(roots, source, *targets):
    want = tree_hashes(roots[source])
    for t in targets:
        got = tree_hashes(roots[t])
        assert got == want, (f"{t} differs from {source}: missing {sorted(set(want) - set(got))[:5]}, "
                             f"extra {sorted(set(got) - set(want))[:5]}, changed "
                             f"{sorted(k for k in set(got) & set(want) if got[k] != want[k])[:5]}")


def test_1_initial_sync_copies_5000_messages_to_both_targets(world):
    lab, topo, store, roots = world
    generate_maildir(roots["mail-a"], count=5000)
    report = sync(topo, store, "mail-a", 1)
    assert report.ok, report
    assert {t.host: t.files for t in report.targets} == {"mail-b": 5000, "mail-dr": 5000}
    assert_copies_of(roots, "mail-a", "mail-b", "mail-dr")
    assert len(tree_hashes(roots["mail-dr"])) == 5000


def test_2_incremental_sync_carries_new_deleted_edited_and_moved_mail(world):
    lab, topo, store, roots = world
    a = roots["mail-a"]
    generate_maildir(a, count=100, start=5000)
    new_mail = sorted(os.listdir(f"{a}/new"))
    for name in new_mail[:30]:  # read by a client: new/ → cur/ with a flag
        os.rename(f"{a}/new/{name}", f"{a}/cur/{name}:2,S")
    cur = sorted(os.listdir(f"{a}/cur"))
    for name in cur[:50]:
        os.remove(f"{a}/cur/{name}")
    for name in cur[50:70]:  # same size, other content: caught by size+mtime (new mtime)
        with open(f"{a}/cur/{name}", "r+b") as fh:
            fh.write(b"X-Edited: yes\r\n")
    report = sync(topo, store, "mail-a", 1)
    assert report.ok, report
    for t in report.targets:
        assert t.deleted >= 50 and t.files >= 100, t  # overlaps make exact counts noisy
    assert_copies_of(roots, "mail-a", "mail-b", "mail-dr")


def test_3_a_down_target_fails_cleanly_the_other_syncs_and_its_lag_grows(world):
    lab, topo, store, roots = world
    generate_maildir(roots["mail-a"], count=10, start=6000)
    lab.fail("mail-dr", "link")
    try:
        first = sync(topo, store, "mail-a", 1)
        lag1 = store.freshness("mail", "maildir")["mail-dr"]
        time.sleep(1.0)
        second = sync(topo, store, "mail-a", 1)
        lag2 = store.freshness("mail", "maildir")["mail-dr"]
    finally:
        lab.heal("mail-dr")
    for report in (first, second):
        by_host = {t.host: t for t in report.targets}
        assert by_host["mail-b"].ok and not by_host["mail-dr"].ok
        assert "rsync mail-a → mail-dr:/srv/dr/crsync/Maildir failed" in by_host["mail-dr"].error
        assert by_host["mail-dr"].duration_s < DEADLINE_S  # failed on its own, not by our kill
    assert_copies_of(roots, "mail-a", "mail-b")
    assert lag2.lag_s > lag1.lag_s > 0 and lag2.last_success_source == "mail-a"
    assert (lag1.consecutive_failures, lag2.consecutive_failures) == (1, 2)
    assert lag2.next_retry_at - lag2.last_error_at == 60.0  # 30 s interval, doubled
    assert re.search(CONNECTION_LOST, lag2.last_error), lag2.last_error
    healed = sync(topo, store, "mail-a", 1)
    assert healed.ok and store.freshness("mail", "maildir")["mail-dr"].consecutive_failures == 0
    assert_copies_of(roots, "mail-a", "mail-b", "mail-dr")


def test_4_after_failover_sync_follows_the_new_primary_without_a_manual_step(world):
    lab, topo, store, roots = world
    a, b = roots["mail-a"], roots["mail-b"]
    # mail-a takes mail that never replicates, then crashes
    with open(f"{a}/new/1763799999.unreplicated.mail-a", "wb") as fh:
        fh.write(make_message(99999, 1500))
    edited = sorted(os.listdir(f"{a}/cur"))[100]
    with open(f"{a}/cur/{edited}", "ab") as fh:
        fh.write(b"\r\nflagged on mail-a after the last sync\r\n")
    lab.fail("mail-a", "crash")
    # mail-b is promoted (epoch 2) and receives new mail
    generate_maildir(b, count=20, start=7000)
    report = sync(topo, store, "mail-b", 2)
    by_host = {t.host: t for t in report.targets}
    assert set(by_host) == {"mail-a", "mail-dr"}
    assert by_host["mail-dr"].ok and not by_host["mail-a"].ok
    # mail-a was the source: its unreplicated changes are looked for first, which fails
    # cleanly while it is down, so nothing is overwritten
    assert by_host["mail-a"].error.startswith("comparing mail-b with mail-a before the resync failed")
    assert re.search(CONNECTION_LOST, by_host["mail-a"].error) and "not overwriting it" in by_host["mail-a"].error
    assert_copies_of(roots, "mail-b", "mail-dr")
    fresh = store.freshness("mail", "maildir")
    assert fresh["mail-dr"].last_success_source == "mail-b" and fresh["mail-dr"].last_success_epoch == 2
    assert fresh["mail-a"].consecutive_failures == 1 and fresh["mail-a"].last_success_at is None


def test_5_returning_old_primary_keeps_its_unreplicated_mail_in_quarantine(world):
    lab, topo, store, roots = world
    a = roots["mail-a"]
    lab.heal("mail-a")
    unreplicated = {"new/1763799999.unreplicated.mail-a": tree_hashes(a)["new/1763799999.unreplicated.mail-a"]}
    report = sync(topo, store, "mail-b", 2)
    result = {t.host: t for t in report.targets}["mail-a"]
    assert result.ok, result
    assert "new/1763799999.unreplicated.mail-a" in result.quarantined
    assert any(q.startswith("cur/") for q in result.quarantined)  # the edited message
    assert len(result.quarantined) == 2, result.quarantined
    quarantine = a + ".cr-quarantine/" + os.path.basename(result.quarantine_dir)
    kept = tree_hashes(quarantine)
    assert kept["new/1763799999.unreplicated.mail-a"] == unreplicated["new/1763799999.unreplicated.mail-a"]
    assert_copies_of(roots, "mail-b", "mail-a", "mail-dr")
    assert [e["kind"] for e in report.events()].count("sync.quarantine") == 1
    # a second run has nothing more to save
    again = sync(topo, store, "mail-b", 2)
    assert again.ok and all(t.quarantined == () for t in again.targets)


def test_6_two_clusters_into_one_dr_host_and_one_writer_per_path(world):
    lab, topo, store, roots = world
    www_root = lab.data_dir("mail-b") + "/crsync/www"
    reset(www_root)
    os.makedirs(www_root)
    for i in range(200):
        with open(f"{www_root}/page{i}.html", "w") as fh:
            fh.write(f"<p>{i}</p>")
    www = ReplicaSet(name="site", path="/srv/crsync/www", every_s=30,
                     targets=(ReplicaTarget("mail-dr", "/srv/dr/crsync/www"),))
    base = topo.cluster("mail")
    web = dataclasses.replace(base, name="www", group="cr_www", replica_sets=(www,),
                              members=(dataclasses.replace(base.members[1], role=base.members[0].role),
                                       base.members[2]))
    topo2 = dataclasses.replace(topo, clusters={**topo.clusters, "www": web})
    results = {}

    def run(cluster, set_name, epoch):
        results[cluster] = sync_replica_set(topology=topo2, cluster=cluster, replica_set=set_name,
                                            source="mail-b", epoch=epoch, store=store,
                                            deadline_s=DEADLINE_S)
    threads = [threading.Thread(target=run, args=a) for a in (("mail", "maildir", 2), ("www", "site", 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["mail"].ok and results["www"].ok
    dr_www = lab.data_dir("mail-dr") + "/dr/crsync/www"
    assert tree_hashes(dr_www) == tree_hashes(www_root)
    assert_copies_of(roots, "mail-b", "mail-dr")
    # a second writer of the DR maildir path (another run holds it) is refused clearly
    locks = TargetPathLock(store.redis, store.prefix)
    token = locks.acquire(host="mail-dr", path=DR_PATH + "/", owner="www/site from mail-b", ttl_s=60)
    try:
        report = sync(topo, store, "mail-b", 2)
    finally:
        locks.release(host="mail-dr", path=DR_PATH, token=token)
    dr = {t.host: t for t in report.targets}["mail-dr"]
    assert not dr.ok and "being written by another sync (www/site from mail-b)" in dr.error
    assert {t.host: t for t in report.targets}["mail-a"].ok
    reset(www_root)
    reset(dr_www)


def test_7_a_frozen_target_is_cut_off_at_the_deadline(world):
    lab, topo, store, roots = world
    lab.fail("mail-dr", "freeze")
    try:
        started = time.monotonic()
        report = sync_replica_set(topology=topo, cluster="mail", replica_set="maildir", source="mail-b",
                                  epoch=2, store=store, deadline_s=3)
        elapsed = time.monotonic() - started
    finally:
        lab.heal("mail-dr")
    by_host = {t.host: t for t in report.targets}
    assert by_host["mail-a"].ok and not by_host["mail-dr"].ok
    # killed by `timeout` on the primary (124/137) or ssh's own connect timeout (255)
    assert "deadline" in by_host["mail-dr"].error or re.search(CONNECTION_LOST, by_host["mail-dr"].error)
    assert elapsed < 3 + 10 + 5  # deadline + local kill grace + slack: nothing waited longer


def test_8_a_target_promoted_at_a_newer_epoch_refuses_an_older_sync(world, redis_client):
    # The race this closes: an old primary's sync started before a failover (its ssh
    # retrying while the host was down) reached the new primary after the take-over and
    # its --delete removed mail taken there. The target's own epoch record now refuses it.
    lab, topo, _store, roots = world
    store = FreshnessStore(redis_client, f"crtest-{uuid.uuid4().hex[:8]}")
    generate_maildir(roots["mail-a"], count=20, start=90000)
    record = os.path.join(lab.state_dir_of("mail-dr"), "mail.epoch")
    taken_there = os.path.join(roots["mail-dr"], "new", "taken-on-the-new-primary")
    os.makedirs(os.path.dirname(taken_there), exist_ok=True)
    with open(taken_there, "wb") as fh:
        fh.write(make_message(1, 500))
    with open(record, "w") as fh:
        fh.write("7\n")
    try:
        report = sync_replica_set(topology=topo, cluster="mail", replica_set="maildir",
                                  source="mail-a", epoch=3, store=store, deadline_s=DEADLINE_S)
        by_host = {t.host: t for t in report.targets}
        assert by_host["mail-b"].ok, by_host["mail-b"].error  # no record there: not fenced
        assert not by_host["mail-dr"].ok
        assert ("cr-orchestrator: refused: this sync carries epoch 3 but mail-dr was promoted "
                "at epoch 7: not overwriting it") in by_host["mail-dr"].error
        assert os.path.exists(taken_there)  # --delete never ran there
        # at the target's own epoch (or later) the sync goes through
        later = sync_replica_set(topology=topo, cluster="mail", replica_set="maildir",
                                 source="mail-a", epoch=7, store=store, deadline_s=DEADLINE_S)
        assert all(t.ok for t in later.targets), [t.error for t in later.targets]
        assert not os.path.exists(taken_there)
        assert_copies_of(roots, "mail-a", "mail-b", "mail-dr")
    finally:
        os.unlink(record)


def test_9_a_replica_only_message_survives_the_new_primarys_first_sync(world, redis_client):
    """The old primary's last sync reached mail-dr but not mail-b; mail-b is promoted. Its
    first sync would --delete that message from mail-dr, the only place it still is: the
    target keeps it in quarantine instead (the first sync at a new epoch), and says so."""
    lab, topo, _store, roots = world
    store = FreshnessStore(redis_client, f"crtest-{uuid.uuid4().hex[:8]}")
    forget_promotions(lab)
    lab.heal()
    assert sync(topo, store, "mail-a", 10).ok  # every copy equal, received at epoch 10
    only_on_dr = "new/1763899999.from-the-old-primary.mail-a"
    with open(os.path.join(roots["mail-dr"], only_on_dr), "wb") as fh:
        fh.write(make_message(424242, 900))
    first = sync(topo, store, "mail-b", 11)  # mail-b promoted at epoch 11
    dr = {t.host: t for t in first.targets}["mail-dr"]
    assert dr.ok, dr.error
    assert not os.path.exists(os.path.join(roots["mail-dr"], only_on_dr))  # the mirror is exact
    kept = [p for p in glob.glob(roots["mail-dr"] + ".cr-quarantine/*-epoch-11/" + only_on_dr)]
    assert len(kept) == 1 and open(kept[0], "rb").read() == make_message(424242, 900)
    assert dr.kept == 1 and dr.kept_dir and dr.kept_dir.endswith("-epoch-11")
    events = first.events()
    sync_event = next(e for e in events if e["kind"] == "sync" and e["target"] == "mail-dr")
    assert (sync_event["deleted"], sync_event["quarantined"]) == (1, 1), sync_event
    said = [e["reason"] for e in events if e["kind"] == "sync.quarantine"]
    assert any("1 file(s) that the sync from mail-b at epoch 11 deleted or overwrote on mail-dr "
               "were kept in" in r for r in said), said
    # the next sync at the same epoch deletes as usual, and keeps nothing more
    with open(os.path.join(roots["mail-dr"], only_on_dr), "wb") as fh:
        fh.write(make_message(424243, 900))
    again = {t.host: t for t in sync(topo, store, "mail-b", 11).targets}["mail-dr"]
    assert again.ok and again.kept == 0 and again.deleted == 1
    forget_promotions(lab)
