"""The verdict and sentence of a playbook run, from runner events (pure)."""

from pathlib import Path

import pytest

from cr_orchestrator.act.playbook_events import REFUSAL_PREFIX, RunRecord, summarize


def ev(kind, **data):
    return {"event": kind, "event_data": data, "pid": 4242}


def stats(changed=None, failures=None, dark=None, processed=("mail-a", "mail-b")):
    return ev("playbook_on_stats", changed=changed or {}, failures=failures or {},
              dark=dark or {}, processed={h: 1 for h in processed})


def verdict(events, *, stop_reason=None, runner_status="successful", rc=0):
    record = RunRecord()
    for event in events:
        record.add(event)
    return summarize(record=record, playbook="failover", runner_status=runner_status, rc=rc,
                     stop_reason=stop_reason, timeout_s=30, duration_s=2.345,
                     artifact_dir=Path("/tmp/x"), ident="x")


def test_success_counts_changes_per_host_and_says_so():
    result = verdict([ev("runner_on_ok", host="mail-b", task="t", res={"changed": True}),
                      stats(changed={"mail-a": 2, "mail-b": 3, "localhost": 0})])
    assert result.ok and result.status == "successful" and not result.refused
    assert result.changed == {"mail-a": 2, "mail-b": 3}
    assert result.summary == ("failover succeeded in 2.3 s "
                              "(2 changes on mail-a, 3 changes on mail-b).")


def test_second_run_without_changes_says_nothing_changed():
    result = verdict([stats()])
    assert result.ok and result.changed == {}
    assert "nothing changed" in result.summary


def test_refusal_by_the_epoch_fence_is_its_own_status():
    msg = f"{REFUSAL_PREFIX} the order for cluster mail carries epoch 3, older than ..."
    events = [ev("runner_on_failed", host=h, task="Refuse the order", res={"msg": msg})
              for h in ("mail-a", "mail-b")]
    result = verdict(events + [stats(failures={"mail-a": 1, "mail-b": 1})],
                     runner_status="failed", rc=2)
    assert not result.ok and result.refused and result.status == "refused"
    assert result.failed_hosts == ("mail-a", "mail-b")
    assert "refused the order: Refused: the order for cluster mail carries epoch 3" in result.summary


def test_failure_names_host_task_and_message():
    result = verdict([ev("runner_on_failed", host="mail-a", task="Stop each running service",
                         res={"msg": "non-zero return code", "stderr": "boom"}),
                      stats(failures={"mail-a": 1})], runner_status="failed", rc=2)
    assert result.status == "failed" and result.failed_hosts == ("mail-a",)
    assert "mail-a: Stop each running service: boom" in result.summary  # raw: stderr says why


def test_ignored_failures_do_not_fail_the_run():
    result = verdict([ev("runner_on_failed", host="mail-a", task="t", ignore_errors=True,
                         res={"msg": "meh"}), stats()])
    assert result.ok


def test_unreachable_host_fails_a_run_that_needed_it():
    result = verdict([ev("runner_on_unreachable", host="mail-a", task="Read",
                         res={"msg": "ssh: connect to host 198.18.33.11 port 22: timed out"}),
                      stats(dark={"mail-a": 1})], runner_status="failed", rc=4)
    assert result.status == "failed" and result.unreachable_hosts == ("mail-a",)
    assert "mail-a unreachable: ssh: connect to host" in result.summary


def test_tolerated_unreachable_old_primary_is_fenced_not_failed():
    # failover: the old primary's read is ignore_unreachable; stats count it "ignored".
    result = verdict([ev("runner_on_unreachable", host="mail-a", task="Read", res={"msg": "timed out"}),
                      stats(changed={"mail-b": 3})])
    assert result.ok and result.unreachable_hosts == ("mail-a",)
    assert "mail-a did not answer and is fenced by the epoch" in result.summary


def test_timeout_and_cancel_name_the_task_in_flight():
    events = [ev("playbook_on_task_start", task="Stop each running service"),
              ev("runner_on_start", host="mail-a")]
    timed_out = verdict(events, stop_reason="timeout", runner_status="failed", rc=-15)
    assert timed_out.status == "timeout" and not timed_out.ok
    assert "timed out after 30 s during task 'Stop each running service' on mail-a" in timed_out.summary
    cancelled = verdict(events, stop_reason="canceled", runner_status="failed", rc=-15)
    assert cancelled.status == "canceled"
    assert "was cancelled during task 'Stop each running service'" in cancelled.summary


def test_a_run_that_matched_no_host_is_not_a_success():
    result = verdict([ev("playbook_on_no_hosts_matched"), stats(processed=())])
    assert not result.ok and "matched no host" in result.summary


@pytest.mark.parametrize("runner_status", ["failed", "error"])
def test_runner_failure_without_events_is_reported(runner_status):
    result = verdict([], runner_status=runner_status, rc=1)
    assert not result.ok and f"ended with status {runner_status}" in result.summary


def test_a_failed_loop_reports_the_item_that_failed():
    result = verdict([ev("runner_item_on_failed", host="mail-a", task="Check",
                         res={"msg": "Timeout when waiting for 198.18.32.100:25", "_ansible_item_label": "mail"}),
                      ev("runner_on_failed", host="mail-a", task="Check",
                         res={"msg": "One or more items failed", "results": []}),
                      stats(failures={"mail-a": 1})], runner_status="failed", rc=2)
    assert "mail-a: Check: mail: Timeout when waiting for 198.18.32.100:25" in result.summary


def test_an_unreachable_loop_reports_the_items_message():
    result = verdict([ev("runner_on_unreachable", host="web-1", task="Bring each Windows service",
                         res={"msg": "All items completed", "results": [
                             {"unreachable": True, "msg": "basic: the specified credentials were rejected"}]}),
                      stats(dark={"web-1": 1})], runner_status="failed", rc=4)
    assert "web-1 unreachable: basic: the specified credentials were rejected" in result.summary


def test_an_old_primary_known_down_is_reported_as_not_contacted_and_fenced():
    from cr_orchestrator.act.playbook_events import NOT_CONTACTED_TASK

    note = {"msg": {"not_contacted": "mail-a", "epoch": 12}}
    result = verdict([ev("runner_on_ok", host="mail-b", task=NOT_CONTACTED_TASK, res=note),
                      stats(changed={"mail-b": 1}, processed=("mail-b",))])
    assert result.ok and result.not_contacted == ("mail-a",)
    assert result.unreachable_hosts == ()
    assert result.summary == ("failover succeeded in 2.3 s (1 change on mail-b; "
                              "mail-a was down and not contacted; fenced by epoch 12).")
