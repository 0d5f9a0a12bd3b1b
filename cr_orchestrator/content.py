"""Where the Ansible content is: ``playbooks/``, ``roles/`` and ``ansible.cfg``.

In a checkout they sit at the repository's top, beside this package."""

from __future__ import annotations

from pathlib import Path


def content_root() -> Path:
    """The directory holding ``playbooks/``, ``roles/`` and ``ansible.cfg``."""
    return Path(__file__).resolve().parent.parent
