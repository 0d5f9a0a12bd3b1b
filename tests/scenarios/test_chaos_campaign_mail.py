"""A CI-sized chaos campaign: five randomized fault schedules under real client load, each
judged by the checker (cr_orchestrator/testworld/chaos).

Campaign seed 6, profile ``ci`` (bench/chaos.py prints the schedules with ``--dry-run``):

    831877: service primary at +3.0 s; freeze secondary at +3.9 s for 8.2 s
    601693: asymmetric primary at +0.6 s for 6.4 s
    861881: beat_killed orchestrator at +1.4 s; crash secondary at +4.7 s for 4.9 s
    84483: crash primary at +6.0 s never healed (disk lost)
    508595: crash replica at +2.1 s for 6.9 s; crash primary at +3.0 s for 3.7 s

`crctl run` on a real Sentinel quorum (loopback), the lease agents on every member, an
SMTP client sending a numbered message every 100 ms through the shared IP, POP3 and IMAP
readers and the client-side watch. After each schedule has healed and converged:

- never two hosts serving, never two holders of the shared IP;
- every acknowledged message on the primary or in a quarantine (the disk-lost schedule's
  RPO excepted: only what the lost host alone had, acknowledged before its crash);
- no message twice; one primary serving with every replica in sync within 60 s of the
  last heal.

The full campaign (50 schedules) runs outside the suite: docs/reliability.md.

Run: CR_LAB_NAME=cha CR_LAB_BASE=198.18.128.0/20 pytest -m lab tests/scenarios/test_chaos_campaign_mail.py
"""

from __future__ import annotations

import uuid

import pytest

from cr_orchestrator.testworld.chaos import report
from cr_orchestrator.testworld.chaos.campaign import run_campaign
from cr_orchestrator.testworld.chaos.schedule import campaign_seeds, draw, profile_named

pytestmark = pytest.mark.lab

CAMPAIGN_SEED = 6


def test_five_random_fault_schedules_keep_every_acknowledged_mail_and_one_primary(lab, tmp_path):
    profile = profile_named("ci")
    seeds = campaign_seeds(CAMPAIGN_SEED, 5)
    assert any(draw(s, profile).disk_lost for s in seeds)  # the RPO is measured too
    outcome = run_campaign(
        lab=lab, seeds=seeds, profile=profile, directory=tmp_path,
        quorum_port=19450 + (uuid.uuid4().int % 8) * 5,
        command=f"pytest {__file__}",
        replay=f"bench/chaos.py --lab {lab.name} --profile ci --out OUT --replay {{seed}}")
    text = (tmp_path / "report.md").read_text()
    print(text)
    assert not outcome.errors, outcome.errors
    assert len(outcome.verdicts) == 5, text
    assert not outcome.violations, "\n".join(f"seed {seed}: {inv}: {why}"
                                             for seed, inv, why in outcome.violations)
    for verdict in outcome.verdicts:
        assert verdict.acknowledged >= 30, (verdict.seed, verdict.acknowledged)  # load ran
        assert verdict.convergence_s is not None and verdict.convergence_s <= 60
    lost = [v for v in outcome.verdicts if v.disk_lost]
    assert lost and all(v.rpo_messages is not None and v.rpo_s is not None for v in lost)
    print("RPO (disk lost): " + report.distribution([v.rpo_s for v in lost]))
    assert (tmp_path / "timeline.png").stat().st_size > 10_000
