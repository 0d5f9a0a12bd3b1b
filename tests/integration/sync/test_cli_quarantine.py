"""``crctl quarantine list|restore`` in the lab: what the hosts keep aside, put back."""

from __future__ import annotations

import os
import shutil
import uuid

import pytest
import yaml

from cr_orchestrator.state.cluster import ClusterState

from .lab_helpers import forget_promotions, reset
from .test_cli_sync import crctl

pytestmark = pytest.mark.lab

STAMP = "20260101T000000Z"


@pytest.fixture
def world(sync_lab, redis_client, tmp_path):
    lab = sync_lab
    inv = yaml.safe_load(open(lab.inventory_path))
    group = inv["all"]["children"]["cr_cluster_mail"]["vars"]
    group["cr_replica_sets"] = [
        {"name": "mbox", "path": "/srv/crq-cli/Maildir", "every": "30s", "reconcile": "maildir"},
        {"name": "opaque", "path": "/srv/crq-db", "every": "30s"}]
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inv))
    roots = {h: {s: lab.data_dir(h) + p for s, p in (("mbox", "/crq-cli/Maildir"),
                                                       ("opaque", "/crq-db"))}
             for h in ("mail-a", "mail-b", "mail-dr")}
    forget_promotions(lab)
    prefix = f"crtest-{uuid.uuid4().hex[:8]}"
    state = ClusterState(redis_client, prefix)
    state.ensure(cluster="mail", configured_primary="mail-a")
    assert state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0) == 1
    yield lab, str(path), prefix, roots, state
    for host, sets in roots.items():
        for root in sets.values():
            reset(root)
        shutil.rmtree(lab.data_dir(host) + "/crq-cli", ignore_errors=True)
    keys = list(redis_client.scan_iter(match=f"{prefix}:*"))
    if keys:
        redis_client.delete(*keys)


def put(root, rel, text):
    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
    with open(os.path.join(root, rel), "w") as fh:
        fh.write(text)


def test_list_then_restore_a_maildir_quarantine_and_refuse_opaque_data_without_force(world):
    lab, inv, prefix, roots, state = world
    a, b = roots["mail-a"], roots["mail-b"]
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(b["mbox"], sub))
    put(b["mbox"], "new/2.y", "message 2")
    q = a["mbox"] + ".cr-quarantine/" + STAMP
    put(q, "new/1.x", "only mail-a had it")
    put(q, "cur/2.y:2,S", "message 2, read on mail-a")

    listed = crctl("quarantine", "list", "-i", inv, "mail")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    [line] = [x for x in listed.stdout.splitlines() if x.startswith("mail-a") and "mbox" in x]
    assert line.split()[2] == "2" and line.endswith(f"/srv/crq-cli/Maildir.cr-quarantine/{STAMP}")

    done = crctl("quarantine", "restore", "-i", inv, "--prefix", prefix, "mail", "mbox", "mail-a",
                 STAMP)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"restored 1 file(s) from mail-a:{STAMP} into mail-b (epoch 1); 1 not copied" in done.stdout
    assert "already on the primary as new/2.y (other flags)" in done.stdout
    assert open(os.path.join(b["mbox"], "new/1.x")).read() == "only mail-a had it"
    assert sorted(os.listdir(os.path.join(b["mbox"], "cur"))) == []  # no duplicate of 2.y
    assert not os.path.exists(os.path.join(q, "new/1.x"))  # merged: gone from quarantine
    assert os.path.exists(os.path.join(q, "cur/2.y:2,S"))
    again = crctl("quarantine", "restore", "-i", inv, "--prefix", prefix, "mail", "mbox",
                  "mail-a", STAMP)
    assert again.returncode == 0 and "restored 0 file(s)" in again.stdout
    assert [e.data["action"] for e in state.events("mail") if e.kind == "operator"] == [
        "quarantine.restore"] * 2

    # opaque data: refused without --force; with it, only what the primary lacks
    put(b["opaque"], "db.dat", "the primary's live file")
    oq = a["opaque"] + ".cr-quarantine/" + STAMP
    put(oq, "db.dat", "mail-a's old version")
    put(oq, "extra.dat", "only on mail-a")
    refused = crctl("quarantine", "restore", "-i", inv, "--prefix", prefix, "mail", "opaque",
                    "mail-a", STAMP)
    assert refused.returncode == 2 and "pass --force" in refused.stderr
    forced = crctl("quarantine", "restore", "-i", inv, "--prefix", prefix, "mail", "opaque",
                   "mail-a", STAMP, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "restored 1 file(s)" in forced.stdout and "1 not copied" in forced.stdout
    assert open(os.path.join(b["opaque"], "db.dat")).read() == "the primary's live file"
    assert open(os.path.join(b["opaque"], "extra.dat")).read() == "only on mail-a"
