"""Where the Ansible content is: ``playbooks/``, ``roles/`` and ``ansible.cfg``.

In a checkout (and an editable install of it) they sit at the repository's top, beside
this package. A wheel carries a copy of the three in ``cr_orchestrator/_content/``
(setup.py puts it there at build time; the repository holds no second copy). The layout
inside is the same, so what the content says about itself still holds: ansible.cfg's
``roles_path = ./roles`` (Ansible reads it relative to the file) and the playbooks'
``{{ playbook_dir | dirname }}/roles``."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
INSTALLED = _PACKAGE / "_content"


def content_root() -> Path:
    """The directory holding ``playbooks/``, ``roles/`` and ``ansible.cfg``: the checkout's
    top when this package is the checkout's, else the copy installed from the wheel."""
    checkout = _PACKAGE.parent
    # The checkout first, so a stray build copy can never hide the content being edited.
    if (checkout / "ansible.cfg").is_file() and (checkout / "playbooks").is_dir():
        return checkout
    return INSTALLED
