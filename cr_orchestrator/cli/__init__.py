"""``crctl``: the operator's command line.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``; the handler it sets with ``set_defaults(handler=...)`` returns
the exit code. Errors of the ``CrError`` tree become one clear message and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cr_orchestrator import __version__
from cr_orchestrator.errors import ConfigError, CrError

COMMAND_MODULES = (
    "validate",
    "status",
    "lab",
    "playbook",
    "probe",
    "sync",
    "quarantine",
    "run",
    "control",
    "history",
    "serve",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crctl", description="High availability and disaster recovery driven by Ansible."
    )
    parser.add_argument("--version", action="version", version=f"crctl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue  # that command is not built yet
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except CrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
