"""After a story: was every acknowledged message kept, once, by one host at a time?

Reads the messages of a load run (:mod:`cr_orchestrator.testworld.lab.mailload`) where they can
be: the primary's Maildir (``new/`` and ``cur/``) and every host's quarantine
(``<Maildir>.cr-quarantine/…``, from which an operator restores them). The lab's SMTP
server stamps each message with the host that accepted it and when
(``X-Cr-Lab-Accepted``), so the check also tells whether two hosts ever acknowledged
mail at the same time.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cr_orchestrator.testworld.lab.mailload import Attempt

_LOAD = re.compile(rb"^X-Cr-Load: (\S+) (\d+)\r?$", re.MULTILINE)
_ACCEPTED = re.compile(rb"^X-Cr-Lab-Accepted: (\S+) ([0-9.]+)\r?$", re.MULTILINE)


@dataclass(frozen=True)
class Found:
    seq: int
    accepted_by: str | None
    accepted_at: float | None
    path: str


def scan(directory: Path, run: str) -> list[Found]:
    """Messages of load run ``run`` in the files under ``directory`` (recursively)."""
    out = []
    if not directory.exists():
        return out
    for path in directory.rglob("*"):
        if not path.is_file():
            continue
        head = path.read_bytes()[:4096]
        load = _LOAD.search(head)
        if load is None or load.group(1).decode() != run:
            continue
        accepted = _ACCEPTED.search(head)
        out.append(Found(int(load.group(2)),
                         accepted.group(1).decode() if accepted else None,
                         float(accepted.group(2)) if accepted else None, str(path)))
    return out


@dataclass
class MailVerdict:
    acknowledged: int
    on_primary: int
    in_quarantine: int
    missing: list[Attempt] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)  # seqs found twice on the primary
    switches: list[tuple[float, str, str]] = field(default_factory=list)  # accepting host

    def sentence(self) -> str:
        return (f"{self.acknowledged} acknowledged: {self.on_primary} on the primary, "
                f"{self.in_quarantine} only in quarantine, {len(self.missing)} missing"
                + (f" (seq {', '.join(str(a.seq) for a in self.missing[:10])})"
                   if self.missing else "")
                + f"; {len(self.duplicated)} duplicated; accepting host: "
                + (" → ".join([self.switches[0][1]] + [to for _, _, to in self.switches])
                   if self.switches else "never changed"))


def judge(*, attempts: list[Attempt], on_primary: list[Found],
          quarantined: list[Found]) -> MailVerdict:
    """Pure: the verdict over a run's attempts and what was found where."""
    acked = [a for a in attempts if a.acknowledged]
    primary_seqs = Counter(f.seq for f in on_primary)
    quarantine_seqs = {f.seq for f in quarantined}
    missing = [a for a in acked if a.seq not in primary_seqs and a.seq not in quarantine_seqs]
    return MailVerdict(
        acknowledged=len(acked),
        on_primary=sum(1 for a in acked if a.seq in primary_seqs),
        in_quarantine=sum(1 for a in acked if a.seq not in primary_seqs
                          and a.seq in quarantine_seqs),
        missing=missing,
        duplicated=sorted(seq for seq, n in primary_seqs.items() if n > 1),
        switches=acceptor_switches(on_primary + quarantined),
    )


def acceptor_switches(found: list[Found]) -> list[tuple[float, str, str]]:
    """(time, from, to) each time the accepting host changes, in acceptance order. One
    switch per failover or switchover is expected; two hosts serving at once show up as
    hosts alternating (a → b → a → b …)."""
    events = sorted((f.accepted_at, f.accepted_by) for f in found
                    if f.accepted_at is not None and f.accepted_by)
    out, current = [], None
    for at, host in events:
        if current is not None and host != current:
            out.append((at, current, host))
        current = host
    return out
