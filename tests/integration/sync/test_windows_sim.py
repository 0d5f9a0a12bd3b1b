"""The Windows sync against the WS-Man test server, through the real WinRM client.

The server cannot run PowerShell: it answers each step with scripted output (what a real
host prints, written from the documented formats) and records every command, so these
tests prove the sequence, the cleanup in every outcome, and how replies are read — not
that VSS or robocopy behave on a real Windows host (see docs/replication.md).
"""

from __future__ import annotations

import json
import re

import pytest

from cr_orchestrator.model import (ClientSwitch, Cluster, Host, Member, Platform, Policy, ReplicaSet,
                                   ReplicaTarget, Role, Secret, Topology, WinRMSettings)
from cr_orchestrator.act.sync import sync_replica_set

from cr_orchestrator.testworld.wsman_sim import Reply, WsmanSim

SHADOW = "{6C3E1F0A-1111-2222-3333-444455556666}"
CREATE = re.compile(r"-ClassName Win32_ShadowCopy -MethodName Create")
ROBOCOPY = re.compile(r"& robocopy\.exe")
DELETE = re.compile(r"step = 'delete-shadow'")
QUARANTINE = re.compile(r"step = 'quarantine'")

ROBOCOPY_OK = """
-------------------------------------------------------------------------------
   ROBOCOPY     ::     Robust File Copy for Windows
-------------------------------------------------------------------------------
  Options : *.* /NDL /NFL /TEE /S /E /COPY:DAT /PURGE /MIR /XJ /BYTES /NP /MT:8 /R:2 /W:5
------------------------------------------------------------------------------

------------------------------------------------------------------------------

               Total    Copied   Skipped  Mismatch    FAILED    Extras
    Dirs :        14         1        13         0         0         0
   Files :      5012        25      4987         0         0         2
   Bytes :  96632832    409600  96223232         0         0      8192
   Times :   0:00:02   0:00:01                       0:00:00   0:00:01
"""
ROBOCOPY_FATAL = r"""
2026/11/22 03:00:01 ERROR 53 (0x00000035) Accessing Destination Directory \\10.0.1.13\E$\DR\MDaemon\
The network path was not found.
"""


def created(code=0):
    if code:
        return Reply(stdout=json.dumps({"step": "create-shadow", "ok": False, "vss_code": code}), rc=3)
    return Reply(stdout=json.dumps({"step": "create-shadow", "ok": True, "vss_code": 0,
                                    "shadow_id": SHADOW, "device_object":
                                    r"\\?\GLOBALROOT\Device\HarddiskVolumeShadowCopy7"}))


def deleted(call):
    sid = re.search(r"\$shadowId = '([^']*)'", call.script).group(1)
    return Reply(stdout=json.dumps({"step": "delete-shadow", "ok": True, "shadow_id": sid or SHADOW,
                                    "problems": []}))


def robocopy_reply(call):
    return Reply(stdout=ROBOCOPY_FATAL, rc=16) if "10.0.1.13" in call.script else Reply(stdout=ROBOCOPY_OK, rc=3)


def topology(sims: dict[str, WsmanSim]) -> Topology:
    hosts = {}
    for i, name in enumerate(("mail-a", "mail-b", "mail-dr"), 11):
        sim = sims.get(name) or sims["mail-a"]
        hosts[name] = Host(name=name, site="a", platform=Platform.WINDOWS, management_address=sim.address,
                           cluster_address=f"10.0.1.{i}", service_address=f"10.0.0.{i}",
                           winrm=WinRMSettings(user="admin", password=Secret("pw"), transport="basic",
                                               port=sim.port, scheme="http", path="/wsman",
                                               server_cert_validation=False))
    rs = ReplicaSet(name="maildata", path=r"D:\MDaemon", every_s=30, vss=True, excludes=("*.tmp",),
                    targets=(ReplicaTarget("mail-b", r"D:\MDaemon"), ReplicaTarget("mail-dr", r"E:\DR\MDaemon")))
    cluster = Cluster(name="mail", group="cr_mail", members=(Member("mail-a", Role.PRIMARY),
                      Member("mail-b", Role.SECONDARY), Member("mail-dr", Role.REPLICA)),
                      services=(), switch=ClientSwitch(), replica_sets=(rs,), policy=Policy())
    return Topology(source="inv", hosts=hosts, clusters={"mail": cluster})


@pytest.fixture
def sim_a():
    with WsmanSim(users={"admin": "pw"}, auth_methods=("basic",)) as sim:
        yield sim


def steps(sim) -> list[str]:
    names = []
    for c in sim.commands:
        text = c.script or ""
        names.append("create" if CREATE.search(text) else "robocopy" if ROBOCOPY.search(text)
                     else "delete" if DELETE.search(text) else "quarantine" if QUARANTINE.search(text)
                     else "other")
    return names


def test_clean_run_walks_create_robocopy_delete_and_records_freshness(sim_a, store):
    sim_a.register(CREATE, created())
    sim_a.register(ROBOCOPY, Reply(stdout=ROBOCOPY_OK, rc=3))
    sim_a.register(DELETE, deleted)
    seen = []
    report = sync_replica_set(topology=topology({"mail-a": sim_a}), cluster="mail", replica_set="maildata",
                              source="mail-a", epoch=1, store=store, now=lambda: 1000.0,
                              on_progress=lambda host, phase, result: seen.append((host, phase)))
    assert report.ok, report
    assert steps(sim_a) == ["create", "robocopy", "robocopy", "delete"]
    robocopies = [c.script for c in sim_a.commands if ROBOCOPY.search(c.script)]
    assert any(r"'\\10.0.1.12\D$\MDaemon'" in s for s in robocopies)
    assert any(r"'\\10.0.1.13\E$\DR\MDaemon'" in s for s in robocopies)
    assert all(r"\vss\mail-maildata-" in s and "'/XF' '*.tmp'" in s for s in robocopies)
    assert f"$shadowId = '{SHADOW}'" in sim_a.commands[-1].script
    b = store.freshness("mail", "maildata", now=1030.0)["mail-b"]
    assert (b.bytes, b.files, b.last_success_source, b.last_success_epoch, b.lag_s) == (
        409600, 25, "mail-a", 1, 30.0)
    assert sorted(seen) == sorted([(h, p) for h in ("mail-b", "mail-dr") for p in ("started", "finished")])


