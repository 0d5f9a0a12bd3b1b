"""Load and validate an Ansible inventory into the typed model (:mod:`cr_orchestrator.model`).

``load_topology(inventory)`` runs the real ``ansible-inventory --list --export`` (so the
inventory is read exactly as Ansible reads it), decrypts inline vault values into
:class:`~cr_orchestrator.model.Secret`, and hands the data to the pure
``build_topology(exported, source=..., locate=...)``, which reports every problem at once
in one :class:`~cr_orchestrator.errors.ConfigError`, each naming file, group or host and
variable. Before Ansible runs, the inventory's files are checked (unreadable, empty,
binary, not UTF-8: :mod:`~cr_orchestrator.inventory.files`); after the model is built, its
addresses are checked against each other (:mod:`~cr_orchestrator.inventory.addresses`).
The rules are listed in docs/inventory.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cr_orchestrator.errors import ConfigError
from cr_orchestrator.inventory.build import build_topology
from cr_orchestrator.inventory.loader import (
    FileLocator,
    check_inventory_files,
    decrypt_vault_values,
    role_variables,
    run_ansible_inventory,
)
from cr_orchestrator.inventory.render import render_status, render_summary
from cr_orchestrator.inventory.values import parse_duration
from cr_orchestrator.model import Topology

__all__ = [
    "FileLocator",
    "build_topology",
    "load_topology",
    "parse_duration",
    "render_status",
    "render_summary",
]


def load_topology(inventory: str | Path, *, vault_password_file: str | Path | None = None) -> Topology:
    """Read, merge and validate ``inventory`` (file or directory); raise ``ConfigError``."""
    path = Path(inventory)
    vault = Path(vault_password_file) if vault_password_file is not None else None
    # Files first: Ansible skips an unreadable directory silently and reports an unreadable,
    # empty or non-UTF-8 file in words that do not name the culprit.
    files = check_inventory_files(path)
    if files.errors:
        raise ConfigError(files.errors)
    locate = FileLocator(path)
    exported = run_ansible_inventory(path, vault_password_file=vault)
    exported = decrypt_vault_values(exported, vault_password_file=vault, locate=locate)
    topology = build_topology(exported, source=str(inventory), locate=locate,
                              role_variables=role_variables())
    if not files.warnings:
        return topology
    return dataclasses.replace(topology, warnings=(*files.warnings, *topology.warnings))
