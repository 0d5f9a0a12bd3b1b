"""The checker of one schedule, once it has healed and converged (pure).

Invariants (a violation names the schedule's seed, to replay it):

- ``split_brain``: never two hosts serving on their own addresses, never two holders of
  the shared IP, in any sample of the client-side watch;
- ``acknowledged_lost``: every message acknowledged with 250 is on the current primary
  or in a quarantine it can be restored from (RFC 1123 §5.3.3). In a disk-lost schedule
  the messages acknowledged before the crash that only the lost host had are its RPO,
  not a violation; any other missing message still is;
- ``duplicated``: no message twice in the primary's mailbox;
- ``convergence``: one primary serving and every replica in sync within
  :data:`CONVERGENCE_BOUND_S` of the last heal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cr_orchestrator.testworld.lab.mailcheck import Found, judge
from cr_orchestrator.testworld.lab.mailload import Attempt

CONVERGENCE_BOUND_S = 60.0
INVARIANTS = ("split_brain", "acknowledged_lost", "duplicated", "convergence")


@dataclass(frozen=True)
class Evidence:
    """What a schedule left behind (times are unix seconds)."""

    seed: int
    profile: str
    disk_lost: bool
    schedule: str
    started_at: float            # the fault timeline's zero
    faults: list[dict]           # inject.Applied.as_dict() of each fault
    attempts: list[Attempt]
    samples: list[dict]          # client watch samples
    reads: list[dict]            # POP3/IMAP reader tries
    on_primary: list[Found]
    quarantined: list[Found]
    primary: str | None          # at the end
    last_heal_at: float
    converged_at: float | None
    lost_host: str | None = None  # disk lost: the old primary that never returns
    primaries: list[tuple[float, str | None]] = field(default_factory=list)


@dataclass
class Verdict:
    seed: int
    profile: str
    disk_lost: bool
    schedule: str
    acknowledged: int
    failed_sends: int
    primary: str | None
    missing: list[dict]
    duplicated: list[int]
    split_brain: list[tuple[float, float, str]]  # (start, end) relative, and what was seen
    outages: list[tuple[float, float]]           # client-seen SMTP outages, relative
    reader_outage_s: dict[str, float]
    convergence_s: float | None
    rpo_messages: int | None
    rpo_s: float | None
    violations: list[tuple[str, str]]            # (invariant, sentence)
    faults: list[dict] = field(default_factory=list)
    primaries: list[tuple[float, str | None]] = field(default_factory=list)

    @property
    def longest_outage_s(self) -> float:
        return max((end - start for start, end in self.outages), default=0.0)

    @property
    def ok(self) -> bool:
        return not self.violations


def judge_schedule(ev: Evidence) -> Verdict:
    mail = judge(attempts=ev.attempts, on_primary=ev.on_primary, quarantined=ev.quarantined)
    rel = ev.started_at
    rpo: list[Attempt] = []
    lost: list[Attempt] = list(mail.missing)
    lost_at = disk_lost_at(ev)
    if lost_at is not None:
        rpo = [a for a in mail.missing if a.done <= lost_at]
        lost = [a for a in mail.missing if a.done > lost_at]
    violations: list[tuple[str, str]] = []
    split = split_brain_intervals(ev.samples, rel)
    for start, end, what in split:
        violations.append(("split_brain", f"{what} from +{start:.2f} s to +{end:.2f} s"))
    missing = [describe_missing(a, ev.faults, rel) for a in lost]
    for m in missing:
        violations.append(("acknowledged_lost", m["sentence"]))
    if mail.duplicated:
        violations.append(("duplicated", f"{len(mail.duplicated)} messages twice on "
                           f"{ev.primary}: seq {', '.join(map(str, mail.duplicated[:10]))}"))
    convergence = (ev.converged_at - ev.last_heal_at) if ev.converged_at is not None else None
    if convergence is None or convergence > CONVERGENCE_BOUND_S:
        when = ("not converged" if convergence is None else
                f"converged {convergence:.1f} s after the last heal")
        violations.append(("convergence", f"{when} (bound {CONVERGENCE_BOUND_S:.0f} s); "
                           f"primary {ev.primary}"))
    return Verdict(
        seed=ev.seed, profile=ev.profile, disk_lost=ev.disk_lost, schedule=ev.schedule,
        acknowledged=mail.acknowledged,
        failed_sends=sum(1 for a in ev.attempts if not a.acknowledged),
        primary=ev.primary, missing=missing, duplicated=mail.duplicated,
        split_brain=split, outages=client_outages(ev.attempts, rel),
        reader_outage_s={proto: longest_reader_outage(ev.reads, proto)
                         for proto in sorted({r["proto"] for r in ev.reads})},
        convergence_s=convergence,
        rpo_messages=len(rpo) if ev.disk_lost else None,
        rpo_s=(lost_at - min(a.done for a in rpo)) if rpo and lost_at else
        (0.0 if ev.disk_lost else None),
        violations=violations, faults=ev.faults,
        primaries=[(t - rel, p) for t, p in ev.primaries])


def disk_lost_at(ev: Evidence) -> float | None:
    """When the lost host stopped acknowledging: once its crash had killed every process
    of it, not when the crash began (mail it took in between existed on it alone)."""
    if not ev.disk_lost or ev.lost_host is None:
        return None
    crash = next((f for f in ev.faults if f["kind"] == "crash"
                  and f["victim"] == ev.lost_host and not f["refused"]), None)
    if crash is None:
        return None
    return crash.get("struck_at") or crash["applied_at"]


def split_brain_intervals(samples: list[dict], rel: float) -> list[tuple[float, float, str]]:
    """Stretches of consecutive watch samples that saw two shared-IP holders or two
    serving hosts, from the first such sample to the next clean one."""
    out, start, what = [], None, ""
    for s in sorted(samples, key=lambda s: s["t"]):
        seen = []
        if len(s["arp_holders"]) > 1:
            seen.append(f"shared IP held by {len(s['arp_holders'])} MACs")
        if len(s["serving_hosts"]) > 1:
            seen.append(f"{' and '.join(s['serving_hosts'])} serving")
        if seen and start is None:
            start, what = s["t"], "; ".join(seen)
        elif not seen and start is not None:
            out.append((start - rel, s["t"] - rel, what))
            start = None
    if start is not None:
        out.append((start - rel, samples[-1]["t"] - rel, what))
    return out


def client_outages(attempts: list[Attempt], rel: float) -> list[tuple[float, float]]:
    """Each stretch of failed sends, from the last acknowledgement before it to the first
    after it (or the last attempt), relative to ``rel``."""
    out, last_ok, failing = [], None, False
    ordered = sorted(attempts, key=lambda a: a.t)
    for a in ordered:
        if a.acknowledged:
            if failing and last_ok is not None:
                out.append((last_ok - rel, a.done - rel))
            last_ok, failing = a.done, False
        else:
            failing = True
    if failing and last_ok is not None and ordered:
        out.append((last_ok - rel, ordered[-1].done - rel))
    return out


def longest_reader_outage(reads: list[dict], proto: str) -> float:
    longest, last_ok, failing = 0.0, None, False
    for r in sorted((r for r in reads if r["proto"] == proto), key=lambda r: r["t"]):
        if r["ok"]:
            if failing and last_ok is not None:
                longest = max(longest, r["done"] - last_ok)
            last_ok, failing = r["done"], False
        else:
            failing = True
    return longest


def describe_missing(a: Attempt, faults: list[dict], rel: float) -> dict:
    """A missing message's send time set against the faults' times."""
    sent = a.t - rel
    spans = []
    for f in faults:
        if f["applied_at"] is None or f["refused"]:
            continue
        start = f["applied_at"] - rel
        end = (f["healed_at"] - rel) if f["healed_at"] else None
        spans.append(f"{f['kind']} {f['victim']} +{start:.1f}.."
                     f"{f'+{end:.1f}' if end is not None else 'never healed'} s")
    sentence = (f"seq {a.seq} acknowledged at +{a.done - rel:.2f} s (sent +{sent:.2f} s) is "
                f"on no host; faults: {', '.join(spans) or 'none'}")
    return {"seq": a.seq, "sent_s": sent, "acked_s": a.done - rel, "sentence": sentence}
