"""Table-driven tests of the pure failure detector.

Each case is a story in probe rounds. A pattern has one character per round (interval 1 s
unless the case says otherwise): ``+`` everything answers, ``x`` nothing answers (timeout),
``s`` host answers but the service is stopped (status DOWN, check fails), ``r`` like
``x`` but the check's connection was refused (the host is up), ``d`` answers
but degraded (SMTP 421), ``.`` no round at all (observation lost).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from cr_orchestrator.decide.detector import assess, run_view, Sample
from cr_orchestrator.observe.health import ORCHESTRATOR, Health, Liveness, Observation
from cr_orchestrator.model import (Check, CheckKind, ClientSwitch, Cluster, Member, Policy, Role,
                                   Service)

POLICY = Policy(probe_interval_s=1.0, probe_timeout_s=1.0, failures_before_down=3,
                successes_before_up=2, required_vantages=2)
CLUSTER = Cluster(
    name="mail", group="cr_cluster_mail",
    members=(Member("mail-a", Role.PRIMARY, 100), Member("mail-b", Role.SECONDARY, 50)),
    services=(Service("MDaemon", (Check(CheckKind.SMTP, 25),)),),
    switch=ClientSwitch(), replica_sets=(), policy=POLICY)
ADDR = {"mail-a": "198.18.0.11", "mail-b": "198.18.0.12"}
UP, SUSPECT, DOWN, UNKNOWN = Liveness.UP, Liveness.SUSPECT, Liveness.DOWN, Liveness.UNKNOWN


def _round(host: str, vantage: str, code: str, at: float) -> list[Observation]:
    check = f"check:smtp:25@{ADDR[host]}"
    detail = {"service": "MDaemon", "target": "host"}
    if code == "+":
        states = (Health.OK, Health.OK, Health.OK)
    elif code == "d":
        states = (Health.OK, Health.OK, Health.DEGRADED)
    elif code == "s":
        states = (Health.OK, Health.DOWN, Health.UNREACHABLE)
    elif code in "xr":
        states = (Health.UNREACHABLE,) * 3
    else:
        raise ValueError(code)
    if code == "r":  # refused: the host's kernel answered, nothing listens
        detail = {**detail, "refused": True}
    err = {Health.UNREACHABLE: "no answer within 1.0s", Health.DOWN: "service is inactive",
           Health.DEGRADED: "SMTP greeting '421 busy'"}
    obs = [Observation(host, vantage, check, states[2], at, 0.01, err.get(states[2]), detail)]
    if vantage == ORCHESTRATOR:  # the orchestrator also has the SSH host probe
        obs += [Observation(host, vantage, "host", states[0], at, 0.02, err.get(states[0])),
                Observation(host, vantage, "service:MDaemon", states[1], at, 0.02,
                            err.get(states[1]))]
    return obs


def story(*, a: str, peer: str = "", b: str | None = None, interval: float = 1.0):
    """Observations for mail-a (orchestrator), mail-a from peer mail-b, and mail-b."""
    b = "+" * len(a) if b is None else b
    obs: list[Observation] = []
    for pattern, host, vantage in ((a, "mail-a", ORCHESTRATOR), (peer, "mail-a", "mail-b"),
                                   (b, "mail-b", ORCHESTRATOR)):
        for i, code in enumerate(pattern):
            if code != ".":
                obs += _round(host, vantage, code, 1000.0 + i * interval)
    now = 1000.0 + (max(len(a), len(peer), len(b)) - 1) * interval + 0.5
    return obs, now


CASES = [
    # id, a (orchestrator), peer (mail-b looking at mail-a), host, service, confirmed
    ("all answering", "++++", "++++", UP, UP, False),
    ("one lost probe is only suspect", "+++x", "+++x", SUSPECT, SUSPECT, False),
    ("one lost probe then back: up again", "++x+", "++x+", UP, UP, False),
    ("a 2 s freeze (2 rounds at 1 s) is never down", "+++xx++", "+++xx++", UP, UP, False),
    ("a 2 s freeze seen at its worst is suspect, not down", "+++xx", "+++xx", SUSPECT, SUSPECT,
     False),
    ("sustained loss from both vantages: down, confirmed", "++xxx", "++xxx", DOWN, DOWN, True),
    ("sustained loss, peer lagging one round: down, not yet confirmed", "++xxx", "++xx",
     DOWN, DOWN, False),
    ("sustained loss with no peer view: down but unconfirmed", "++xxxx", "", DOWN, DOWN, False),
    ("service stopped, host up", "++sss", "++sss", UP, DOWN, True),
    ("orchestrator cut off, peer still sees it serving", "++xxxx", "++++++", UP, UP, False),
    ("flapping from up never reaches down", "+x+x+x+x", "+x+x+x+x", SUSPECT, SUSPECT, False),
    ("flapping after down does not toggle back up", "+xxx+x+x+", "+xxx+x+x+", DOWN, DOWN, True),
    ("recovery needs successes_before_up good rounds", "+xxx++", "+xxx++", UP, UP, False),
    ("one good round after down is not enough", "+xxx+", "+xxx+", DOWN, DOWN, True),
    ("degraded (421) is up, not down", "+ddd", "+ddd", UP, UP, False),
    ("a single first good probe is not yet up", "+", "+", UNKNOWN, UNKNOWN, False),
    ("cut off, and the peer is refused: host up, service down", "++xxx", "++rrr", UP, DOWN,
     True),
]


@pytest.mark.parametrize("name,a,peer,host,service,confirmed", CASES, ids=[c[0] for c in CASES])
def test_story(name, a, peer, host, service, confirmed):
    obs, now = story(a=a, peer=peer)
    result = assess(cluster=CLUSTER, observations=obs, now=now)
    verdict = result.hosts["mail-a"]
    assert verdict.machine.liveness is host, verdict.machine.reason
    assert verdict.services["MDaemon"].liveness is service, verdict.services["MDaemon"].reason
    assert verdict.services["MDaemon"].confirmed is confirmed or host is not DOWN
    if host is DOWN:
        assert verdict.machine.confirmed is confirmed, verdict.machine.reason
    assert verdict.machine.reason.startswith("mail-a is ")


def test_cut_off_orchestrator_is_named_in_the_reason():
    obs, now = story(a="++xxxx", peer="++++++")
    result = assess(cluster=CLUSTER, observations=obs, now=now)
    machine = result.hosts["mail-a"].machine
    assert machine.observer_cut_off
    assert "orchestrator is cut off" in machine.reason and "mail-b" in machine.reason
    assert not result.observer_isolated
    assert "cannot reach mail-a but a peer can" in result.reason


def test_orchestrator_that_sees_nobody_is_isolated_and_judges_nothing():
    obs, now = story(a="++xxxx", b="++xxxx")
    result = assess(cluster=CLUSTER, observations=obs, now=now)
    assert result.observer_isolated
    assert "observer isolated" in result.reason
    for host in ("mail-a", "mail-b"):
        assert result.hosts[host].machine.liveness is UNKNOWN
        assert result.hosts[host].services["MDaemon"].liveness is UNKNOWN


def test_stale_observations_do_not_count_as_up():
    obs, now = story(a="++++", peer="++++")
    later = now + 10.0  # far more than 3 intervals + a timeout
    verdict = assess(cluster=CLUSTER, observations=obs, now=later).hosts["mail-a"].machine
    assert verdict.liveness is UNKNOWN
    assert "stale" in verdict.reason


def test_gap_in_history_restarts_the_count():
    # Three failures separated by a long silence are not three consecutive failures.
    obs, now = story(a="+x" + "." * 8 + "xx", peer="")
    verdict = assess(cluster=CLUSTER, observations=obs, now=now).hosts["mail-a"].machine
    assert verdict.liveness is SUSPECT, verdict.reason


def test_count_rounds_not_observations_at_slow_interval():
    # At a 2 s interval, a 2 s freeze costs at most two rounds: still only suspect.
    obs, now = story(a="+++xx", peer="+++xx", interval=2.0)
    policy = Policy(probe_interval_s=2.0, probe_timeout_s=1.5, failures_before_down=3)
    verdict = assess(cluster=CLUSTER, observations=obs, now=now, policy=policy)
    assert verdict.hosts["mail-a"].machine.liveness is SUSPECT


def test_peer_vantage_failure_says_nothing_about_the_target():
    obs, now = story(a="++xxx", peer="++")
    obs += [Observation("mail-a", "mail-b", "vantage", Health.UNREACHABLE, 1000.0 + i, None,
                        "peer mail-b could not run its checks") for i in (2, 3, 4)]
    verdict = assess(cluster=CLUSTER, observations=obs, now=now).hosts["mail-a"].machine
    assert verdict.liveness is DOWN and not verdict.confirmed, verdict.reason


VIEW_CASES = [
    # samples (1 = alive), expected liveness, failures
    ("", UNKNOWN, 0),
    ("0", SUSPECT, 1),
    ("00", SUSPECT, 2),
    ("000", DOWN, 3),
    ("11", UP, 0),
    ("110", SUSPECT, 1),
    ("1101", UP, 0),
    ("0001", DOWN, 0),
    ("00011", UP, 0),
]


@pytest.mark.parametrize("pattern,liveness,failures", VIEW_CASES)
def test_state_machine(pattern, liveness, failures):
    samples = [Sample(float(i), c == "1") for i, c in enumerate(pattern)]
    view = run_view(vantage=ORCHESTRATOR, samples=samples, policy=POLICY,
                    now=float(len(pattern)), stale_after_s=10.0)
    assert (view.liveness, view.failures) == (liveness, failures)


def test_future_observations_are_ignored():
    samples = [Sample(1.0, True), Sample(2.0, True), Sample(50.0, False)]
    view = run_view(vantage=ORCHESTRATOR, samples=samples, policy=POLICY, now=2.5,
                    stale_after_s=10.0)
    assert view.liveness is UP


def test_shared_ip_checks_do_not_make_a_dead_host_alive():
    obs, now = story(a="++xxx", peer="++xxx")
    obs += [Observation("mail-a", ORCHESTRATOR, "check:smtp:25@198.18.0.100", Health.OK,
                        1000.0 + i, 0.01, None, {"service": "MDaemon", "target": "shared_ip"})
            for i in range(5)]
    verdict = assess(cluster=CLUSTER, observations=obs, now=now).hosts["mail-a"]
    assert verdict.machine.liveness is DOWN
    assert verdict.services["MDaemon"].liveness is DOWN


def _via_shared_ip(pattern: str, *, start: float = 1000.0) -> list[Observation]:
    health = {"+": Health.OK, "x": Health.UNREACHABLE}
    return [Observation("mail-a", ORCHESTRATOR, "check:smtp:25@198.18.0.100", health[c],
                        start + i, 0.01, None if c == "+" else "no answer within 1.0s",
                        {"service": "MDaemon", "target": "shared_ip"})
            for i, c in enumerate(pattern)]


@pytest.mark.parametrize("pattern,liveness,failures", [
    ("+++++", UP, 0),
    ("+++xx", SUSPECT, 2),
    ("++xxx", DOWN, 3),
    ("xxxx+", DOWN, 0),  # answering again: not yet up, no failures at the end
    ("xxx++", UP, 0),  # two good rounds in a row: up again
])
def test_checks_through_the_shared_ip_get_a_verdict_of_their_own(pattern, liveness, failures):
    obs, now = story(a="+++++", peer="+++++")
    verdict = assess(cluster=CLUSTER, observations=obs + _via_shared_ip(pattern), now=now)
    a = verdict.hosts["mail-a"]
    assert (a.via_shared_ip.liveness, a.via_shared_ip.failures) == (liveness, failures)
    assert (a.machine.liveness, a.service.liveness) == (UP, UP)  # the host still serves
    assert verdict.hosts["mail-b"].via_shared_ip is None  # not the primary: not checked


# ---------------------------------------------------------------- what a round says nothing about
def _two_services() -> Cluster:
    return Cluster(
        name="mail", group="cr_cluster_mail", members=CLUSTER.members,
        services=(Service("MDaemon", (Check(CheckKind.SMTP, 25),)),
                  Service("Webmail", (Check(CheckKind.HTTP, 80),))),
        switch=ClientSwitch(), replica_sets=(), policy=POLICY)


def _no_services() -> Cluster:
    return Cluster(name="mail", group="cr_cluster_mail", members=CLUSTER.members, services=(),
                   switch=ClientSwitch(), replica_sets=(), policy=POLICY)


def _shared_ip_rounds_of_their_own(pattern: str) -> list[Observation]:
    """Checks through the shared IP, each in a round of its own (half a second after the
    host probes): the round has nothing about the host itself."""
    return [replace(o, at=o.at + 0.5) for o in _via_shared_ip(pattern)]


UNSEEN_CASES = [
    # id, cluster, observations, now, host, what of it ("machine" or a service name),
    # liveness, reason fragment
    ("a member nobody probed is unknown: no observation yet",
     CLUSTER, story(a="++++", b="")[0], story(a="++++", b="")[1], "mail-b", "machine",
     UNKNOWN, "mail-b is unknown: no observation yet"),
    ("a first good probe: unknown, counting good probes",
     CLUSTER, *story(a="+", peer="+"), "mail-a", "machine",
     UNKNOWN, "mail-a is unknown: 1 of 2 good probes needed to call it up"),
    ("the only host the orchestrator probes is down: down, not observer isolated",
     CLUSTER, *story(a="++xxx", b=""), "mail-a", "machine",
     DOWN, "mail-a is down: 3 consecutive failed probes from the orchestrator"),
    ("shared-IP checks in rounds of their own do not keep a dead host up",
     CLUSTER, story(a="++xxx")[0] + _shared_ip_rounds_of_their_own("+++++"),
     story(a="++xxx")[1], "mail-a", "machine",
     DOWN, "mail-a is down: 3 consecutive failed probes"),
    ("a second service nobody checks is unknown, the checked one is up",
     _two_services(), *story(a="++++", peer="++++"), "mail-a", "Webmail",
     UNKNOWN, "Webmail on mail-a is unknown: no observation yet"),
    ("the checked service of two is up",
     _two_services(), *story(a="++++", peer="++++"), "mail-a", "MDaemon",
     UP, "MDaemon on mail-a is up as seen from the orchestrator and mail-b"),
    ("a cluster without services: its service verdict is the host's own",
     _no_services(), *story(a="++xxx", peer="++xxx"), "mail-a", "service",
     DOWN, "mail-a is down: 3 consecutive failed probes"),
]


@pytest.mark.parametrize("cluster,observations,now,host,what,liveness,fragment",
                         [c[1:] for c in UNSEEN_CASES], ids=[c[0] for c in UNSEEN_CASES])
def test_what_the_rounds_say_nothing_about(cluster, observations, now, host, what, liveness,
                                           fragment):
    result = assess(cluster=cluster, observations=observations, now=now)
    a = result.hosts[host]
    verdict = {"machine": a.machine, "service": a.service}.get(what) or a.services[what]
    assert verdict.liveness is liveness, verdict.reason
    assert fragment in verdict.reason
    assert not result.observer_isolated, result.reason


def test_a_check_naming_no_service_counts_for_none_of_several():
    # With one service a check without a "service" detail is that service's; with two it
    # says nothing about either (the host still answered).
    obs = [Observation("mail-a", ORCHESTRATOR, "check:smtp:25@198.18.0.11", Health.OK,
                       1000.0 + i, 0.01) for i in range(3)]
    one = assess(cluster=CLUSTER, observations=obs, now=1002.5).hosts["mail-a"]
    assert one.services["MDaemon"].liveness is UP, one.services["MDaemon"].reason
    two = assess(cluster=_two_services(), observations=obs, now=1002.5).hosts["mail-a"]
    assert two.machine.liveness is UP, two.machine.reason
    assert {n: v.liveness for n, v in two.services.items()} == {
        "MDaemon": UNKNOWN, "Webmail": UNKNOWN}
