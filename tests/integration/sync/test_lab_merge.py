"""Maildir reconcile in the namespace lab: a returning old primary's mail goes back.

mail-a is the primary of a Maildir set with ``reconcile: maildir``, synced to mail-b at
epoch 1. Then mail-a takes mail alone (two unique messages, and a flag change of a
message mail-b already has) while mail-b is promoted (epoch 2) and takes its own. The
first sync from mail-b quarantines mail-a's changes, merges the unique messages into
mail-b's Maildir (flags kept, no duplicate of the flag-renamed one), and resyncs mail-a.
A merge cut off midway and rerun ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import os
import uuid

import pytest

from cr_orchestrator.act.sync import FreshnessStore, sync_replica_set
from cr_orchestrator.act.sync.linux import LinuxBackend
from cr_orchestrator.act.sync.merge import PENDING_MARK, REPORT_FILE
from cr_orchestrator.errors import SyncError
from cr_orchestrator.model import ReplicaSet, ReplicaTarget
from .lab_helpers import forget_promotions, generate_maildir, make_message, reset, tree_hashes

pytestmark = pytest.mark.lab

DEADLINE_S = 120.0


@pytest.fixture
def world(sync_lab, redis_client):
    from cr_orchestrator.inventory import load_topology

    lab = sync_lab
    path = f"/srv/crmerge-{uuid.uuid4().hex[:6]}/Maildir"
    topo = load_topology(lab.inventory_path)
    cluster = topo.cluster("mail")
    rset = ReplicaSet(name="maildir", path=path, every_s=30, reconcile="maildir",
                      targets=(ReplicaTarget("mail-b", path),))
    topo = dataclasses.replace(topo, clusters={
        **topo.clusters, "mail": dataclasses.replace(cluster, replica_sets=(rset,))})
    roots = {h: lab.data_dir(h) + path[len("/srv"):] for h in ("mail-a", "mail-b")}
    forget_promotions(lab)
    prefix = f"crtest-{uuid.uuid4().hex[:8]}"
    store = FreshnessStore(redis_client, prefix)
    yield lab, topo, store, roots
    lab.heal()
    forget_promotions(lab)
    keys = list(redis_client.scan_iter(match=f"{prefix}:*"))
    if keys:
        redis_client.delete(*keys)
    for root in roots.values():
        reset(root)
        os.rmdir(os.path.dirname(root))


def sync(topo, store, source, epoch):
    return sync_replica_set(topology=topo, cluster="mail", replica_set="maildir", source=source,
                            epoch=epoch, store=store, deadline_s=DEADLINE_S)


def record(lab, host, epoch, role):
    state = lab.state_dir_of(host)
    os.makedirs(state, exist_ok=True)
    with open(f"{state}/mail.epoch", "w") as fh:
        fh.write(f"{epoch}\n")
    with open(f"{state}/mail.role", "w") as fh:
        fh.write(f"{role}\n")


def write(root, name, i):
    with open(os.path.join(root, name), "wb") as fh:
        fh.write(make_message(i, 1500))


def unique_names(root):
    """Maildir unique name → files holding it (new/ and cur/)."""
    found: dict[str, list[str]] = {}
    for sub in ("new", "cur"):
        for name in os.listdir(os.path.join(root, sub)):
            found.setdefault(name.split(":", 1)[0], []).append(f"{sub}/{name}")
    return found


def diverge(lab, topo, store, roots, *, alone: int):
    """Epoch 1 sync a → b; then a takes ``alone`` messages plus one flag change, and
    b (promoted at epoch 2) takes one message of its own. Returns a's unique names."""
    a, b = roots["mail-a"], roots["mail-b"]
    names = generate_maildir(a, count=60)
    record(lab, "mail-a", 1, "primary 1")
    assert sync(topo, store, "mail-a", 1).ok
    mine = []
    for i in range(alone):
        name = (f"cur/1764000{i:03d}.M{i}P9.mail-a:2,S" if i % 2 else f"new/1764000{i:03d}.M{i}P9.mail-a")
        write(a, name, 1000 + i)
        mine.append(name.split("/")[1].split(":")[0])
    # a client on mail-a read a message mail-b also holds: renamed new/X -> cur/X:2,S
    seen = next(n for n in names if n.startswith("new/"))
    os.rename(os.path.join(a, seen), os.path.join(a, "cur", seen[4:] + ":2,S"))
    os.utime(os.path.join(a, "cur", seen[4:] + ":2,S"))  # (a client may touch it)
    record(lab, "mail-b", 2, "primary 2")
    write(b, "new/1764100000.M1P1.mail-b", 5000)
    return mine, seen


