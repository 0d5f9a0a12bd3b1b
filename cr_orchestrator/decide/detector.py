"""The failure detector: a window of observations in, liveness verdicts with reasons out.

Pure: no I/O and no clock (``now`` is an argument), so every case is a table-driven test.

How it judges, per host and per service:

1. Observations are grouped into rounds by ``(host, vantage, at)``: a probe round stamps all
   its observations with the round's start. Each round gives one sample per thing: the
   host answered (anything but UNREACHABLE from it), or the service served (its checks
   answered OK/DEGRADED and its host did not report it stopped).
2. Per vantage, the samples run through a small state machine with hysteresis: UP →
   SUSPECT on the first failure; DOWN after ``failures_before_down`` consecutive failures;
   back to UP from DOWN (or from nothing) only after ``successes_before_up`` consecutive
   successes, so a flapping host does not toggle. A gap longer than ``stale_after_s``
   restarts the machine; a view whose newest sample is older than that is UNKNOWN (stale
   observations never count as up).
3. The vantages are combined: any vantage that sees it UP wins (if that is a peer while the
   orchestrator fails, the orchestrator is the one cut off); DOWN needs no vantage UP and is
   ``confirmed`` when ``required_vantages`` vantages see it DOWN; failing otherwise is
   SUSPECT. If the orchestrator fails to reach every host it probes, it is isolated and
   every verdict is UNKNOWN.

Checks through the shared IP (``detail["target"] == "shared_ip"``) say what clients see,
not which host is alive, so they do not count for the host or its service. They get a
verdict of their own, ``HostAssessment.via_shared_ip`` of the primary they were attributed
to: the primary may serve on its own address while clients reach nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypedDict

from cr_orchestrator.observe.health import ORCHESTRATOR, Health, Liveness, Observation
from cr_orchestrator.model import Cluster, Policy

_ANSWERED = (Health.OK, Health.DEGRADED)


@dataclass(frozen=True)
class Sample:
    """One round's judgement of one thing from one vantage."""

    at: float
    alive: bool
    degraded: bool = False
    error: str | None = None


@dataclass(frozen=True)
class View:
    """One vantage's state machine result for one thing."""

    vantage: str
    liveness: Liveness
    failures: int = 0  # consecutive failed rounds at the end
    successes: int = 0  # consecutive good rounds at the end
    last_at: float | None = None
    last_error: str | None = None
    degraded: bool = False
    stale: bool = False


@dataclass(frozen=True)
class Verdict:
    """The detector's verdict on a host or a service, with its reason as a sentence."""

    liveness: Liveness
    reason: str
    failures: int = 0
    vantages: int = 0  # how many vantages see it failing
    confirmed: bool = False  # DOWN from at least required_vantages vantages
    degraded: bool = False
    observer_cut_off: bool = False  # a peer sees it serving; the orchestrator does not
    views: tuple[View, ...] = ()


@dataclass(frozen=True)
class HostAssessment:
    host: str
    machine: Verdict  # the host itself
    services: dict[str, Verdict] = field(default_factory=dict)
    via_shared_ip: Verdict | None = None  # None: no check through the shared IP for it

    @property
    def service(self) -> Verdict:
        """The worst service verdict (the host's own verdict when it has no services)."""
        if not self.services:
            return self.machine
        return max(self.services.values(), key=lambda v: _SEVERITY[v.liveness])


@dataclass(frozen=True)
class Assessment:
    cluster: str
    now: float
    hosts: dict[str, HostAssessment]
    observer_isolated: bool
    reason: str


class _Common(TypedDict):
    """What every verdict of :func:`combine` carries whatever its liveness."""

    views: tuple[View, ...]
    degraded: bool


_SEVERITY = {Liveness.UP: 0, Liveness.UNKNOWN: 1, Liveness.SUSPECT: 2, Liveness.DOWN: 3}


def default_stale_after(policy: Policy) -> float:
    """Observations older than this many seconds are stale (a few probe intervals)."""
    return 3 * policy.probe_interval_s + policy.probe_timeout_s


