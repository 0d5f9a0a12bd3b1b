"""``crctl demo``: the main job, end to end in the lab (needs root)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="build the lab, run the orchestrator, crash the primary, show the failover",
        description="Builds the two-site lab, starts the orchestrator on it, sends mail "
                    "through the shared IP, crashes the primary and shows the failover as a "
                    "timeline, reads the mail back, heals the old primary, shows it rejoin "
                    "and resync, and cleans up.")
    parser.add_argument("--name", default="demo", help="lab name (demo)")
    parser.add_argument("--base", default="198.18.112.0/20", help="lab address range")
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cr_orchestrator.testworld.demo import DemoOptions, run_demo

    return run_demo(DemoOptions(name=args.name, base=args.base, keep=args.keep))
