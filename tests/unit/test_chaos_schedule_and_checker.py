"""The chaos campaign's pure parts: schedules from seeds, and the checker's verdicts."""

from __future__ import annotations

import pytest

from cr_orchestrator.testworld.chaos import checker, inject, schedule
from cr_orchestrator.testworld.chaos.checker import Evidence, judge_schedule
from cr_orchestrator.testworld.lab.mailcheck import Found
from cr_orchestrator.testworld.lab.mailload import Attempt

FULL = schedule.profile_named("full")


def test_a_seed_replays_the_same_schedule_and_seeds_differ():
    seeds = schedule.campaign_seeds(13, 50)
    assert seeds == schedule.campaign_seeds(13, 50)
    assert len(set(seeds)) == 50
    drawn = [schedule.draw(s, FULL) for s in seeds]
    assert drawn == [schedule.draw(s, FULL) for s in seeds]
    assert len({d.sentence() for d in drawn}) > 40
    # the campaign covers the table: most kinds, disk-lost schedules among them
    kinds = {f.kind for d in drawn for f in d.faults}
    assert {"crash", "freeze", "asymmetric", "worker_killed", "redis_master_killed"} <= kinds
    assert 3 <= sum(d.disk_lost for d in drawn) <= 20


def test_every_kind_of_the_table_has_its_injection():
    assert set(inject.ACTIONS) == set(schedule.BY_NAME)


def test_schedules_keep_site_faults_alone_and_one_fault_per_role_at_a_time():
    for seed in range(300):
        s = schedule.draw(seed, FULL)
        if any(f.target in schedule.SITES for f in s.faults):
            assert len(s.faults) == 1
        for a in s.faults:
            for b in s.faults:
                if a is not b and a.target == b.target:
                    assert not schedule._overlap(a, b), s


@pytest.mark.parametrize("text, error", [
    ("-1", "seed '-1': give a non-negative integer"),
    ("x1", "seed 'x1': give a non-negative integer"),
])
def test_bad_seeds_are_named(text, error):
    with pytest.raises(ValueError, match=error):
        schedule.parse_seed(text)


def test_an_unknown_profile_is_named():
    with pytest.raises(ValueError, match="profile 'huge': choose one of ci, full"):
        schedule.profile_named("huge")


def _attempts(n: int, *, start: float = 100.0, failing: range = range(0)) -> list[Attempt]:
    return [Attempt(i, start + i * 0.1, start + i * 0.1 + 0.02,
                    None if i in failing else 250, "timeout" if i in failing else None)
            for i in range(1, n + 1)]


def _found(seqs, host="mail-b") -> list[Found]:
    return [Found(s, host, 100.0 + s * 0.1, f"/m/{s}") for s in seqs]


def _sample(t: float, arp: int = 1, serving: tuple = ("mail-b",)) -> dict:
    return {"t": t, "shared_ip_serves": True, "arp_holders": [f"m{i}" for i in range(arp)],
            "serving_hosts": list(serving)}


def _evidence(**over) -> Evidence:
    base = dict(seed=7, profile="ci", disk_lost=False, schedule="crash primary",
                started_at=100.0,
                faults=[{"kind": "crash", "victim": "mail-a", "applied_at": 101.0,
                         "healed_at": 106.0, "refused": None, "start_s": 1.0,
                         "duration_s": 5.0, "target": "primary", "detail": ""}],
                attempts=_attempts(100, failing=range(20, 40)),
                samples=[_sample(100.0 + i * 0.2) for i in range(50)], reads=[],
                on_primary=_found([i for i in range(1, 101) if i not in range(20, 40)]),
                quarantined=[], primary="mail-b", last_heal_at=106.0, converged_at=120.0)
    base.update(over)
    return Evidence(**base)


