"""Pure parts of the playbook runner, and its stop sequence against a real process."""

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cr_orchestrator.act import playbook_runner as pr
from cr_orchestrator.errors import ConfigError


def test_playbook_names_resolve_to_files_of_playbooks_dir():
    for name in ("failover", "switchover", "promote", "demote", "service", "switch_ip", "switch_dns"):
        assert pr.resolve_playbook(name) == pr.PLAYBOOK_DIR / f"{name}.yml"
    assert pr.resolve_playbook("failover.yml") == pr.PLAYBOOK_DIR / "failover.yml"


def test_a_playbook_path_is_taken_as_is(tmp_path):
    playbook = tmp_path / "mine.yml"
    playbook.write_text("- hosts: all\n  tasks: []\n")
    assert pr.resolve_playbook(str(playbook)) == playbook.resolve()


def test_unknown_playbook_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        pr.resolve_playbook("failovr")
    assert "'failovr' not found" in str(err.value) and "failover" in str(err.value)


@pytest.mark.parametrize("name", ["ansible_password", "cr_dns_key_secret", "api_token", "TSIG_SECRET"])
def test_secrets_are_refused_as_extra_vars(name):
    with pytest.raises(ConfigError) as err:
        pr.check_extravars({"cr_epoch": 3, name: "hunter2"})
    assert name in str(err.value) and "hunter2" not in str(err.value)


def test_bad_extra_var_names_are_refused():
    with pytest.raises(ConfigError, match="not a valid variable name"):
        pr.check_extravars({"cr-epoch": 3})


def test_command_line_has_check_and_vault_file(tmp_path):
    vault = tmp_path / "vault-pass"
    vault.write_text("x")
    assert pr.build_cmdline(check=False, vault_password_file=None) == ""
    assert pr.build_cmdline(check=True, vault_password_file=str(vault)) == \
        f"--check --vault-password-file {vault.resolve()}"
    with pytest.raises(ConfigError, match="does not exist"):
        pr.build_cmdline(check=False, vault_password_file=str(tmp_path / "missing"))


def test_environment_points_at_our_config_and_roles():
    env = pr.ansible_env()
    assert env["ANSIBLE_CONFIG"] == str(pr.REPO_ROOT / "ansible.cfg")
    assert env["ANSIBLE_ROLES_PATH"] == str(pr.REPO_ROOT / "roles")
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)


def test_playbooks_ride_on_the_probes_ssh_masters(monkeypatch, tmp_path):
    # same directory and the same %C name as the probes' ssh: the connection to a new
    # primary is already open when a failover starts
    from cr_orchestrator.observe.linux_host import default_control_dir

    monkeypatch.setenv("CR_SSH_CONTROL_DIR", str(tmp_path / "cp"))
    assert pr.ansible_env()["ANSIBLE_SSH_CONTROL_PATH_DIR"] == str(tmp_path / "cp")
    assert default_control_dir() == tmp_path / "cp"
    cfg = (pr.REPO_ROOT / "ansible.cfg").read_text()
    assert "control_path = %(directory)s/%%C" in cfg


def test_artifacts_root_follows_cr_artifacts(monkeypatch, tmp_path):
    monkeypatch.setenv("CR_ARTIFACTS", str(tmp_path / "runs"))
    assert pr.artifacts_root() == (tmp_path / "runs").resolve()
    monkeypatch.delenv("CR_ARTIFACTS")
    assert pr.artifacts_root() == Path("/var/lib/cr-orchestrator/runs")


def test_bad_arguments_fail_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        pr.run_playbook(playbook="failover", inventory=tmp_path / "nope.yml")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    with pytest.raises(ConfigError, match="timeout_s must be positive"):
        pr.run_playbook(playbook="failover", inventory=inventory, timeout_s=0)


def _sleeper(trap_term: bool):
    """A stand-in for ansible-playbook: a real process that may take its time to stop."""
    code = ("import signal, time\n"
            + ("signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.3), exit(0)))\n" if trap_term else "")
            + "time.sleep(60)\n")
    return subprocess.Popen([sys.executable, "-c", code])


def test_stopper_waits_until_cancelled_then_sends_sigterm_first():
    proc = _sleeper(trap_term=False)
    try:
        cancel = threading.Event()
        stopper = pr._Stopper(deadline=time.monotonic() + 60, cancel=cancel)
        stopper.pid = proc.pid
        assert stopper() is False and proc.poll() is None  # nothing asked yet
        cancel.set()
        assert stopper() is False  # SIGTERM sent, runner must not kill yet
        assert proc.wait(timeout=5) == -signal.SIGTERM
        assert stopper.reason == "canceled"
        assert stopper() is True  # ansible-playbook is gone: runner may clean up
    finally:
        proc.kill()


def test_stopper_gives_a_slow_process_its_grace_then_lets_runner_kill(monkeypatch):
    monkeypatch.setattr(pr, "TERM_GRACE_S", 0.2)
    proc = subprocess.Popen([sys.executable, "-c",
                             "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)"])
    try:
        time.sleep(0.2)  # let it install its handler
        stopper = pr._Stopper(deadline=time.monotonic() - 1, cancel=None)
        stopper.pid = proc.pid
        assert stopper() is False and stopper.reason == "timeout"
        assert stopper() is False  # still within the grace period, still alive
        time.sleep(0.25)
        assert proc.poll() is None and stopper() is True  # grace over: runner kills the group
    finally:
        proc.kill()
        proc.wait()
