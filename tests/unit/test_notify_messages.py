"""Which history events make a notification, and what it says (pure)."""

from __future__ import annotations

from cr_orchestrator.notify.messages import behind_notification, notification_for
from cr_orchestrator.notify.targets import NotifyKind


def note(event_kind: str, **data):
    return notification_for(cluster="mail", event_id="1-0", at=0.0, kind=event_kind, data=data)


def test_promotions_are_failovers_or_planned_changes():
    failover = note("promotion", kind="failover", new_primary="mail-b", old_primary="mail-a",
                    epoch=3, reason="failing over from mail-a to mail-b: mail-a down")
    assert failover.kind is NotifyKind.FAILOVER
    assert failover.title == "[mail] failover: mail-b is primary at epoch 3 (was mail-a)"
    assert failover.text == "failing over from mail-a to mail-b: mail-a down"
    assert note("promotion", kind="operator failover", new_primary="b").kind is NotifyKind.FAILOVER
    for planned in ("switchover", "failback"):
        assert note("promotion", kind=planned, new_primary="a").kind is NotifyKind.SWITCHOVER


def test_a_failed_playbook_is_told_but_not_one_the_epoch_fence_refused():
    failed = note("playbook", playbook="failover", limit="mail-b", ok=False, status="failed",
                  rc=2, summary="failover failed on mail-b: Take the primary role", why="x")
    assert failed.kind is NotifyKind.PLAYBOOK_FAILED
    assert failed.title == "[mail] playbook failover on mail-b failed (failed, rc 2)"
    assert note("playbook", playbook="demote", ok=False, refused=True) is None
    assert note("playbook", playbook="failover", ok=True) is None


def test_only_holds_that_wait_for_a_person_are_action_needed():
    budget = note("decision", action="hold", situation="failover_budget_spent", reason="r")
    assert budget.kind is NotifyKind.ACTION_NEEDED
    assert note("decision", action="hold", situation="down_unconfirmed", reason="r") is None
    assert note("decision", action="none", situation="primary_up", reason="r") is None
    assert note("decision", action="failover", situation="primary_down", reason="r") is None
    assert note("sync", ok=False) is None


def test_a_replica_behind_says_how_far_and_the_limit():
    behind = behind_notification(cluster="mail", replica_set="maildata", target="mail-dr",
                                 lag_s=412.4, max_lag_s=300, now=1000.0)
    assert behind.kind is NotifyKind.REPLICA_BEHIND
    assert behind.text.startswith("mail-dr may miss 412 s of writes to maildata, more than "
                                  "max_replica_lag (300 s)")
