"""Time `crctl lab up` and `crctl lab down` (wall clock, CLI included), N rounds.

    CR_LAB_NAME=ldev CR_LAB_BASE=198.18.16.0/20 .venv/bin/python bench/lab_up_down.py [N]

Needs root. Uses (and finally removes) the lab named by CR_LAB_NAME; never another one.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

CRCTL = os.path.join(os.path.dirname(sys.executable), "crctl")


def timed(*args: str) -> float:
    started = time.monotonic()
    subprocess.run([CRCTL, "lab", *args], check=True, capture_output=True)
    return time.monotonic() - started


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    timed("down")
    ups, downs = [], []
    for _ in range(rounds):
        ups.append(timed("up"))
        downs.append(timed("down"))
    load = os.getloadavg()[0]
    print(f"lab up:   median {statistics.median(ups):.2f} s  (min {min(ups):.2f}, max {max(ups):.2f})")
    print(f"lab down: median {statistics.median(downs):.2f} s  (min {min(downs):.2f}, max {max(downs):.2f})")
    print(f"{rounds} rounds, load average {load:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
