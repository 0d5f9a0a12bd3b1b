"""Run the project's playbooks through ansible-runner, and say plainly what happened.

Every run gets a fresh ``private_data_dir`` (runner writes ``env/`` files only when they
are absent, so a reused dir would replay stale extra vars) and leaves its record, the
events, under an artifacts root (``$CR_ARTIFACTS``, else ``/var/lib/cr-orchestrator/runs``)
as ``<root>/<ident>/``. Cancellation and the timeout first send SIGTERM to
ansible-playbook (it forwards the signal to its workers, which ansible-core 2.19 puts in
their own sessions), wait, and only then let runner SIGKILL the process group: a bare
runner cancel would leave the in-flight workers running.

Secrets (WinRM passwords, TSIG keys) belong in the (vaulted) inventory, never in extra
vars, because runner writes extra vars to disk: :func:`run_playbook` refuses extra vars
that look like secrets.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from cr_orchestrator.procs import pid_alive
from cr_orchestrator.content import content_root
from cr_orchestrator.runtime.config import runtime, search_path
from cr_orchestrator.errors import ConfigError, PlaybookError
from cr_orchestrator.act.playbook_events import PlaybookResult, RunRecord, summarize

__all__ = ["PlaybookResult", "run_playbook", "resolve_playbook", "check_extravars"]

REPO_ROOT = content_root()
PLAYBOOK_DIR = REPO_ROOT / "playbooks"
ANSIBLE_CFG = REPO_ROOT / "ansible.cfg"
STOP_RUN = PLAYBOOK_DIR / "includes" / "stop_run.yml"
DEFAULT_ARTIFACTS = Path("/var/lib/cr-orchestrator/runs")
TERM_GRACE_S = 5.0  # how long ansible-playbook gets to stop its workers after SIGTERM
_KEPT_ENV = ("ANSIBLE_", "RUNNER_", "PATH", "PYTHONPATH", "LANG", "LC_")
POLL_S = 0.1  # how often runner asks whether to cancel (its default is 5 s)

# Extra var names that must never carry a secret (they are written to disk by runner).
_SECRET_NAME = re.compile(r"(password|passwd|secret|token|private_key|key_secret)", re.I)
_EXTRAVAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def resolve_playbook(playbook: str) -> Path:
    """A name of ``playbooks/`` (``failover`` or ``failover.yml``) or a path to a playbook."""
    candidates = [PLAYBOOK_DIR / playbook, PLAYBOOK_DIR / f"{playbook}.yml"]
    if os.sep in playbook or playbook.endswith((".yml", ".yaml")):
        candidates.insert(0, Path(playbook))
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    known = ", ".join(sorted(p.stem for p in PLAYBOOK_DIR.glob("*.yml")))
    raise ConfigError(f"playbook {playbook!r} not found: give a path or one of {known}")


def check_extravars(extravars: Mapping[str, object]) -> dict[str, object]:
    """Copy of ``extravars`` after refusing bad names and anything that looks secret."""
    problems = []
    for name in extravars:
        if not isinstance(name, str) or not _EXTRAVAR_NAME.match(name):
            problems.append(f"extra var {name!r} is not a valid variable name")
        elif _SECRET_NAME.search(name):
            problems.append(f"extra var {name!r} looks like a secret: secrets go in the "
                            "(vaulted) inventory, never in extra vars (runner writes them to disk)")
    if problems:
        raise ConfigError(problems)
    return dict(extravars)


def artifacts_root() -> Path:
    """Where run records go: ``$CR_ARTIFACTS``, else /var/lib/cr-orchestrator/runs."""
    return runtime().artifacts_dir.resolve()


def ansible_env() -> dict[str, str]:
    """Environment of ansible-playbook: our ansible.cfg (fast defaults: forks 50, no facts,
    pipelining, ControlPersist) and its roles."""
    env = {
        "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
        "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles"),
        "ANSIBLE_HOST_KEY_CHECKING": runtime().ansible_host_key_checking,
        "ANSIBLE_NOCOLOR": "1",
        # The probes' ssh master connections (same ControlPath %C: same address, port and
        # user): they are renewed every round, so a failover playbook finds its connection
        # to the new primary open instead of paying a handshake on the outage's clock
        # (Ansible's own masters expire 10 minutes after the last run).
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(_probe_control_dir()),
        # ansible-playbook of this Python's environment (the venv) first.
        "PATH": search_path(Path(sys.executable).parent),
    }
    return env


def _probe_control_dir() -> Path:
    from cr_orchestrator.observe.linux_host import default_control_dir

    return default_control_dir()


def build_cmdline(*, check: bool, vault_password_file: str | None) -> str:
    """Extra ansible-playbook arguments (a pure function; runner appends them)."""
    args = []
    if check:
        args.append("--check")
    if vault_password_file:
        path = Path(vault_password_file)
        if not path.is_file():
            raise ConfigError(f"vault password file {vault_password_file} does not exist")
        args += ["--vault-password-file", str(path.resolve())]
    return " ".join(_quote(a) for a in args)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


class _Stopper:
    """Runner's cancel callback: on cancel or timeout, SIGTERM ansible-playbook first,
    give it ``TERM_GRACE_S`` to stop its workers, then let runner kill the group."""

    def __init__(self, *, deadline: float, cancel: threading.Event | None) -> None:
        self.deadline = deadline
        self.cancel = cancel
        self.pid: int | None = None
        self.reason: str | None = None  # "canceled" | "timeout"
        self._term_sent_at: float | None = None

    def __call__(self) -> bool:
        now = time.monotonic()
        if self.reason is None:
            if self.cancel is not None and self.cancel.is_set():
                self.reason = "canceled"
            elif now >= self.deadline:
                self.reason = "timeout"
            else:
                return False
        if self._term_sent_at is None:
            self._term_sent_at = now
            if self.pid and pid_alive(self.pid):
                os.kill(self.pid, signal.SIGTERM)
                return False
            return True
        return not (self.pid and pid_alive(self.pid)) or now - self._term_sent_at >= TERM_GRACE_S


def run_playbook(*, playbook: str, inventory: str | Path,
                 extravars: Mapping[str, object] | None = None, limit: str | None = None,
                 check: bool = False, timeout_s: float = 120,
                 on_event: Callable[[dict], None] | None = None,
                 cancel: threading.Event | None = None,
                 vault_password_file: str | None = None,
                 mark_remote: bool | None = None) -> PlaybookResult:
    """Run ``playbook`` (a name of playbooks/ or a path) against ``inventory``.

    Blocks until the run ends, times out (``timeout_s``) or ``cancel`` is set; either way
    ansible-playbook and its workers are gone when this returns. ``on_event`` gets every
    runner event (from runner's thread; keep it quick). Raises :class:`ConfigError` for
    bad arguments; a failed, refused, timed-out or cancelled run is a result, not an error.

    ``mark_remote`` (default: only for the playbooks of playbooks/) marks every remote
    command of the run so that a cancelled run can stop what it left running on its
    hosts; it sets ``ansible_shell_executable``, which the shell module also uses unless a
    task names its ``executable``.
    """
    path, inventory_path, variables, cmdline = _checked_inputs(
        playbook=playbook, inventory=inventory, extravars=extravars, timeout_s=timeout_s,
        check=check, vault_password_file=vault_password_file)
    if cancel is not None and cancel.is_set():
        raise PlaybookError(f"not starting playbook {playbook}: already cancelled")
    root = artifacts_root()
    root.mkdir(parents=True, exist_ok=True)
    ident = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{path.stem}-{uuid.uuid4().hex[:8]}"
    if path.is_relative_to(PLAYBOOK_DIR) if mark_remote is None else mark_remote:
        # Mark every remote command of this run (see stop_left_overs). By default only for
        # our playbooks: every shell task of our roles names its executable.
        variables.setdefault("ansible_shell_executable", f"/usr/bin/env CR_RUN={ident} /bin/sh")
    private_dir = Path(tempfile.mkdtemp(prefix="cr-run-"))
    started = time.monotonic()
    stopper = _Stopper(deadline=started + timeout_s, cancel=cancel)
    record = RunRecord()
    try:
        runner = _run(path=path, inventory=inventory_path, variables=variables, limit=limit,
                      cmdline=cmdline, ident=ident, root=root, private_dir=private_dir,
                      stopper=stopper, record=record, on_event=on_event)
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)
        _scrub_command_file(root / ident / "command")
    result = summarize(record=record, playbook=path.stem, runner_status=runner.status,
                       rc=runner.rc if runner.rc is not None else -1, stop_reason=stopper.reason,
                       timeout_s=timeout_s, duration_s=time.monotonic() - started,
                       artifact_dir=root / ident, ident=ident)
    if stopper.reason and record.current_hosts and "ansible_shell_executable" in variables \
            and path != STOP_RUN:
        result = stop_left_overs(result=result, hosts=record.current_hosts, inventory=inventory_path,
                                 vault_password_file=vault_password_file)
    return result


def _checked_inputs(*, playbook: str, inventory: str | Path,
                    extravars: Mapping[str, object] | None, timeout_s: float, check: bool,
                    vault_password_file: str | None) -> tuple[Path, Path, dict, str]:
    """Every argument checked before anything runs: ConfigError names the bad one."""
    path = resolve_playbook(playbook)
    inventory_path = Path(inventory).resolve()
    if not inventory_path.exists():
        raise ConfigError(f"inventory {inventory} does not exist")
    if timeout_s <= 0:
        raise ConfigError(f"timeout_s must be positive, got {timeout_s}")
    variables = check_extravars(extravars or {})
    cmdline = build_cmdline(check=check, vault_password_file=vault_password_file)
    return path, inventory_path, variables, cmdline


def stop_left_overs(*, result: PlaybookResult, hosts: list[str], inventory: Path,
                    vault_password_file: str | None) -> PlaybookResult:
    """Stop what a cancelled or timed-out run left running on ``hosts``.

    Killing ansible-playbook ends its ssh sessions, but sshd does not signal the commands
    they ran (no tty): a module busy on a host would run on. Every remote command of a
    run carries ``CR_RUN=<ident>`` in its environment; a short second run stops those.
    """
    cleanup = run_playbook(playbook=str(STOP_RUN), inventory=inventory, timeout_s=30,
                           extravars={"cr_stop_run": result.ident,
                                      "cr_stop_hosts": ",".join(sorted(set(hosts)))},
                           vault_password_file=vault_password_file)
    word = "stopped its left-overs on" if cleanup.ok else "could not stop its left-overs on"
    summary = f"{result.summary[:-1]}; {word} {', '.join(sorted(set(hosts)))}."
    return dataclasses.replace(result, summary=summary)


def _scrub_command_file(path: Path) -> None:
    """Runner records the whole environment of the run in ``command``; the worker's
    environment may hold secrets (a Redis URL with a password...). Keep only Ansible's."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    env = data.get("env") or {}
    data["env"] = {k: v for k, v in env.items() if k.startswith(_KEPT_ENV)}
    path.write_text(json.dumps(data), encoding="utf-8")


def _run(*, path: Path, inventory: Path, variables: dict, limit: str | None, cmdline: str,
         ident: str, root: Path, private_dir: Path, stopper: _Stopper, record: RunRecord,
         on_event: Callable[[dict], None] | None):
    import ansible_runner

    def handle(event: dict) -> bool:
        if stopper.pid is None and event.get("pid"):
            stopper.pid = int(event["pid"])
        record.add(event)
        if on_event is not None:
            on_event(event)
        return True  # keep every event in the artifacts: the run's record

    kwargs = dict(
        private_data_dir=str(private_dir), playbook=str(path), inventory=str(inventory),
        extravars=variables, ident=ident, artifact_dir=str(root), envvars=ansible_env(),
        project_dir=str(path.parent), event_handler=handle, cancel_callback=stopper,
        quiet=True, settings={"pexpect_timeout": POLL_S, "suppress_ansible_output": True},
        rotate_artifacts=0,
    )
    if limit:
        kwargs["limit"] = limit
    if cmdline:
        kwargs["cmdline"] = cmdline
    try:
        thread, runner = ansible_runner.run_async(**kwargs)
        thread.join()
    except Exception as exc:  # runner's own errors (bad config, missing binary)
        raise PlaybookError(f"could not run playbook {path.name}: {exc}") from exc
    return runner
