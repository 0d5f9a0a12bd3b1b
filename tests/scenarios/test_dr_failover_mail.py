"""Site A is lost: the operator promotes the DR replica at site B.

mail-a (primary) and mail-b (secondary) both crash. The orchestrator never promotes a
replica on its own: it holds, saying why. The operator runs `crctl failover mail --to
mail-dr`; mail-dr is promoted at a new epoch, the DNS record mail.lab.test moves to its
address at site B, the schedule follows the primary to queue site.site-b, and the client
reads, through the DNS name, the mail it sent before the disaster.

Run: CR_LAB_NAME=sc CR_LAB_BASE=198.18.192.0/20 pytest -m lab tests/scenarios
"""

from __future__ import annotations

import time
import uuid

import pytest
from scenario_kit import (  # noqa: F401 - orchestrator is a fixture
    REDIS_URL, count_mail, orchestrator, resolve, send_mail, wait_for,
)

from cr_orchestrator.runtime.celery_app import make_app
from cr_orchestrator.runtime.schedule import existing_entries, probe_entry_of

pytestmark = pytest.mark.lab


def test_operator_promotes_the_dr_replica_when_site_a_is_lost(lab, orchestrator):
    state = orchestrator.state
    orchestrator.settle()
    subject = f"before-disaster-{uuid.uuid4().hex[:8]}"
    sent_at = time.time()
    send_mail(lab, subject)
    wait_for(lambda: orchestrator.synced_since("mail-dr", sent_at), 90,
             "a sync of mail-dr after the mail")

    lab.fail("mail-a", "crash")
    lab.fail("mail-b", "crash")
    held = wait_for(lambda: (d := state.last_decision("mail")) and d["action"] == "hold"
                    and "no eligible target" in d["reason"] and d, 90,
                    "the orchestrator to hold")
    assert "mail-dr is a replica (promoted only by an operator)" in held["reason"]
    assert state.primary("mail") == "mail-a"

    done = orchestrator.crctl("failover", "mail", "--to", "mail-dr")
    assert done.returncode == 0, done.stderr
    assert (state.primary("mail"), state.epoch("mail")) == ("mail-dr", 1)
    dr_address = lab.hosts["mail-dr"].public
    assert resolve(lab) == [dr_address]
    app = make_app(redis_url=REDIS_URL, prefix=orchestrator.prefix)
    entries = existing_entries(app)
    assert entries[probe_entry_of(entries, "mail")].options["queue"] == "site.site-b"
    out = wait_for(lambda: (o := count_mail(lab, subject, address=dr_address))
                   and "IMAP 1" in o and o, 30, "the mail at site B")
    assert "POP3 1" in out, out
