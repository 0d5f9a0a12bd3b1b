"""crctl pause/resume/history/switchover against real Redis, as an operator types them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cr_orchestrator.state.cluster import ClusterState

from .conftest import REDIS_URL

CRCTL = str(Path(sys.executable).with_name("crctl"))


def crctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CRCTL, *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, CR_REDIS_URL=REDIS_URL))


def test_pause_resume_and_history(redis_client, prefix):
    state = ClusterState(redis_client, prefix)
    state.record_decision(cluster="mail", action="failover", target="mail-b",
                          reason="failing over from mail-a to mail-b: mail-a down for 3 probes "
                                 "from 2 vantages; mail-b replica 4 s behind", epoch=0,
                          now=1_795_000_000.0)
    state.append_event(cluster="mail", kind="playbook", at=1_795_000_004.0, data={
        "playbook": "failover", "ok": True, "status": "successful", "rc": 0,
        "duration_s": 3.2, "summary": "mail-b promoted", "epoch": 1, "limit": None})
    assert crctl("pause", "mail", "--prefix", prefix).stdout.strip() == \
        "mail paused: no automatic action until resumed"
    assert state.paused("mail")
    assert crctl("resume", "mail", "--prefix", prefix).returncode == 0
    assert not state.paused("mail")

    out = crctl("history", "mail", "--prefix", prefix).stdout.splitlines()
    assert out[0] == ("2026-11-18 11:06:40  mail       decision  failover mail-b: failing over "
                      "from mail-a to mail-b: mail-a down for 3 probes from 2 vantages; mail-b "
                      "replica 4 s behind")
    assert out[1].endswith("playbook  failover epoch 1: ok in 3.2 s; mail-b promoted")
    assert "operator: mail paused" in out[2] and "operator: mail resumed" in out[3]
    only = crctl("history", "--prefix", prefix, "-n", "1", "--kind", "decision").stdout
    assert only.count("\n") == 1 and "failover mail-b" in only
    assert '"kind": "playbook"' in crctl("history", "mail", "--json", "--prefix", prefix).stdout


def test_history_of_nothing_and_bad_operator_input(prefix, unreachable_inventory):
    assert crctl("history", "--prefix", prefix).stdout.strip() == "no history"
    bad = crctl("switchover", "mail", "--to", "mail-x", "-i", unreachable_inventory,
                "--prefix", prefix)
    assert bad.returncode == 2
    assert "mail-x is not a member of cluster mail (members: mail-a, mail-b, mail-dr)" in bad.stderr
    none = crctl("failover", "mail", "-i", unreachable_inventory, "--prefix", prefix)
    assert none.returncode == 2
    assert "cannot failover mail: no eligible target" in none.stderr


def test_run_refuses_an_unknown_site(prefix, unreachable_inventory):
    out = crctl("run", "-i", unreachable_inventory, "--site", "nowhere", "--prefix", prefix)
    assert out.returncode == 2
    assert "--site nowhere: not a site of" in out.stderr and "(sites: site-a, site-b)" in out.stderr