# ---------------------------------------------------------------- rounds → samples
class _Round:
    """One round's observations of one host from one vantage, sorted once by what they
    are about, with the host's sample folded in as they come. Every sample used to
    re-read the whole round (and once more per service); with a host in many clusters
    the window holds hundreds of rounds, most of them other clusters' (their services
    are not this cluster's), and that was most of the detector's time."""

    __slots__ = ("checks", "shared", "status", "named", "unnamed", "seen", "alive",
                 "degraded", "host_error", "check_error")

    def __init__(self) -> None:
        self.checks: list[Observation] = []  # protocol checks of the host's own address
        self.shared: list[Observation] = []  # protocol checks through the shared IP
        self.status: dict[str, list[Observation]] = {}  # "service:<name>" by name
        self.named: set[object] = set()  # services the own checks name in their detail
        self.unnamed = False  # an own check names no service (it is the only service's)
        # the host sample: the host probe and the own checks
        self.seen = self.alive = self.degraded = False
        self.host_error: str | None = None  # the first error of a host probe
        self.check_error: str | None = None  # the first error of an own check

    def add(self, o: Observation) -> None:
        subject = o.subject
        if subject == "host":
            self.host_error = self.host_error or o.error
        elif subject.startswith("check:"):
            detail = o.detail
            if detail.get("target", "host") == "shared_ip":
                self.shared.append(o)
                return
            self.checks.append(o)
            if "service" in detail:
                self.named.add(detail["service"])
            else:
                self.unnamed = True
            self.check_error = self.check_error or o.error
        else:
            if subject.startswith("service:"):
                self.status.setdefault(subject[8:], []).append(o)
            return
        # the host probe or an own check: the host answered, even by a refused connection
        self.seen = True
        health = o.health
        if not self.alive:
            self.alive = health is not Health.UNREACHABLE or bool(o.detail.get("refused"))
        if health is Health.DEGRADED:
            self.degraded = True

    def about(self, service: str, only_service: bool) -> bool:
        """Whether anything of this round is about ``service`` (else its sample is None)."""
        return service in self.status or service in self.named \
            or (only_service and self.unnamed)


def host_sample(r: _Round, at: float) -> Sample:
    """The host answered if anything of it answered at all, even by refusing a connection
    (its kernel is up; the service is judged separately). The first error is the host
    probe's, else a check's. For a round with a host probe or an own check (``seen``)."""
    return Sample(at, r.alive, r.degraded,
                  None if r.alive else (r.host_error or r.check_error or "no answer"))


def service_sample(r: _Round, service: str, at: float, only_service: bool) -> Sample:
    """The service served: not reported stopped, and its checks answered. For a round
    that is :meth:`~_Round.about` the service."""
    status = r.status.get(service, [])
    checks = [o for o in r.checks
              if o.detail.get("service", service if only_service else None) == service]
    degraded = any(o.health is Health.DEGRADED for o in status + checks)
    stopped = [o for o in status if o.health is Health.DOWN]
    if stopped:
        return Sample(at, False, degraded, stopped[0].error or "service reported stopped")
    failed = [o for o in checks or status if o.health not in _ANSWERED]
    if failed:
        return Sample(at, False, degraded, f"{failed[0].subject}: {failed[0].error or 'failed'}")
    return Sample(at, True, degraded)


def shared_ip_sample(r: _Round, at: float) -> Sample:
    """Clients got an answer: every check through the shared IP answered this round (a
    round with such checks)."""
    checks = r.shared
    failed = [o for o in checks if o.health not in _ANSWERED]
    if failed:
        return Sample(at, False, error=f"{failed[0].subject}: {failed[0].error or 'failed'}")
    return Sample(at, True, any(o.health is Health.DEGRADED for o in checks))


