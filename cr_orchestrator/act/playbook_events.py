"""Turn ansible-runner events into a verdict and one plain sentence (pure, no I/O).

:class:`RunRecord` keeps what matters from the event stream (stats, failures,
unreachable hosts, the refusal of the epoch fence, the task in flight); :func:`summarize`
decides the outcome from it. Both are fed by :mod:`cr_orchestrator.act.playbook_runner` and
tested with recorded events.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


class PlaybookStatus(enum.StrEnum):
    """How a playbook run ended (the strings runner and the event log use)."""

    SUCCESSFUL = "successful"
    FAILED = "failed"
    REFUSED = "refused"  # the epoch fence refused a stale order; nothing changed
    TIMEOUT = "timeout"
    CANCELED = "canceled"

@dataclass(frozen=True)
class PlaybookResult:
    """What one playbook run did, in values a caller can act on and a sentence to log."""

    ok: bool
    status: PlaybookStatus
    rc: int
    duration_s: float
    changed: dict[str, int]  # host -> number of changed tasks
    failed_hosts: tuple[str, ...]
    unreachable_hosts: tuple[str, ...]
    artifact_dir: Path
    summary: str  # one sentence: what happened, and why when it failed
    refused: bool = False  # the epoch fence refused a stale order; nothing changed
    # Hosts the run was told were down (failover's cr_old_primary_down) and so never
    # contacted; the epoch recorded on the new primary fences them.
    not_contacted: tuple[str, ...] = ()
    ident: str = field(default="", compare=False)


REFUSAL_PREFIX = "Refused:"  # roles/cr_fence fails every host with this message
LEAVE_TASK = "Say why this host leaves the play"  # roles/cr_fence/tasks/leave.yml
NOT_CONTACTED_TASK = "Say that the old primary was not contacted"  # playbooks/failover.yml


@dataclass
class RunRecord:
    """What the events of one run said so far (mutable: filled while the run goes on)."""

    stats: dict | None = None
    failures: dict[str, str] = field(default_factory=dict)  # host -> first failure message
    unreachable: dict[str, str] = field(default_factory=dict)  # host -> message
    refusal: str | None = None
    current_task: str | None = None
    current_hosts: list[str] = field(default_factory=list)
    no_hosts_matched: int = 0
    item_failures: dict[str, str] = field(default_factory=dict)  # host -> first failed item
    not_contacted: dict[str, int] = field(default_factory=dict)  # host -> fencing epoch

    def add(self, event: dict) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host") or ""
        res = data.get("res") if isinstance(data.get("res"), dict) else {}
        if kind == "playbook_on_task_start":
            self.current_task, self.current_hosts = data.get("task") or "", []
        elif kind == "runner_on_start":
            self.current_hosts.append(host)
        elif kind == "runner_item_on_failed":
            label = res.get("_ansible_item_label", "")
            self.item_failures.setdefault(host, f"{label}: {_message(res)}" if label else _message(res))
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            message = _message(res)
            if res.get("results") is not None or message == "One or more items failed":
                message = self.item_failures.get(host, message)
            if message.startswith(REFUSAL_PREFIX) and self.refusal is None:
                self.refusal = message
            self.failures.setdefault(host, f"{data.get('task', '')}: {message}")
        elif kind == "runner_on_unreachable":
            self.unreachable.setdefault(host, _message(res))
        elif kind == "runner_on_ok" and data.get("task") == LEAVE_TASK:
            self.unreachable.setdefault(host, "did not answer")
        elif kind == "runner_on_ok" and data.get("task") == NOT_CONTACTED_TASK:
            note = res.get("msg") if isinstance(res.get("msg"), dict) else {}
            if note.get("not_contacted"):
                self.not_contacted[str(note["not_contacted"])] = int(note.get("epoch") or 0)
        elif kind == "playbook_on_no_hosts_matched":
            self.no_hosts_matched += 1
        elif kind == "playbook_on_stats":
            self.stats = data


def _message(res: dict) -> str:
    items = [r for r in res.get("results") or [] if isinstance(r, dict)
             and (r.get("failed") or r.get("unreachable"))]
    if items:  # a loop: "All items completed" says nothing, the first bad item does
        res = items[0]
    message = res.get("msg") or res.get("stderr") or res.get("reason") or "no message"
    if message == "non-zero return code" and (res.get("stderr") or res.get("stdout")):
        message = res.get("stderr") or res.get("stdout")  # raw: the command says why
    return " ".join(str(message).split())[:500]


def summarize(*, record: RunRecord, playbook: str, runner_status: str, rc: int,
              stop_reason: str | None, timeout_s: float, duration_s: float,
              artifact_dir: Path, ident: str) -> PlaybookResult:
    """The run's outcome as a :class:`PlaybookResult` with a one-sentence summary."""
    stats = record.stats or {}
    changed = {h: int(n) for h, n in (stats.get("changed") or {}).items() if int(n)}
    dark = set((stats.get("dark") or {}).keys())
    failed = tuple(sorted(set((stats.get("failures") or {}).keys()) | set(record.failures)))
    unreachable = tuple(sorted(dark | set(record.unreachable)))
    processed = stats.get("processed") or {}
    status, sentence = _verdict(record=record, playbook=playbook, runner_status=runner_status,
                                stop_reason=stop_reason, timeout_s=timeout_s, failed=failed,
                                dark=dark, processed=processed)
    tail = _changes(changed)
    if unreachable and status is PlaybookStatus.SUCCESSFUL:
        tail += (f"; {', '.join(unreachable)} did not answer and "
                 f"{'is' if len(unreachable) == 1 else 'are'} fenced by the epoch")
    if status is PlaybookStatus.SUCCESSFUL:
        tail += "".join(f"; {host} was down and not contacted; fenced by epoch {epoch}"
                        for host, epoch in sorted(record.not_contacted.items()))
    summary = f"{sentence} in {duration_s:.1f} s ({tail})."
    return PlaybookResult(ok=status is PlaybookStatus.SUCCESSFUL, status=status, rc=rc,
                       duration_s=round(duration_s, 3), changed=changed, failed_hosts=failed,
                       unreachable_hosts=unreachable, artifact_dir=artifact_dir,
                       summary=summary, refused=status is PlaybookStatus.REFUSED, ident=ident,
                       not_contacted=tuple(sorted(record.not_contacted)))