def assert_merged(roots, mine, seen):
    on_b = unique_names(roots["mail-b"])
    assert all(len(files) == 1 for files in on_b.values()), \
        [f for f in on_b.values() if len(f) > 1][:5]  # no message twice
    assert set(mine) <= set(on_b)
    assert on_b[seen[4:]] == [seen]  # mail-b's own copy of the flag-renamed message
    assert "1764100000.M1P1.mail-b" in on_b
    assert tree_hashes(roots["mail-a"]) == tree_hashes(roots["mail-b"])  # a is b's replica


def test_returning_old_primary_merges_its_unique_mail_into_the_new_primary(world):
    lab, topo, store, roots = world
    mine, seen = diverge(lab, topo, store, roots, alone=2)
    report = sync(topo, store, "mail-b", 2)
    result = {t.host: t for t in report.targets}["mail-a"]
    assert result.ok, result
    assert result.merged == 2, result
    assert [reason for _p, reason in result.merge_left] == [
        f"already on the primary as {seen} (other flags)"]
    assert_merged(roots, mine, seen)
    # the flag change stays in quarantine, with its reason; the merged ones are gone there
    qdir = lab.data_dir("mail-a") + result.quarantine_dir[len("/srv"):]
    kept = tree_hashes(qdir)
    assert set(kept) == {f"cur/{seen[4:]}:2,S", REPORT_FILE}, kept
    assert PENDING_MARK not in kept
    [merge] = [e for e in report.events() if e["kind"] == "sync.merge"]
    assert (merge["merged"], merge["left"], merge["into"]) == (2, 1, "mail-b")
    # mail-b stayed the primary: no role flip, no synced record
    assert open(lab.state_dir_of("mail-b") + "/mail.role").read().strip() == "primary 2"
    assert open(lab.state_dir_of("mail-b") + "/mail.synced").read().strip() == "1"  # from epoch 1
    # an ordinary target now: nothing more to merge
    again = sync(topo, store, "mail-b", 2)
    assert again.ok and all(t.merged is None for t in again.targets)


def test_a_merge_cut_off_midway_and_rerun_neither_duplicates_nor_loses(world, monkeypatch):
    lab, topo, store, roots = world
    mine, seen = diverge(lab, topo, store, roots, alone=40)
    copy = LinuxBackend._copy_into_primary

    def half_then_killed(self, old, target, qdir, files, *, deadline_s):
        copy(self, old, target, qdir, files[: len(files) // 2], deadline_s=deadline_s)
        raise SyncError("rsync killed midway (test)")
    monkeypatch.setattr(LinuxBackend, "_copy_into_primary", half_then_killed)
    cut = {t.host: t for t in sync(topo, store, "mail-b", 2).targets}["mail-a"]
    assert not cut.ok and "killed midway" in cut.error
    assert 0 < len(set(mine) & set(unique_names(roots["mail-b"]))) < len(mine)
    monkeypatch.undo()
    report = sync(topo, store, "mail-b", 2)
    result = {t.host: t for t in report.targets}["mail-a"]
    assert result.ok, result
    assert result.merged == len(mine) - len(mine) // 2  # only what the cut run had not copied
    assert_merged(roots, mine, seen)
    quarantine = lab.data_dir("mail-a") + os.path.dirname(cut.quarantine_dir)[len("/srv"):]
    leftovers = [f for f in tree_hashes(quarantine) if not f.endswith(REPORT_FILE)]
    assert leftovers == [os.path.basename(cut.quarantine_dir) + f"/cur/{seen[4:]}:2,S"], leftovers
    assert not [f for f in tree_hashes(quarantine) if f.endswith(PENDING_MARK)]
