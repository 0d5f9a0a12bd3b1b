"""``crctl playbook``: extra vars, progress lines, recap, exit codes for bad input."""

import io
from pathlib import Path

import pytest

from cr_orchestrator.cli import main
from cr_orchestrator.cli.playbook import ProgressPrinter, parse_extra_vars, print_recap
from cr_orchestrator.errors import ConfigError
from cr_orchestrator.act.playbook_events import PlaybookResult


def test_extra_vars_are_read_as_yaml_values(tmp_path):
    more = tmp_path / "more.yml"
    more.write_text("cr_old_primary: mail-a\n")
    assert parse_extra_vars(["cr_epoch=5", "cr_cluster=mail", "cr_check=true", "empty=",
                             "msg=a=b", f"@{more}"]) == {
        "cr_epoch": 5, "cr_cluster": "mail", "cr_check": True, "empty": "", "msg": "a=b",
        "cr_old_primary": "mail-a"}


@pytest.mark.parametrize("bad", ["cr_epoch", "=5", "cr-epoch=5", "@/nonexistent/vars.yml"])
def test_bad_extra_var_syntax_is_a_clear_error(bad):
    with pytest.raises(ConfigError) as err:
        parse_extra_vars([bad])
    assert bad.lstrip("@") in str(err.value)


def test_bad_extra_var_exits_2_with_a_message(capsys, tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    assert main(["playbook", "failover", "-i", str(inventory), "-e", "oops"]) == 2
    assert "-e 'oops': expected KEY=VALUE" in capsys.readouterr().err


def test_unknown_playbook_exits_2(capsys, tmp_path):
    assert main(["playbook", "nope", "-i", str(tmp_path)]) == 2
    assert "playbook 'nope' not found" in capsys.readouterr().err


def test_progress_lines_per_task_and_host():
    fmt = ProgressPrinter.format
    assert fmt({"event": "playbook_on_task_start", "event_data": {"task": "Add the IP"}}) == "  TASK Add the IP"
    assert fmt({"event": "runner_on_ok", "event_data": {"host": "mail-b", "res": {"changed": True,
               "cmd": ["ip", "addr", "add", "198.18.32.100/24"]}}}) == \
        "    changed     mail-b  (ip addr add 198.18.32.100/24)"
    assert fmt({"event": "runner_on_failed", "event_data": {"host": "mail-a", "res": {"msg": "Refused: stale"}}}) == \
        "    FAILED      mail-a: Refused: stale"
    assert fmt({"event": "runner_on_skipped", "event_data": {"host": "mail-a"}}) is None


def test_recap_lists_hosts_and_the_sentence():
    out = io.StringIO()
    print_recap(PlaybookResult(ok=False, status="failed", rc=2, duration_s=1.0, changed={"mail-b": 2},
                               failed_hosts=("mail-a",), unreachable_hosts=(), artifact_dir=Path("/r/1"),
                               summary="failover failed (mail-a: boom) in 1.0 s (2 changes on mail-b)."),
                out=out)
    text = out.getvalue()
    assert "mail-a               changed=0 failed" in text
    assert "mail-b               changed=2" in text
    assert "FAILED: failover failed (mail-a: boom)" in text and "record: /r/1" in text


def test_debug_messages_are_shown():
    assert ProgressPrinter.format({"event": "runner_on_ok", "event_data": {
        "host": "mail-a", "task_action": "ansible.builtin.debug", "res": {"msg": "mail: running"}}}) == \
        "    ok          mail-a: mail: running"
