"""The primary crashes under load; its unreplicated mail is merged back on its return.

Under SMTP load through the shared IP (a numbered message every 50 ms), mail-a
acknowledges mail that no sync has copied yet, then crashes; mail-b is promoted and
takes the load. mail-a comes back (not serving) and rejoins as mail-b's replica with
``reconcile: maildir`` (the lab's replica set): its mail that never reached mail-b is
quarantined, merged into mail-b's Maildir, and mail-a is resynced.

Checked: every acknowledged message is in mail-b's Maildir (new/ or cur/), none twice,
none only in quarantine; IMAP and POP3 through the shared IP count them all; history
has the merge with its counts; the client watch never saw two hosts serving.

Run: CR_LAB_NAME=sc CR_LAB_BASE=198.18.192.0/20 pytest -m lab tests/scenarios
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from scenario_kit import (  # noqa: F401 - fixtures
    Load,
    client_script, running_orchestrator, scenario_inventory, shared_ip_holder,
    split_brain_watch, wait_for,
)

from cr_orchestrator.testworld.lab.mailcheck import judge, scan

pytestmark = pytest.mark.lab


def _events(orch, kind: str) -> list:
    return [e for e in orch.state.events("mail", count=5000) if e.kind == kind]


def _count_through_shared_ip(lab, run: str) -> tuple[int, int]:
    """(IMAP messages whose subject names the load run, POP3 messages in the mailbox)."""
    out = client_script(lab, f"""
        import imaplib, poplib
        imap = imaplib.IMAP4({lab.shared_ip!r}, 143, timeout=10)
        imap.login("lab", "lab")
        imap.select("INBOX", readonly=True)
        typ, found = imap.search(None, "SUBJECT", {f'"cr-load {run}"'!r})
        print(len(found[0].split()))
        imap.logout()
        pop = poplib.POP3({lab.shared_ip!r}, 110, timeout=10)
        pop.user("lab"); pop.pass_("lab")
        print(pop.stat()[0])
        pop.quit()
    """)
    imap, pop3 = (int(x) for x in out.split())
    return imap, pop3


def test_crash_failover_rejoin_merges_the_old_primarys_unreplicated_mail(
        lab, split_brain_watch, tmp_path):
    inventory = scenario_inventory(lab, tmp_path)
    with running_orchestrator(lab, inventory) as orch:
        orch.settle()
        load = Load(lab, tmp_path / "load.jsonl")
        try:
            started = time.time()
            wait_for(lambda: orch.synced_since("mail-b", started + 0.5), 60,
                     "mail-b to hold some of the load's mail", every_s=0.3)
            # crash mid-interval: mail-a then holds mail acknowledged after the last sync
            synced = orch.freshness.get(cluster="mail", set_name="maildata", host="mail-b")
            wait_for(lambda: time.time() > (synced.last_success_started_at or 0) + 5, 30,
                     "mail acknowledged after the last sync")
            lab.fail("mail-a", "crash")
            crashed_at = time.time()
            wait_for(lambda: orch.state.primary("mail") == "mail-b", 90, "mail-b promoted",
                     every_s=0.3)
            wait_for(lambda: shared_ip_holder(lab) == ["mail-b"], 60, "the shared IP on mail-b",
                     every_s=0.3)
            wait_for(lambda: load.acked_after(crashed_at), 60, "mail acknowledged by mail-b",
                     every_s=0.2)

            healed_at = time.time()
            lab.heal("mail-a")
            wait_for(lambda: orch.synced_since("mail-a", healed_at), 120,
                     "mail-a resynced from mail-b", every_s=0.3)
            resynced_at = time.time()
            wait_for(lambda: len(load.acked_after(resynced_at)) >= 20, 30, "mail after the rejoin")
        finally:
            attempts = load.stop()

        merges = _events(orch, "sync.merge")
        assert merges, "no sync.merge event"
        merged = sum(e.data["merged"] for e in merges)
        left = sum(e.data["left"] for e in merges)
        print(f"merged {merged} message(s) from mail-a into mail-b; {left} left in quarantine "
              f"({'; '.join(e.data['reason'] for e in merges)})")
        assert all(e.data["host"] == "mail-a" and e.data["into"] == "mail-b" for e in merges)

        # give mail-b's next sync a moment, then read everything back on the primary
        maildir = Path(lab.data_dir("mail-b")) / "mail" / "Maildir"
        on_primary = scan(maildir / "new", load.run) + scan(maildir / "cur", load.run)
        quarantined = [f for host in ("mail-a", "mail-b", "mail-dr") for f in scan(
            Path(lab.data_dir(host)) / "mail.cr-quarantine", load.run)]
        verdict = judge(attempts=attempts, on_primary=on_primary, quarantined=quarantined)
        print(verdict.sentence())
        accepted_by_a_after_sync = sum(1 for f in on_primary if f.accepted_by == "mail-a"
                                       and (f.accepted_at or 0) > (synced.last_success_started_at or 0))
        print(f"acknowledged {verdict.acknowledged}; on mail-b {verdict.on_primary}; "
              f"accepted by mail-a after its last sync began: {accepted_by_a_after_sync}")
        assert verdict.acknowledged > 200, verdict.sentence()
        assert not verdict.missing, verdict.sentence()
        assert not verdict.duplicated, verdict.sentence()
        assert verdict.in_quarantine == 0, verdict.sentence()  # merged, not just kept aside
        assert merged > 0, "mail-a had no unreplicated mail to merge: the story proved nothing"

        imap, pop3 = _count_through_shared_ip(lab, load.run)
        print(f"through the shared IP: IMAP finds {imap} of the run, POP3 {pop3} in the mailbox")
        acked = {a.seq for a in attempts if a.acknowledged}
        assert imap >= len(acked), (imap, len(acked))
        assert pop3 >= imap