def test_robocopy_failure_still_deletes_the_shadow_and_other_target_syncs(sim_a, store):
    sim_a.register(CREATE, created())
    sim_a.register(ROBOCOPY, robocopy_reply)
    sim_a.register(DELETE, deleted)
    report = sync_replica_set(topology=topology({"mail-a": sim_a}), cluster="mail", replica_set="maildata",
                              source="mail-a", epoch=1, store=store)
    by_host = {t.host: t for t in report.targets}
    assert by_host["mail-b"].ok and not by_host["mail-dr"].ok and not report.ok
    assert "robocopy exit 16: fatal" in by_host["mail-dr"].error
    assert "The network path was not found" in by_host["mail-dr"].error
    assert steps(sim_a)[0] == "create" and steps(sim_a)[-1] == "delete"
    dr = store.freshness("mail", "maildata")["mail-dr"]
    assert dr.consecutive_failures == 1 and dr.next_retry_at is not None and "exit 16" in dr.last_error


@pytest.mark.parametrize("code,words", [(8, "maximum number of shadow copies"),
                                        (9, "another shadow copy operation is already in progress")])
def test_vss_refusal_is_a_clear_error_with_no_robocopy_and_a_cleanup(sim_a, store, code, words):
    sim_a.register(CREATE, created(code))
    sim_a.register(ROBOCOPY, Reply(stdout=ROBOCOPY_OK, rc=1))
    sim_a.register(DELETE, deleted)
    report = sync_replica_set(topology=topology({"mail-a": sim_a}), cluster="mail", replica_set="maildata",
                              source="mail-a", epoch=1, store=store)
    assert steps(sim_a) == ["create", "delete"]
    assert all(not t.ok and f"code {code} ({words}" in t.error for t in report.targets)


def test_create_step_that_times_out_is_cleaned_up_through_the_state_file(sim_a, store):
    sim_a.register(CREATE, Reply(hang=True))
    sim_a.register(DELETE, deleted)
    report = sync_replica_set(topology=topology({"mail-a": sim_a}), cluster="mail", replica_set="maildata",
                              source="mail-a", epoch=1, store=store, deadline_s=1.5)
    assert not report.ok and "exceeded the deadline" in report.targets[0].error
    assert steps(sim_a) == ["create", "delete"]
    cleanup = sim_a.commands[-1].script
    assert "$shadowId = ''" in cleanup and "Get-Content -LiteralPath $stateFile" in cleanup


def test_failback_quarantines_on_the_old_primary_before_the_reverse_sync(store):
    with WsmanSim(users={"admin": "pw"}, auth_methods=("basic",)) as sim_a, \
            WsmanSim(users={"admin": "pw"}, auth_methods=("basic",)) as sim_b:
        for sim in (sim_a, sim_b):
            sim.register(CREATE, created())
            sim.register(ROBOCOPY, Reply(stdout=ROBOCOPY_OK, rc=1))
            sim.register(DELETE, deleted)
        sim_a.register(QUARANTINE, Reply(stdout=json.dumps({"step": "quarantine", "moved": "Users\\x.msg"})))
        topo = topology({"mail-a": sim_a, "mail-b": sim_b})
        first = sync_replica_set(topology=topo, cluster="mail", replica_set="maildata", source="mail-a",
                                 epoch=1, store=store, now=lambda: 1000.0)
        assert first.ok
        after = sync_replica_set(topology=topo, cluster="mail", replica_set="maildata", source="mail-b",
                                 epoch=2, store=store, now=lambda: 2000.0)
    a = {t.host: t for t in after.targets}["mail-a"]
    assert a.ok and a.quarantined == ("Users\\x.msg",)
    assert a.quarantine_dir == r"D:\MDaemon.cr-quarantine\19700101T003320Z"
    assert steps(sim_a)[-1] == "quarantine" and steps(sim_b) == ["create", "robocopy", "robocopy", "delete"]
    assert "'1970-01-01T00:16:40Z'" in sim_a.commands[-1].script  # since the last good run from mail-a
    assert any(e["kind"] == "sync.quarantine" for e in after.events())


def test_a_shadow_that_cannot_be_deleted_makes_the_run_not_ok(sim_a, store):
    sim_a.register(CREATE, created())
    sim_a.register(ROBOCOPY, Reply(stdout=ROBOCOPY_OK, rc=1))
    sim_a.register(DELETE, Reply(stdout=json.dumps({"step": "delete-shadow", "ok": False, "shadow_id": SHADOW,
                                                    "problems": ["deleting shadow: access denied"]}), rc=1))
    report = sync_replica_set(topology=topology({"mail-a": sim_a}), cluster="mail", replica_set="maildata",
                              source="mail-a", epoch=1, store=store)
    assert all(t.ok for t in report.targets) and not report.ok
    (problem,) = report.problems
    assert problem.startswith(f"VSS shadow {SHADOW} or link C:\\ProgramData\\cr-orchestrator\\vss\\mail-maildata-")
    assert problem.endswith("on mail-a may remain: cleanup failed: deleting shadow: access denied")
    assert [e["kind"] for e in report.events()][-1] == "sync.problem"
