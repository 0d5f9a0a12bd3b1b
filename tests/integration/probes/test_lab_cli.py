"""``crctl probe`` against the lab inventory: a table, exit 0 even with a service down."""

from __future__ import annotations

import pytest

from cr_orchestrator.cli import main

pytestmark = pytest.mark.lab


def test_probe_prints_a_table_and_reports_a_stopped_service(lab, capsys):
    # mail-b's service runs or not depending on the lab's state (manual start: stopped
    # after `lab up`; an earlier test may have promoted it): ask the host itself
    b_serves = lab.run_on("mail-b", [lab.mailctl, "status"]).returncode == 0
    lab.fail("mail-a", "service")
    assert main(["probe", "-i", lab.inventory_path, "--timeout", "1.5"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["HOST", "VANTAGE", "SUBJECT", "HEALTH", "LATENCY", "ERROR"]
    rows = {(r.split()[0], r.split()[1], r.split()[2]): r.split()[3] for r in lines[1:]}
    assert rows[("mail-a", "orchestrator", "host")] == "ok"
    assert rows[("mail-a", "orchestrator", "service:mail")] == "down"
    smtp_a = f"check:smtp:25@{lab.hosts['mail-a'].public}"
    assert rows[("mail-a", "orchestrator", smtp_a)] == "unreachable"  # refused
    assert rows[("mail-a", "mail-b", smtp_a)] == "unreachable"  # the peer agrees
    assert rows[("mail-b", "orchestrator", "service:mail")] == ("ok" if b_serves else "down")


def test_probe_of_an_unknown_host_is_bad_input(lab, capsys):
    assert main(["probe", "-i", lab.inventory_path, "no-such-host"]) == 2
    assert "host 'no-such-host' is not in" in capsys.readouterr().err
