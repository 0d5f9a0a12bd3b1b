"""History de-duplicates quiet decisions on their situation code: a change of situation
must show up as a change of code, or history would hide it."""

from __future__ import annotations

from test_decide import POLICY, healthy, primary_down

from cr_orchestrator.decide.rules import decide, with_member


def test_an_orchestrator_cut_off_from_its_primary_is_a_situation_of_its_own():
    up = decide(healthy(), POLICY)
    cut_off = decide(with_member(healthy(), "mail-a", observer_cut_off=True), POLICY)
    assert up.action == cut_off.action  # both "none": quiet decisions
    assert up.situation_key != cut_off.situation_key
    assert "cut off from it" in cut_off.reason


def test_the_same_situation_keeps_its_code_whatever_the_numbers():
    a = decide(with_member(healthy(), "mail-b", lag_s=3.0), POLICY)
    b = decide(with_member(healthy(), "mail-b", lag_s=7.0), POLICY)
    assert a.reason != b.reason and a.situation_key == b.situation_key


def test_a_paused_hold_is_told_from_the_same_situation_unpaused():
    held = decide(primary_down(paused=True), POLICY)
    acting = decide(primary_down(), POLICY)
    assert held.situation == acting.situation and held.situation_key != acting.situation_key