def test_a_clean_schedule_has_no_violation_and_measures_its_outage():
    v = judge_schedule(_evidence())
    assert v.ok, v.violations
    assert v.acknowledged == 80
    assert v.convergence_s == 14.0
    assert v.longest_outage_s == pytest.approx(2.1, abs=0.01)  # ack 19 .. ack 40


def test_a_missing_acknowledged_message_is_reported_against_the_faults():
    v = judge_schedule(_evidence(on_primary=_found([i for i in range(1, 101)
                                                    if i not in range(20, 40) and i != 15])))
    assert [i for i, _ in v.violations] == ["acknowledged_lost"]
    assert v.missing[0]["seq"] == 15
    assert "seq 15 acknowledged at +1.52 s" in v.violations[0][1]
    assert "crash mail-a +1.0..+6.0 s" in v.violations[0][1]


def test_a_message_in_a_quarantine_is_kept_and_a_duplicate_is_not_fine():
    kept = [i for i in range(1, 101) if i not in range(20, 40) and i != 15]
    v = judge_schedule(_evidence(on_primary=_found(kept + [3]),
                                 quarantined=_found([15], host="mail-a")))
    assert [i for i, _ in v.violations] == ["duplicated"]


def test_two_holders_or_two_serving_hosts_are_split_brain_intervals():
    samples = [_sample(100.0 + i * 0.2) for i in range(50)]
    samples[10] = _sample(102.0, arp=2)
    samples[11] = _sample(102.2, serving=("mail-a", "mail-b"))
    v = judge_schedule(_evidence(samples=samples))
    assert [i for i, _ in v.violations] == ["split_brain"]
    assert v.split_brain == [(2.0, 2.4000000000000057, "shared IP held by 2 MACs")]


@pytest.mark.parametrize("converged_at, violated", [(166.0, False), (166.5, True), (None, True)])
def test_convergence_is_bounded_after_the_last_heal(converged_at, violated):
    v = judge_schedule(_evidence(converged_at=converged_at))
    assert ("convergence" in {i for i, _ in v.violations}) is violated


def test_a_lost_disk_counts_its_rpo_not_a_violation_but_later_losses_still_count():
    # mail-a crashed for good at 103.0: seqs 25..29 (acknowledged before) existed only there
    attempts = _attempts(100)
    kept = [i for i in range(1, 101) if i not in range(25, 30) and i != 80]
    crash = {"kind": "crash", "victim": "mail-a", "applied_at": 102.95, "struck_at": 103.0,
             "healed_at": None, "refused": None, "start_s": 2.95, "duration_s": None,
             "target": "primary", "detail": ""}
    v = judge_schedule(_evidence(disk_lost=True, lost_host="mail-a", faults=[crash],
                                 attempts=attempts, on_primary=_found(kept)))
    assert v.rpo_messages == 5
    assert v.rpo_s == pytest.approx(103.0 - (100.0 + 25 * 0.1 + 0.02))
    assert [m["seq"] for m in v.missing] == [80]  # acknowledged after the crash: lost
    assert [i for i, _ in v.violations] == ["acknowledged_lost"]


def test_a_message_acknowledged_while_the_crash_was_killing_the_host_is_rpo():
    # campaign seed 136538: mail-a acknowledged seq 187 40 ms after its crash began; the
    # crash had not yet killed its SMTP server, so that message existed on mail-a alone
    attempts = _attempts(100)
    kept = [i for i in range(1, 101) if i not in range(25, 31)]
    crash_began, crash_done = 102.95, 103.05  # seq 30 acknowledged at 103.02, in between
    v = judge_schedule(_evidence(disk_lost=True, lost_host="mail-a",
                                 attempts=attempts, on_primary=_found(kept),
                                 faults=[{"kind": "crash", "victim": "mail-a",
                                          "applied_at": crash_began, "struck_at": crash_done,
                                          "healed_at": None, "refused": None, "start_s": 2.95,
                                          "duration_s": None, "target": "primary",
                                          "detail": ""}]))
    assert v.ok, v.violations
    assert v.rpo_messages == 6
