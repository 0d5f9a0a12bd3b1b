"""The client-seen outage when site A is lost whole, with ``cr_dr: auto``: N trials
(default 5), p50/p95, next to the acknowledged mail lost with site A.

    CR_LAB_NAME=me CR_LAB_BASE=198.18.80.0/20 .venv/bin/python bench/site_loss_bench.py [N]

Needs root. Brings the lab named by CR_LAB_NAME up with ``--orchestrators`` (or grows it)
and leaves it up. Each trial is the scenario of tests/scenarios/test_site_loss_mail.py
(cr_orchestrator/testworld/sitestory.py): `crctl run --site X` on orch-a and orch-b
through the lab's Sentinel quorum (master on orch-a), SMTP load through the shared IP,
then site A crashes whole (mail-a, mail-b, orch-a with the Redis master, a sentinel, a
worker and a beat). Outage: from the crash until mail.lab.test points at mail-dr and
mail-dr greets a client. Lost: acknowledged messages newer than mail-dr's last copy
(only site A had them: the replication interval, 10 s in the fast profile). Figures
depend on the machine's load: say what else ran when you quote them.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from cr_orchestrator.testworld.lab import Lab, lab_from_env
from cr_orchestrator.testworld.sitestory import site_crash


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main(argv: list[str]) -> int:
    trials = int(argv[0]) if argv else 5
    name, base = lab_from_env()
    lab = Lab.up(name=name, base=base, orchestrators=True)
    outages, lost, windows = [], [], []
    for i in range(trials):
        with tempfile.TemporaryDirectory(prefix="cr-site-bench-") as d:
            loss = site_crash(lab, Path(d), dr="auto")
        print(f"trial {i + 1}: {loss.sentence()}", flush=True)
        if loss.missing:
            print(f"  VIOLATION: {len(loss.missing)} acknowledged before mail-dr's last copy "
                  f"are not on mail-dr: {loss.missing[:10]}")
        outages.append(loss.outage_s)
        lost.append(len(loss.lost))
        windows.append(loss.lost_window_s)
    print(f"\nsite A lost, cr_dr auto, {trials} trials: client outage p50 "
          f"{statistics.median(outages):.1f} s, p95 {p95(outages):.1f} s "
          f"(min {min(outages):.1f}, max {max(outages):.1f}); acknowledged mail lost with "
          f"site A: p50 {statistics.median(lost):.0f} messages, max {max(lost)} "
          f"(acknowledged within {max(windows):.1f} s before the crash at most)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
