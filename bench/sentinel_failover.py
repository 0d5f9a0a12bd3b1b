"""Time the Sentinel failover alone in the lab: the Redis master SIGKILLed -> a new master
named by a majority of the sentinels and taking writes. N trials (default 7), p50/p95.

    CR_LAB_NAME=sit CR_LAB_BASE=198.18.64.0/20 .venv/bin/python bench/sentinel_failover.py [N] [--site-crash]

Needs root. Brings the lab named by CR_LAB_NAME up with ``--orchestrators`` (or grows it)
and leaves it up. Each trial kills whichever of orch-a / orch-b is master (the witness is
never promoted, so the master alternates), then restarts the killed Redis and waits until
Sentinel has made it a replica before the next trial (not timed). The quorum's settings
are the lab's: down-after-milliseconds 2000, quorum 2 (testworld/lab/quorum.py).

``--site-crash``: each trial moves the master to orch-a (graceful failover, not timed),
then crashes site-a whole (``crctl lab fail site-a --mode crash``: orch-a's Redis and its
sentinel die together, addresses gone), times the same thing, and heals site-a.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from cr_orchestrator.testworld.lab import Lab, lab_from_env

POLL_S = 0.02


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def trial(lab: Lab, *, site_crash: bool) -> tuple[str, float, float]:
    """(killed node, seconds to a majority naming the new master, seconds to its first
    accepted write), both from the kill."""
    if site_crash:
        lab.move_redis_master("orch-a")
    killed = lab.redis_master()
    assert killed is not None, "the sentinels agree on no master before the trial"
    started = time.monotonic()
    if site_crash:
        lab.fail("site-a", "crash")
    else:
        lab.kill_redis(killed)
    named_at = None
    while True:
        master = lab.redis_master()
        if master not in (None, killed):
            named_at = named_at or time.monotonic()
            if lab.redis_write_refusal(master) is None:
                break
        if time.monotonic() - started > 60:
            raise SystemExit(f"no new master 60 s after killing the Redis of {killed}")
        time.sleep(POLL_S)
    wrote = time.monotonic() - started
    if site_crash:
        lab.heal("site-a")
    else:
        lab.start_redis(killed)
    deadline = time.monotonic() + 60
    while lab.redis_role(killed) != "slave" or lab.redis_write_refusal(master) is not None:
        if time.monotonic() > deadline:
            raise SystemExit(f"the Redis of {killed} did not rejoin as a replica within 60 s")
        time.sleep(0.2)
    return killed, named_at - started, wrote


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    site_crash = "--site-crash" in sys.argv[1:]
    trials = int(args[0]) if args else 7
    name, base = lab_from_env()
    lab = Lab.up(name=name, base=base, orchestrators=True)
    named, wrote = [], []
    for i in range(trials):
        killed, to_named, to_write = trial(lab, site_crash=site_crash)
        named.append(to_named)
        wrote.append(to_write)
        print(f"trial {i + 1}: {'crashed site-a with' if site_crash else 'killed'} the "
              f"master on {killed}: new master named after "
              f"{to_named:.2f} s, taking writes after {to_write:.2f} s", flush=True)
    what = "site-a crashed whole" if site_crash else "master SIGKILLed"
    print(f"Sentinel failover, {what} -> new master taking writes: "
          f"p50 {statistics.median(wrote):.2f} s, p95 {p95(wrote):.2f} s "
          f"(min {min(wrote):.2f}, max {max(wrote):.2f}); named by a majority: "
          f"p50 {statistics.median(named):.2f} s, p95 {p95(named):.2f} s")
    print(f"{trials} trials, load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
