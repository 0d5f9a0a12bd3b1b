"""Direction follows the primary; who must be reconciled before a resync (pure)."""

import pytest

from cr_orchestrator.errors import SyncError
from cr_orchestrator.model import (ClientSwitch, Cluster, Host, Member, Platform, Policy,
                                   ReplicaSet, ReplicaTarget, Role, SshSettings, Topology)
from cr_orchestrator.state.freshness import Freshness, normalize_target_path, retry_delay_s
from cr_orchestrator.act.sync.plan import SyncReport, TargetResult, plan_sync, reconcile_since, set_members


def topology(platform=Platform.LINUX):
    ssh = SshSettings(user="root", port=22, private_key_file="/k")
    hosts = {n: Host(name=n, site=s, platform=platform, management_address=f"198.18.0.{i}",
                     cluster_address=f"198.18.1.{i}", service_address=f"198.18.0.{i}", ssh=ssh)
             for i, (n, s) in enumerate([("mail-a", "a"), ("mail-b", "a"), ("mail-dr", "b")], 11)}
    rs = ReplicaSet(name="maildir", path="/srv/mail/Maildir",
                    targets=(ReplicaTarget("mail-b", "/srv/mail/Maildir"),
                             ReplicaTarget("mail-dr", "/srv/dr/mail/Maildir")), every_s=30)
    cluster = Cluster(name="mail", group="cr_mail",
                      members=(Member("mail-a", Role.PRIMARY), Member("mail-b", Role.SECONDARY),
                               Member("mail-dr", Role.REPLICA)),
                      services=(), switch=ClientSwitch(), replica_sets=(rs,), policy=Policy())
    return Topology(source="inv", hosts=hosts, clusters={"mail": cluster})


def test_from_configured_primary_every_other_member_is_a_target_at_its_path():
    plan = plan_sync(topology=topology(), cluster="mail", replica_set="maildir", source="mail-a")
    assert plan.source_path == "/srv/mail/Maildir"
    assert [(t.host, t.path, t.address) for t in plan.targets] == [
        ("mail-b", "/srv/mail/Maildir", "198.18.1.12"),
        ("mail-dr", "/srv/dr/mail/Maildir", "198.18.1.13")]


def test_after_failover_the_old_primary_becomes_a_target_without_inventory_change():
    plan = plan_sync(topology=topology(), cluster="mail", replica_set="maildir", source="mail-b")
    assert [(t.host, t.path) for t in plan.targets] == [
        ("mail-a", "/srv/mail/Maildir"), ("mail-dr", "/srv/dr/mail/Maildir")]
    assert set_members(topology=topology(), cluster="mail", replica_set="maildir") == (
        "mail-a", "mail-b", "mail-dr")


def test_source_outside_the_set_and_unknown_set_are_refused():
    with pytest.raises(SyncError, match="not a member of the set"):
        plan_sync(topology=topology(), cluster="mail", replica_set="maildir", source="mail-x")
    with pytest.raises(SyncError, match="no replica set 'www'"):
        plan_sync(topology=topology(), cluster="mail", replica_set="www", source="mail-a")


def rec(host, started, source=None):
    return Freshness(host=host, last_success_started_at=started, last_success_source=source)


@pytest.mark.parametrize("host,target,source_run,b_record,expected", [
    # old primary returning: mail-b last got a good sync from it at 140 → save what changed after
    ("mail-a", None, 150.0, rec("mail-b", 140.0, "mail-a"), 140.0),
    ("mail-a", rec("mail-a", 100.0), 150.0, rec("mail-b", 140.0, "mail-a"), 140.0),
    # mail-b never got anything from mail-a: keep every file that would change
    ("mail-a", None, 150.0, None, 0.0),
    ("mail-a", None, 150.0, rec("mail-b", 140.0, "mail-dr"), 0.0),
    # it already received a good sync after it was the source: nothing to save
    ("mail-a", rec("mail-a", 200.0), 150.0, rec("mail-b", 140.0, "mail-a"), None),
    # never a source
    ("mail-dr", rec("mail-dr", 10.0), None, None, None),
    ("mail-dr", None, None, None, None),
    # configured primary that nothing was ever recorded for: keep everything that changes
    ("mail-a", None, None, None, 0.0),
])
def test_reconcile_threshold(host, target, source_run, b_record, expected):
    since, reason = reconcile_since(host=host, target_record=target, source_run=source_run,
                                    new_primary="mail-b", new_primary_record=b_record,
                                    configured_primary="mail-a")
    assert since == expected and host in reason


def test_backoff_doubles_within_bounds():
    assert [retry_delay_s(consecutive_failures=n, every_s=30) for n in (1, 2, 3, 6, 20)] == [
        30, 60, 120, 900, 900]
    assert retry_delay_s(consecutive_failures=1, every_s=1) == 5


def test_lag_grows_with_time_and_is_none_before_a_first_success():
    f = Freshness(host="mail-b", last_success_started_at=100.0)
    assert f.lag_at(130.0) == 30.0 and f.lag_at(90.0) == 0.0
    assert Freshness(host="mail-b").lag_at(130.0) is None


@pytest.mark.parametrize("a,b", [("D:\\Data\\", "d:/data"), ("/srv//dr/x/", "/srv/dr/x"),
                                 ("/srv/dr/./x", "/srv/dr/x")])
def test_target_path_normalisation(a, b):
    assert normalize_target_path(a) == normalize_target_path(b)


def test_report_events_name_the_quarantine():
    report = SyncReport(cluster="mail", replica_set="maildir", source="mail-b", epoch=2,
                        started_at=0, ended_at=1, targets=(
                            TargetResult(host="mail-a", ok=True, bytes=10, files=1, duration_s=1,
                                         error=None, quarantined=("new/1",),
                                         quarantine_dir="/srv/mail/Maildir.cr-quarantine/T"),))
    kinds = [e["kind"] for e in report.events()]
    assert kinds == ["sync", "sync.quarantine"] and report.ok
    assert "/srv/mail/Maildir.cr-quarantine/T" in report.events()[1]["reason"]
