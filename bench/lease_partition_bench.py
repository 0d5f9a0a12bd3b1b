"""The asymmetric partition, many times: the old primary stops itself before the new one
is promoted, and the client never sees two servers.

Runs the lab story ``tests/scenarios/test_lease_mail.py::test_asymmetric_partition...``
``--runs`` times (each: a fresh `crctl run`, lease agents through the role, mail-a cut off
from the orchestrator and its peers but not from the client, under the split-brain
watch), then prints, per run and as medians, from the moment of the cut: when mail-a's
shared IP was gone (its kernel lifetime ran out, or its agent released it first), when
its service had stopped, and when mail-b was promoted.
Any run that saw two serving hosts or two shared-IP holders fails the story.

    sudo CR_LAB_NAME=lea CR_LAB_BASE=198.18.48.0/20 .venv/bin/python bench/lease_partition_bench.py --runs 10

The figures go to docs/operations.md ("The serving host's lease") by hand.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINE = re.compile(r"lease run (?P<run>\d+): cut at 0; mail-a's shared IP gone at "
                  r"(?P<released>[0-9.]+) s \(released by the agent: (?P<by_agent>\w+)\), "
                  r"service stopped at (?P<stopped>[0-9.]+) s after "
                  r"(?P<silent>[0-9.]+) s without renewal \(ttl (?P<ttl>[0-9.]+) s\); mail-b "
                  r"promoted at (?P<promoted>[0-9.]+) s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    env = dict(os.environ, CR_LEASE_RUNS=str(args.runs), CR_LAB_KEEP="1")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
         "tests/scenarios/test_lease_mail.py", "-k", "asymmetric"],
        cwd=REPO, env=env, capture_output=True, text=True)
    runs = [m.groupdict() for m in LINE.finditer(done.stdout)]
    verdicts = [line for line in done.stdout.splitlines() if line.startswith(".client watch")
                or line.startswith("client watch")]
    for r in runs:
        print(f"run {r['run']}: IP gone {r['released']} s (by the agent: {r['by_agent']}), "
              f"service stopped {r['stopped']} s, "
              f"mail-b promoted {r['promoted']} s after the cut ({r['silent']} s without "
              f"renewal, ttl {r['ttl']} s)")
    if runs:
        def median(key: str) -> float:
            return statistics.median(float(r[key]) for r in runs)
        print(f"{len(runs)} runs, medians: IP gone {median('released'):.2f} s, service "
              f"stopped {median('stopped'):.2f} s, mail-b promoted {median('promoted'):.2f} s; "
              f"promoted before the IP was gone: "
              f"{sum(float(r['promoted']) < float(r['released']) for r in runs)} runs")
    print(f"client watch: {sum('never' in v for v in verdicts)} of {len(verdicts)} runs never "
          "saw two serving hosts or two shared-IP holders")
    print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:])
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
