"""content_root(): the checkout's top in a checkout, the wheel's copy once installed."""

from __future__ import annotations

from pathlib import Path

from cr_orchestrator import content

REPO = Path(__file__).resolve().parents[2]


def test_a_checkout_uses_the_content_at_its_top():
    assert content.content_root() == REPO
    assert not (REPO / "cr_orchestrator" / "_content").exists()  # only wheels carry a copy


def test_an_installed_package_uses_the_copy_it_carries(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "cr_orchestrator"
    (package / "_content" / "playbooks").mkdir(parents=True)
    (package / "_content" / "ansible.cfg").touch()
    monkeypatch.setattr(content, "_PACKAGE", package)
    monkeypatch.setattr(content, "INSTALLED", package / "_content")
    assert content.content_root() == package / "_content"
