"""Which step of a topology change a playbook event completes (pure): the middle steps
of the journal (cr_orchestrator.state.journal) are read off the playbook as it runs."""

from __future__ import annotations

from cr_orchestrator.state.journal import Step

# (role of the task, start of the task's name) -> the step its success completes
_MARKS: tuple[tuple[str | None, str, Step], ...] = (
    ("cr_fence", "Record the order's epoch", Step.OLD_PRIMARY_FENCED),
    ("cr_fence", "Record this host's role", Step.OLD_PRIMARY_FENCED),
    ("cr_service", "Start each service", Step.PROMOTED),
    ("cr_service", "Bring each", Step.PROMOTED),
    ("cr_shared_ip", "", Step.CLIENTS_SWITCHED),
    ("cr_dns_record", "", Step.CLIENTS_SWITCHED),
    (None, "Take the primary role (epoch fence, services, shared IP)", Step.CLIENTS_SWITCHED),
    (None, "Check that clients get an answer", Step.VERIFIED),
)


def step_of(event: dict, *, new_primary: str) -> Step | None:
    """The step a playbook event completes, or None: only successful tasks count, and
    past the fence only those on ``new_primary`` (the old one stopping its services or
    releasing the shared IP runs the same roles)."""
    if event.get("event") != "runner_on_ok":
        return None
    data = event.get("event_data") or {}
    role, task = data.get("role") or None, data.get("task") or ""
    for mark_role, prefix, step in _MARKS:
        if (mark_role is None or mark_role == role) and task.startswith(prefix):
            if step > Step.OLD_PRIMARY_FENCED and data.get("host") != new_primary:
                return None
            return step
    return None
