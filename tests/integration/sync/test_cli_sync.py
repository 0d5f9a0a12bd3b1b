"""``crctl sync`` in the lab: source from cluster state, progress lines, refusal."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import yaml

from cr_orchestrator.state.cluster import ClusterState

from .lab_helpers import forget_promotions, generate_maildir, reset, tree_hashes

pytestmark = pytest.mark.lab


@pytest.fixture
def cli_world(sync_lab, redis_client, tmp_path):
    lab = sync_lab
    inv = yaml.safe_load(open(lab.inventory_path))
    group = inv["all"]["children"]["cr_cluster_mail"]["vars"]
    group["cr_replica_sets"] = [{"name": "clitest", "path": "/srv/crsync-cli", "every": "30s"}]
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inv))
    roots = {h: lab.data_dir(h) + "/crsync-cli" for h in ("mail-a", "mail-b", "mail-dr")}
    for root in roots.values():
        reset(root)
    forget_promotions(lab)
    prefix = f"crtest-{uuid.uuid4().hex[:8]}"
    yield lab, str(path), prefix, roots
    for root in roots.values():
        reset(root)
    keys = list(redis_client.scan_iter(match=f"{prefix}:*"))
    if keys:
        redis_client.delete(*keys)


def crctl(*args):
    exe = os.path.join(os.path.dirname(sys.executable), "crctl")  # the venv's entry point
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)


def test_crctl_sync_follows_cluster_state_and_refuses_another_source(cli_world, redis_client):
    lab, inv, prefix, roots = cli_world
    generate_maildir(roots["mail-b"], count=50)
    state = ClusterState(redis_client, prefix)
    state.ensure(cluster="mail", configured_primary="mail-a")
    assert state.promote(cluster="mail", new_primary="mail-b", expected_epoch=0) == 1

    refused = crctl("sync", "-i", inv, "mail", "--from", "mail-a", "--prefix", prefix)
    assert refused.returncode == 2
    assert "refusing to sync from mail-a: the current primary is mail-b (epoch 1)" in refused.stderr

    done = crctl("sync", "-i", inv, "mail", "clitest", "--prefix", prefix)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "sync mail/clitest from mail-b: current primary from cluster state (epoch 1)"
    for host in ("mail-a", "mail-dr"):
        assert f"  {host}: started" in lines
        assert any(line.startswith(f"  {host}: ok, 50 file(s)") for line in lines), lines
        assert tree_hashes(roots[host]) == tree_hashes(roots["mail-b"])
    kinds = [e.kind for e in state.events("mail")]
    assert kinds.count("sync") == 2
