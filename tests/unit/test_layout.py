"""The layout keeps its promises: the pure core loads no I/O library, and only the
configuration module reads the environment."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "cr_orchestrator"


def test_the_decide_step_loads_no_redis_celery_or_ansible():
    code = ("import sys; import cr_orchestrator.decide.rules, cr_orchestrator.decide.detector, "
            "cr_orchestrator.decide.snapshot; "
            "print(sorted(m for m in ('redis', 'celery', 'ansible', 'ansible_runner', 'winrm') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_only_the_configuration_module_reads_the_environment():
    readers = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if re.search(r"\bos\.environ\b", p.read_text())
                     and "testworld" not in p.parts)
    assert readers == ["runtime/config.py"]


def test_the_folders_name_the_cycle():
    steps = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert {"observe", "decide", "act", "state", "remote", "runtime", "cli", "testworld"} <= steps


def test_every_action_that_changes_something_has_its_change():
    from cr_orchestrator.decide.rules import Action
    from cr_orchestrator.runtime.cycle import CHANGES

    assert set(CHANGES) == set(Action) - {Action.NONE, Action.HOLD}
