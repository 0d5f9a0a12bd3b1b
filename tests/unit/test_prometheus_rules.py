"""The shipped alert rules: `promtool check rules` accepts them and `promtool test rules`
passes (no primary serving, replication lag, failover budget, beat, paused too long)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[2] / "docs" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool missing (Debian's prometheus package; dev/bootstrap.sh installs it)")
    return found


def test_promtool_checks_the_alert_rules(promtool):
    out = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=RULES,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 7 rules found" in out.stdout


def test_promtool_unit_tests_of_the_alerts_pass(promtool):
    out = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=RULES,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    tested = (RULES / "alerts_test.yml").read_text()
    for alert in ("CrNoPrimaryServing", "CrReplicationLagHigh", "CrFailoverBudgetSpent",
                  "CrBeatNotTicking", "CrClusterPausedTooLong"):
        assert f"alertname: {alert}" in tested


def test_a_broken_expectation_fails_promtool(promtool, tmp_path):
    # the unit tests can fail: the lag alert expected a minute early is reported
    shutil.copy(RULES / "alerts.yml", tmp_path / "alerts.yml")
    text = (RULES / "alerts_test.yml").read_text().replace("- eval_time: 7m", "- eval_time: 6m30s")
    (tmp_path / "alerts_test.yml").write_text(text)
    out = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "CrReplicationLagHigh" in out.stdout + out.stderr
