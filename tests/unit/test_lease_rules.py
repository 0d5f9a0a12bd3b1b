"""The lease in decide (never promote while an unreachable primary's lease may hold)
and its timing rules at validation."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cr_orchestrator.decide.rules import Action, LeaseGrant, Situation, decide
from cr_orchestrator.inventory.build import build_topology
from cr_orchestrator.model import Policy
from test_decide import NOW, POLICY, primary_down, service_down
from test_inventory_build import errors_of, linux, web

WAIT = POLICY.promotion_wait  # defaults: 1 s renewals, ttl 3.25 s, margin 0.3 s


def granted(ago: float, host: str = "mail-a", held_paused: bool = False) -> LeaseGrant:
    return LeaseGrant(host=host, epoch=3, at=NOW - ago, held_paused=held_paused)


def test_defaults_keep_the_wait_within_detection():
    # three failed rounds (plus the third's timeout) call a host down 3.8 s after its
    # last good round began; its renewal came a little later (~0.2 s): the default wait
    # from it ends before detection does, so the confirmed-down path waits no longer
    detection = POLICY.failures_before_down * POLICY.probe_interval_s + POLICY.probe_timeout_s
    assert 3 * POLICY.lease_renew < POLICY.lease_ttl < WAIT < detection - 0.2
    assert WAIT == 3.55
    fast = Policy(failures_before_down=4)  # the scenario tests' profile
    assert (fast.lease_ttl, fast.promotion_wait) == (3.8, 4.1)
    # one failure calls it down: the ttl still spans more than 3 renewals
    quick = Policy(failures_before_down=1)
    assert (quick.lease_ttl, quick.promotion_wait) == (3.25, 3.55)


@pytest.mark.parametrize("snapshot,action,situation,fragments", [
    (primary_down(lease=granted(1.5)), Action.HOLD, Situation.LEASE_WAIT,
     ["not failing over yet: mail-a down for 3 probes from 2 vantages",
      "mail-a's lease may still hold: last renewal granted 1.5 s ago, lease_ttl 3.25 s + "
      "margin 0.3 s = 3.55 s: waiting 2.0 s more"]),
    (primary_down(lease=granted(WAIT + 0.2)), Action.FAILOVER, Situation.PRIMARY_DOWN,
     ["failing over from mail-a to mail-b", "mail-a's lease has run out: last renewal "
      "granted 3.8 s ago"]),
    # no renewal known (never granted, or a cluster without agents yet): no wait
    (primary_down(), Action.FAILOVER, Situation.PRIMARY_DOWN, ["failing over"]),
    # a renewal to another host (the previous primary) says nothing about mail-a
    (primary_down(lease=granted(0.5, host="mail-b")), Action.FAILOVER, Situation.PRIMARY_DOWN,
     ["failing over"]),
    # the orchestrator reaches mail-a: the failover's playbook stops its service itself
    (service_down(lease=granted(0.5), restart_attempts=1), Action.FAILOVER,
     Situation.PRIMARY_DOWN, ["failing over from mail-a to mail-b"]),
    # it may hold a lease granted while paused, which its agent keeps without end: no
    # time makes it run out (an ordinary renewal that reaches it, or the operator, does)
    (primary_down(lease=granted(WAIT * 100, held_paused=True)), Action.HOLD,
     Situation.LEASE_WAIT, ["not failing over: mail-a down for 3 probes",
                            "mail-a may still hold the lease it was given while the cluster "
                            "was paused", "crctl failover mail"]),
    # ... a paused lease of the previous primary says nothing about mail-a
    (primary_down(lease=granted(0.5, host="mail-b", held_paused=True)), Action.FAILOVER,
     Situation.PRIMARY_DOWN, ["failing over"]),
    # ... and a reachable primary's service is stopped by the failover itself
    (service_down(lease=granted(0.5, held_paused=True), restart_attempts=1), Action.FAILOVER,
     Situation.PRIMARY_DOWN, ["failing over from mail-a to mail-b"]),
    # paused: the hold says what it would do, the wait included
    (primary_down(lease=granted(1.0), paused=True), Action.HOLD, Situation.LEASE_WAIT,
     ["paused", "may still hold"]),
])
def test_promotion_waits_for_the_lease(snapshot, action, situation, fragments):
    decision = decide(snapshot, POLICY)
    assert (decision.action, decision.situation) == (action, situation), decision.reason
    for fragment in fragments:
        assert fragment in decision.reason, decision.reason


def test_the_wait_counts_from_the_renewal_not_from_detection():
    # down for a long time with no renewal since: no wait at all
    late = replace(primary_down(lease=granted(60.0)))
    assert decide(late, POLICY).action is Action.FAILOVER


@pytest.mark.parametrize("policy,variable,words", [
    ({"lease_ttl": "3s"}, "cr_policy.lease_ttl", "must be longer than 3 renewals"),
    ({"lease_renew": "2s", "lease_ttl": "5s"}, "cr_policy.lease_ttl", "3 x 2s"),
    # renewals come with the rounds: a slower probe interval is the renewal period
    ({"probe_interval": "3s", "probe_timeout": "1s", "lease_renew": "1s", "lease_ttl": "5s"},
     "cr_policy.lease_ttl", "3 x 3s"),
    # the promotion wait (lease_ttl + lease_margin) must be longer than lease_ttl
    ({"lease_margin": "0s"}, "cr_policy.lease_margin", "must be positive"),
])
def test_lease_timing_rules_are_checked(policy, variable, words):
    problems = errors_of(linux(web(cr_policy=policy)))
    assert any(variable in p and words in p for p in problems), problems


def test_lease_timing_is_read_from_the_inventory():
    topology = build_topology(linux(web(cr_policy={"lease_renew": "2s", "lease_ttl": "7s",
                                                   "lease_margin": "1s"})), source="inv")
    policy = topology.cluster("web").policy
    assert (policy.lease_renew, policy.lease_ttl, policy.promotion_wait) == (2.0, 7.0, 8.0)