# ---------------------------------------------------------------- the state machine
def run_view(*, vantage: str, samples: list[Sample], policy: Policy, now: float,
             stale_after_s: float) -> View:
    """Replay ``samples`` (any order) through the hysteresis machine as of ``now``."""
    state, fails, oks, last = Liveness.UNKNOWN, 0, 0, None
    for s in sorted((s for s in samples if s.at <= now), key=lambda s: s.at):
        if last is not None and s.at - last.at > stale_after_s:
            state, fails, oks = Liveness.UNKNOWN, 0, 0  # a gap: old history does not count
        if s.alive:
            oks, fails = oks + 1, 0
            if state is Liveness.SUSPECT or oks >= policy.successes_before_up:
                state = Liveness.UP
        else:
            fails, oks = fails + 1, 0
            if fails >= policy.failures_before_down:
                state = Liveness.DOWN
            elif state in (Liveness.UP, Liveness.UNKNOWN):
                state = Liveness.SUSPECT
        last = s
    if last is None:
        return View(vantage, Liveness.UNKNOWN)
    stale = now - last.at > stale_after_s
    return View(vantage, Liveness.UNKNOWN if stale else state, fails, oks, last.at,
                last.error, last.degraded, stale)


# ---------------------------------------------------------------- combining vantages
def _names(views: list[View]) -> str:
    names = ["the orchestrator" if v.vantage == ORCHESTRATOR else v.vantage for v in views]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def combine(*, what: str, views: list[View], policy: Policy, now: float) -> Verdict:
    """One verdict from every vantage's view of ``what`` (e.g. "mail-a", "MDaemon on mail-a")."""
    views = sorted(views, key=lambda v: (v.vantage != ORCHESTRATOR, v.vantage))
    # A view that stopped reporting rounds ago must not outvote current ones (a peer's last
    # "up" from before the orchestrator's failures says nothing about now).
    newest = max((v.last_at for v in views if v.last_at is not None), default=None)
    current = [v for v in views if v.last_at is not None and newest is not None
               and v.last_at >= newest - 1.5 * policy.probe_interval_s]
    up = [v for v in current if v.liveness is Liveness.UP]
    down = [v for v in current if v.liveness is Liveness.DOWN]
    failing = [v for v in current if v.liveness in (Liveness.SUSPECT, Liveness.DOWN)]
    orch = next((v for v in views if v.vantage == ORCHESTRATOR), None)
    degraded = any(v.degraded for v in up)
    common: _Common = {"views": tuple(views), "degraded": degraded}
    if up and orch is not None and orch in failing:
        return Verdict(Liveness.UP, (
            f"{what} is up: the orchestrator has failed to reach it for {orch.failures} "
            f"probe(s) ({orch.last_error}) but {_names(up)} still "
            f"{'sees' if len(up) == 1 else 'see'} it serving, so the "
            "orchestrator is cut off, not the host"), vantages=len(failing),
            observer_cut_off=True, **common)
    if up:
        note = " (answering but degraded)" if degraded else ""
        return Verdict(Liveness.UP, f"{what} is up as seen from {_names(up)}{note}", **common)
    if down:
        worst = max(v.failures for v in down)
        confirmed = len(down) >= policy.required_vantages
        how = (f"confirmed by {len(down)} vantages" if confirmed else
               f"not confirmed: {len(down)} of {policy.required_vantages} required vantages")
        return Verdict(Liveness.DOWN, (
            f"{what} is down: {worst} consecutive failed probes from {_names(down)} "
            f"({down[0].last_error}); {how}"), worst, len(failing), confirmed, **common)
    if failing:
        worst = max(v.failures for v in failing)
        return Verdict(Liveness.SUSPECT, (
            f"{what} is suspect: {worst} failed probe(s) from {_names(failing)} "
            f"({failing[0].last_error}), {policy.failures_before_down} needed to call it down"),
            worst, len(failing), **common)
    return Verdict(Liveness.UNKNOWN, _unknown_reason(what, views, policy, now), **common)


def _unknown_reason(what: str, views: list[View], policy: Policy, now: float) -> str:
    stale = [v for v in views if v.stale]
    if stale:
        age = min(now - v.last_at for v in stale if v.last_at is not None)
        return f"{what} is unknown: the newest observation is {age:.1f}s old (stale)"
    warming = [v for v in views if v.successes]
    if warming:
        best = max(v.successes for v in warming)
        return (f"{what} is unknown: {best} of {policy.successes_before_up} good probes "
                "needed to call it up")
    return f"{what} is unknown: no observation yet"


