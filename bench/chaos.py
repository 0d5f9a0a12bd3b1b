"""The chaos campaign: N randomized fault schedules in the lab under client load, each
judged by the checker, with a report, a picture and the seeds to replay.

    sudo .venv/bin/python bench/chaos.py --lab cha --base 198.18.128.0/20 \\
        --schedules 50 --seed 13 --profile full --out /var/tmp/chaos-13
    sudo .venv/bin/python bench/chaos.py --lab cha --base 198.18.128.0/20 \\
        --replay 123456 --profile full --out /var/tmp/chaos-replay

A campaign seed gives the schedule seeds; a schedule seed (with its profile) gives the
schedule: faults by kind, target, start and duration. Writes OUT/report.md,
OUT/campaign.json, OUT/timeline.png and OUT/seed-N/ (load, watch, readers, crctl run's
log). Exit 0 when no invariant was violated and every schedule ran, 1 otherwise, 2 on bad
arguments. Needs root (the lab) and redis-server/redis-sentinel (the quorum).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from cr_orchestrator.errors import LabError
from cr_orchestrator.testworld.chaos.campaign import run_campaign
from cr_orchestrator.testworld.chaos.schedule import (PROFILES, campaign_seeds, draw,
                                                      parse_seed, profile_named)


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/chaos.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", default="crlab", help="lab name (default crlab)")
    parser.add_argument("--base", default="198.18.0.0/20", help="the lab's /20")
    parser.add_argument("--schedules", type=int, default=50)
    parser.add_argument("--seed", default="13", help="campaign seed")
    parser.add_argument("--replay", nargs="+", metavar="SEED",
                        help="run these schedule seeds instead of a campaign's")
    parser.add_argument("--profile", default="full", help=f"one of {', '.join(PROFILES)}")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quorum-port", type=int, default=19400,
                        help="the local Redis quorum's first port (sentinels at +100)")
    parser.add_argument("--load-every", type=float, default=0.1,
                        help="seconds between two SMTP messages of the load")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the schedules and stop")
    args = parser.parse_args(argv)
    try:
        args.profile = profile_named(args.profile)
        args.seeds = ([parse_seed(s) for s in args.replay] if args.replay else
                      campaign_seeds(parse_seed(args.seed), args.schedules))
    except ValueError as exc:
        parser.error(str(exc))
    if args.schedules < 1:
        parser.error(f"--schedules {args.schedules}: give at least 1")
    if not 1024 <= args.quorum_port <= 65000 - 102:
        parser.error(f"--quorum-port {args.quorum_port}: give a port in 1024..64898")
    if args.load_every <= 0:
        parser.error(f"--load-every {args.load_every}: give a positive number of seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = arguments(argv)
    if args.dry_run:
        for seed in args.seeds:
            schedule = draw(seed, args.profile)
            print(f"{seed}: {schedule.sentence()}{' (disk lost)' if schedule.disk_lost else ''}")
        return 0
    from cr_orchestrator.testworld.lab.core import Lab

    try:
        lab = Lab.up(name=args.lab, base=args.base)
    except LabError as exc:
        print(f"bench/chaos.py: {exc}", file=sys.stderr)
        return 2
    # stopped with SIGTERM (a campaign in the background): leave the lab clean, as a ^C does
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    command = "sudo .venv/bin/python bench/chaos.py " + shlex.join(argv)
    replay = (f"sudo .venv/bin/python bench/chaos.py --lab {args.lab} --base {args.base} "
              f"--profile {args.profile.name} --out /var/tmp/chaos-replay --replay {{seed}}")
    outcome = run_campaign(lab=lab, seeds=args.seeds, profile=args.profile,
                           directory=args.out, quorum_port=args.quorum_port, command=command,
                           replay=replay, load_every_s=args.load_every)
    print((args.out / "report.md").read_text())
    return 1 if outcome.violations or outcome.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