def _verdict(*, record: RunRecord, playbook: str, runner_status: str,
             stop_reason: str | None, timeout_s: float, failed: tuple, dark: set,
             processed: dict) -> tuple[PlaybookStatus, str]:
    in_flight = (f" during task '{record.current_task}' on {', '.join(record.current_hosts)}"
                 if record.current_task and record.current_hosts else "")
    if stop_reason == "timeout":
        return PlaybookStatus.TIMEOUT, f"{playbook} timed out after {timeout_s:g} s{in_flight} and was stopped"
    if stop_reason == "canceled":
        return PlaybookStatus.CANCELED, f"{playbook} was cancelled{in_flight}"
    if record.refusal:
        return PlaybookStatus.REFUSED, f"{playbook} refused the order: {record.refusal.rstrip('.')}"
    problems = [f"{h}: {m}" for h, m in sorted(record.failures.items())]
    problems += [f"{h} unreachable: {record.unreachable.get(h, '')}".rstrip(": ")
                 for h in sorted(dark) if h not in record.failures]
    if problems or failed or runner_status != PlaybookStatus.SUCCESSFUL:
        detail = "; ".join(problems) or f"ansible-playbook ended with status {runner_status}"
        return PlaybookStatus.FAILED, f"{playbook} failed ({detail})"
    if record.stats is not None and not processed:
        return PlaybookStatus.FAILED, f"{playbook} matched no host (check the host names and --limit)"
    return PlaybookStatus.SUCCESSFUL, f"{playbook} succeeded"


def _changes(changed: dict[str, int]) -> str:
    if not changed:
        return "nothing changed"
    parts = [f"{n} change{'s' if n != 1 else ''} on {h}" for h, n in sorted(changed.items())]
    return ", ".join(parts)