# ---------------------------------------------------------------- the whole cluster
_Rounds = dict[tuple[str, str], dict[float, _Round]]  # (host, vantage) → at → round


def _rounds(observations: Iterable[Observation]) -> _Rounds:
    by_key: _Rounds = {}
    for o in observations:
        if o.subject == "vantage":
            continue  # the peer could not look: says nothing about the target
        by_at = by_key.get((o.host, o.vantage))
        if by_at is None:
            by_at = by_key[(o.host, o.vantage)] = {}
        r = by_at.get(o.at)
        if r is None:
            r = by_at[o.at] = _Round()
        r.add(o)
    return by_key


def assess(*, cluster: Cluster, observations: Iterable[Observation], now: float,
           policy: Policy | None = None, stale_after_s: float | None = None) -> Assessment:
    """Verdicts for every member of ``cluster`` and its services as of ``now``."""
    policy = policy or cluster.policy
    stale = default_stale_after(policy) if stale_after_s is None else stale_after_s
    rounds = _rounds(observations)
    names = [s.name for s in cluster.services]
    only_service = len(names) == 1
    host_views: dict[str, list[View]] = defaultdict(list)
    service_views: dict[tuple[str, str], list[View]] = defaultdict(list)
    shared_views: dict[str, list[View]] = defaultdict(list)
    for (host, vantage), by_at in rounds.items():
        via = [shared_ip_sample(r, at) for at, r in by_at.items() if r.shared]
        if via:
            shared_views[host].append(run_view(vantage=vantage, samples=via, policy=policy,
                                               now=now, stale_after_s=stale))
        samples = [host_sample(r, at) for at, r in by_at.items() if r.seen]
        host_views[host].append(run_view(vantage=vantage, samples=samples, policy=policy,
                                         now=now, stale_after_s=stale))
        for name in names:
            ss = [service_sample(r, name, at, only_service) for at, r in by_at.items()
                  if r.about(name, only_service)]
            service_views[(host, name)].append(run_view(
                vantage=vantage, samples=ss, policy=policy, now=now, stale_after_s=stale))
    isolated, reason = _observer_isolated(host_views)
    hosts = {}
    for host in cluster.hosts():
        if isolated:
            unknown = Verdict(Liveness.UNKNOWN, f"{host} is unknown: {reason}")
            hosts[host] = HostAssessment(host, unknown, {n: unknown for n in names})
            continue
        machine = combine(what=host, views=host_views.get(host, []), policy=policy, now=now)
        services = {n: combine(what=f"{n} on {host}", views=service_views.get((host, n), []),
                               policy=policy, now=now) for n in names}
        clients = (combine(what=f"the service through the shared IP (primary {host})",
                           views=shared_views[host], policy=policy, now=now)
                   if shared_views.get(host) else None)
        hosts[host] = HostAssessment(host, machine, services, clients)
    if not isolated:
        cut = [h for h, a in hosts.items() if a.machine.observer_cut_off]
        reason = (f"the orchestrator cannot reach {', '.join(cut)} but a peer can: "
                  "not acting on the orchestrator's view" if cut else "the orchestrator sees the cluster")
    return Assessment(cluster.name, now, hosts, isolated, reason)


def _observer_isolated(host_views: dict[str, list[View]]) -> tuple[bool, str]:
    """Isolated when the orchestrator fails to reach every one of 2+ hosts it probes."""
    mine = [v for views in host_views.values() for v in views if v.vantage == ORCHESTRATOR]
    if len(mine) < 2:
        return False, ""
    if all(v.liveness in (Liveness.SUSPECT, Liveness.DOWN) for v in mine):
        return True, (f"the orchestrator reaches none of the {len(mine)} hosts it probes "
                      "(observer isolated): its own view cannot tell who is down")
    return False, ""
