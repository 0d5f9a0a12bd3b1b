"""Which step of a change a playbook event completes: the journal's middle steps."""

from cr_orchestrator.act.journal import step_of
from cr_orchestrator.state.journal import Step, parse_step


def ok(task, host, role=None):
    return {"event": "runner_on_ok", "event_data": {"task": task, "host": host, "role": role}}


def test_steps_are_read_off_the_new_primarys_tasks():
    assert step_of(ok("Record the order's epoch (never lower) and this host's role on it, "
                      "primary at 3", "mail-a", "cr_fence"), new_primary="mail-b") \
        is Step.OLD_PRIMARY_FENCED
    assert step_of(ok("Start each service that does not run", "mail-b", "cr_service"),
                   new_primary="mail-b") is Step.PROMOTED
    assert step_of(ok("Add the shared IP, 10.0.0.100/24", "mail-b", "cr_shared_ip"),
                   new_primary="mail-b") is Step.CLIENTS_SWITCHED
    assert step_of(ok("Take the primary role (epoch fence, services, shared IP) at epoch 3",
                      "mail-b"), new_primary="mail-b") is Step.CLIENTS_SWITCHED
    assert step_of(ok("Check that clients get an answer", "mail-b"), new_primary="mail-b") \
        is Step.VERIFIED


def test_the_old_primary_releasing_or_failed_tasks_complete_nothing():
    assert step_of(ok("Remove the shared IP, 10.0.0.100", "mail-a", "cr_shared_ip"),
                   new_primary="mail-b") is None
    assert step_of({"event": "runner_on_failed", "event_data": {
        "task": "Check that clients get an answer", "host": "mail-b"}}, new_primary="mail-b") is None
    assert step_of({"event": "playbook_on_start"}, new_primary="mail-b") is None


def test_a_journal_from_before_steps_existed_reads_as_no_step():
    assert parse_step(None) is None and parse_step("bogus") is None
    assert parse_step("clients_switched") is Step.CLIENTS_SWITCHED
