"""``crctl validate`` and ``crctl status`` as an operator runs them (real CLI, subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cr_orchestrator.inventory import build_topology, render_status
from cr_orchestrator.inventory.render import ClusterLive, duration

REPO = Path(__file__).parents[2]
CRCTL = str(Path(sys.executable).with_name("crctl"))
EXAMPLE_VAULT = str(REPO / "inventory" / ".vault-pass-example")
BROKEN = REPO / "tests" / "unit" / "broken_inventories"
# secrets of the examples and of the broken inventories: none may ever be printed
SECRETS = ("Example-Only-Winrm-Pass1", "ZXhhbXBsZS1vbmx5LXRzaWcta2V5LW5vdC1yZWFsIQ==",
           "Sup3rS3cret-Hunter2", "VGhpcy1Jcy1UaGUtVFNJRy1LZXk=", "Vaulted-Pa55-Never-Shown")


def crctl(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CRCTL, *args], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, **(env or {})})


EXPECTED_SUMMARY = {
    "mdaemon-pair": ["1 cluster, 2 hosts", "member   mail-a: primary, priority 100",
                     "member   mail-b: secondary", "shared IP 123.123.123.101/24 on 'Ethernet'",
                     "maildata: C:\\MDaemon every 30s [vss] -> mail-b:C:\\MDaemon", "failback manual"],
    "web-sql-dr": ["2 clusters, 3 hosts", "cluster web", "cluster sql", "member   dr1: replica",
                   "-> dr1:D:\\Replica\\web\\wwwroot", "-> dr1:D:\\Replica\\sql\\SQLData",
                   "DNS www.example.com via 123.123.123.53"],
    "cluster-plus-dr": ["1 cluster, 3 hosts", "member   app2: secondary", "member   app-dr: replica",
                        "(site tokyo) + DNS app.example.com", "app2:D:\\Sites\\app, app-dr:E:\\DR\\app",
                        "failback auto (after 10m healthy and in sync)"],
}


@pytest.mark.parametrize("example", sorted(EXPECTED_SUMMARY))
def test_validate_accepts_each_example_and_summarises_it(example):
    done = crctl("validate", "-i", f"inventory/{example}", "--vault-password-file", EXAMPLE_VAULT)
    assert done.returncode == 0, done.stderr
    for fragment in EXPECTED_SUMMARY[example]:
        assert fragment in done.stdout, (fragment, done.stdout)
    assert not any(secret in done.stdout + done.stderr for secret in SECRETS)


def test_validate_lists_every_problem_one_per_line_and_exits_1():
    done = crctl("validate", "-i", str(BROKEN / "windows_without_password"))
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3 and all("ansible_password: missing" in e for e in errors)
    assert {e.split("host '")[1].split("'")[0] for e in errors} == {"w1", "w2", "dr"}
    assert done.stderr.rstrip().endswith("3 problems found")


def test_validate_without_the_vault_password_names_the_vaulted_variables():
    done = crctl("validate", "-i", "inventory/web-sql-dr")
    assert done.returncode == 1
    assert "group_vars/windows.yml: group 'windows': ansible_password: is vault-encrypted" in done.stderr
    assert "cr_cluster_sql.yml: group 'cr_cluster_sql': cr_switch.dns.key_secret: is vault-encrypted" in done.stderr


def test_no_secret_in_output_of_a_failing_validate_with_plain_secrets():
    # _base_windows holds a plain password and TSIG key; break it by pointing at a missing host
    done = crctl("validate", "-i", str(BROKEN / "windows_paths_case"))
    assert done.returncode == 1 and "is the same as" in done.stderr
    status = crctl("status", "--no-live", "-i", str(BROKEN / "_base_windows"))
    assert status.returncode == 0, status.stderr
    for secret in SECRETS:
        assert secret not in done.stdout + done.stderr + status.stdout + status.stderr


def test_status_shows_roles_switch_and_policy_with_inventory_from_the_environment():
    done = crctl("status", "--no-live", "--vault-password-file", EXAMPLE_VAULT,
                 env={"CR_INVENTORY": "inventory/cluster-plus-dr"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("cluster app: switch shared IP 123.123.123.101/24")
    assert "live state unknown" in lines[0]
    assert lines[1].split() == ["HOST", "ROLE", "SITE", "PLATFORM", "ADDRESS", "HEALTH", "REPLICA", "AGE"]
    assert lines[2].split()[:5] == ["app1", "primary", "tokyo", "windows", "123.123.123.123"]
    assert lines[4].split()[:3] == ["app-dr", "replica", "osaka"]
    assert not any(secret in done.stdout for secret in SECRETS)


def test_no_inventory_is_a_usage_error():
    env = {k: v for k, v in os.environ.items() if k != "CR_INVENTORY"}
    done = subprocess.run([CRCTL, "validate"], capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == 2 and "no inventory given" in done.stderr


def test_render_status_merges_live_state_when_given():
    from test_inventory_build import linux  # same directory: pytest puts it on sys.path

    topo = build_topology(linux(), source="inv")
    live = {"web": ClusterLive(primary="b", epoch=7, paused=True, health={"a": "down", "b": "up"},
                               freshness_s={"b": 90.0})}
    text = render_status(topo, live=live)
    assert "primary now b, epoch 7, PAUSED" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:4]}
    assert rows["a"][5:] == ["down", "-"] and rows["b"][5:] == ["up", "1m30s"]
    as_dict = {"web": {"primary": None, "epoch": 0, "paused": False, "health": {}, "freshness_s": {},
                       "failovers": 0, "last_decision": None, "lock": None}}
    assert "no live state in Redis yet" in render_status(topo, live=as_dict)
    assert "live state unknown (Redis unreachable" in render_status(
        topo, live=None, live_note="Redis unreachable: ConnectionError")


@pytest.mark.parametrize("seconds, text", [(0.5, "500ms"), (30, "30s"), (90, "1m30s"), (3600, "1h"),
                                           (2.5, "2.5s"), (3660, "1h1m")])
def test_durations_print_the_way_the_inventory_writes_them(seconds, text):
    assert duration(seconds) == text
