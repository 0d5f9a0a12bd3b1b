"""``crctl validate``: check an inventory and list every problem, or summarise it."""

from __future__ import annotations

import argparse
import sys

from cr_orchestrator.runtime.config import runtime
from cr_orchestrator.errors import ConfigError
from cr_orchestrator.inventory import load_topology, render_summary


def add_inventory_options(parser: argparse.ArgumentParser) -> None:
    """``-i/--inventory`` (default: env CR_INVENTORY) and ``--vault-password-file``."""
    config = runtime()
    parser.add_argument("-i", "--inventory", default=config.inventory,
                        help="inventory file or directory (default: $CR_INVENTORY)")
    parser.add_argument("--vault-password-file", default=config.vault_password_file,
                        help="file holding the vault password (default: $CR_VAULT_PASSWORD_FILE)")


def inventory_of(args: argparse.Namespace) -> str:
    if not args.inventory:
        raise ConfigError("no inventory given: use -i INVENTORY or set CR_INVENTORY")
    return args.inventory


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate", help="check an inventory; list every problem or summarise the clusters",
        description="Read the inventory as Ansible does, check every cr_* setting and print "
                    "either all problems (exit 1) or a summary of the clusters (exit 0).")
    add_inventory_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    inventory = inventory_of(args)
    try:
        topology = load_topology(inventory, vault_password_file=args.vault_password_file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        count = len(exc.problems)
        print(f"{inventory}: {count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
        return 1
    print(render_summary(topology))
    return 0
