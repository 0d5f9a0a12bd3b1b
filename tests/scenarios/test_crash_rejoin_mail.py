"""The primary crashes; the secondary takes over; the old primary returns as a secondary.

mail-a crashes (every process killed, links down). The orchestrator sees it down from
two vantages, fails over to mail-b at a new epoch, and the client still reads its mail
through the shared IP. mail-a reboots:

- its service in manual start mode (how a cluster-managed service is set up): it comes
  back not serving, is watched for a few rounds, then resynced from mail-b as a
  secondary; at no moment do two hosts serve;
- its service set to start at boot (`mailctl enable`, a misconfigured node): it comes
  back serving on its own address, is demoted, then resynced. The shared IP never has
  two holders; two hosts greet on their own addresses only until the demotion.

A client watches ARP and SMTP greetings throughout (split_brain_watch).

Run: CR_LAB_NAME=sc CR_LAB_BASE=198.18.192.0/20 pytest -m lab tests/scenarios
"""

from __future__ import annotations

import time
import uuid

import pytest
from scenario_kit import (  # noqa: F401 - fixtures
    count_mail, decisions, orchestrator, send_mail, shared_ip_holder, split_brain_watch,
    wait_for,
)

pytestmark = pytest.mark.lab


def _crash_and_fail_over(lab, orchestrator) -> str:
    """Settle, send mail, let it reach mail-b, crash mail-a, wait for mail-b to serve it."""
    state = orchestrator.state
    orchestrator.settle()
    subject = f"before-crash-{uuid.uuid4().hex[:8]}"
    sent_at = time.time()
    send_mail(lab, subject)
    wait_for(lambda: orchestrator.synced_since("mail-b", sent_at), 60,
             "a sync after the mail", every_s=0.3)

    # mail-a crashes: no restart in place is possible, mail-b is promoted.
    lab.fail("mail-a", "crash")
    wait_for(lambda: state.primary("mail") == "mail-b", 90, "mail-b to be promoted",
             every_s=0.3)
    assert ("restart_service", "mail-a") not in decisions(state)
    wait_for(lambda: shared_ip_holder(lab) == ["mail-b"], 60, "the shared IP on mail-b",
             every_s=0.3)
    wait_for(lambda: "IMAP 1" in count_mail(lab, subject), 30,
             "the mail through the shared IP", every_s=0.3)
    return subject


def _assert_rejoined_as_secondary(lab, orchestrator, *, since: float) -> None:
    state = orchestrator.state
    wait_for(lambda: orchestrator.synced_since("mail-a", since), 90,
             "mail-a to be resynced", every_s=0.3)
    record = orchestrator.freshness.get(cluster="mail", set_name="maildata", host="mail-a")
    assert (record.last_success_source, record.last_success_epoch) == ("mail-b", 1)
    assert lab.run_on("mail-a", [lab.mailctl, "status"]).returncode != 0  # a stopped secondary
    assert (state.primary("mail"), state.epoch("mail")) == ("mail-b", 1)
    assert shared_ip_holder(lab) == ["mail-b"]
    wait_for(lambda: (state.last_decision("mail") or {}).get("action") == "none", 60,
             "the cluster to settle again", every_s=0.3)


def test_crashed_primary_fails_over_and_returns_stopped_then_resynced(lab, orchestrator):
    state = orchestrator.state
    subject = _crash_and_fail_over(lab, orchestrator)

    # mail-a reboots; manual start: it does not serve, nothing to demote.
    healed_at = time.time()
    lab.heal("mail-a")
    assert lab.run_on("mail-a", [lab.mailctl, "status"]).returncode != 0
    _assert_rejoined_as_secondary(lab, orchestrator, since=healed_at)
    # (resynced by a resync decision or the scheduled sync, whichever came first)
    assert ("demote_rejoined", "mail-a") not in decisions(state)
    # no mail lost: still readable through the shared IP after the rejoin
    out = count_mail(lab, subject)
    assert "IMAP 1" in out and "POP3 1" in out, out


def test_crashed_primary_that_autostarts_is_demoted_then_resynced(lab, orchestrator,
                                                                   split_brain_watch):
    state = orchestrator.state
    # mail-a's service is (wrongly) set to start at boot.
    lab.run_on("mail-a", [lab.mailctl, "enable"], check=True)
    _crash_and_fail_over(lab, orchestrator)

    # Until the demotion, two hosts greet on their own addresses: the rounds that see
    # mail-a up again (successes_before_up) plus the demote playbook, a few seconds
    # (bounded generously for a loaded machine). The shared IP stays on mail-b only.
    split_brain_watch.allow_two_serving(for_at_most_s=30)
    healed_at = time.time()
    lab.heal("mail-a")
    demoted = wait_for(lambda: [e for e in state.events("mail", count=1000)
                                if e.kind == "playbook" and e.data["playbook"] == "demote"],
                       60, "mail-a to be demoted", every_s=0.3)[0]
    assert demoted.data["ok"] and demoted.data["limit"] == "mail-a", demoted.data
    _assert_rejoined_as_secondary(lab, orchestrator, since=healed_at)
    # nothing was copied into mail-a while it served (only after its demotion)
    first_copy = next(e for e in state.events("mail", count=1000) if e.kind == "sync"
                      and e.data["target"] == "mail-a" and e.at > healed_at)
    assert first_copy.at > demoted.at, (first_copy.data, demoted.data)
    reason = next(e.data["reason"] for e in state.events("mail", count=1000)
                  if e.kind == "decision" and e.data["action"] == "demote_rejoined")
    assert reason.startswith("demoting mail-a: it is serving but mail-b is the live primary"), \
        reason
