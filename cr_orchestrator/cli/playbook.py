"""``crctl playbook NAME -i INV [-l LIMIT] [-e KEY=VALUE ...] [--check]``: run a playbook
ad hoc, with live progress per task and host and the final recap.

Exit 0 when the run succeeded, 1 when it failed, was refused, timed out or was
interrupted (Ctrl-C cancels it cleanly), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import yaml

from cr_orchestrator.errors import ConfigError

_STATUS_WORDS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "FAILED",
    "runner_on_unreachable": "UNREACHABLE",
    "runner_item_on_failed": "FAILED",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "playbook", help="run one of the playbooks (failover, switch_ip, service...) ad hoc",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", metavar="NAME", help="a playbook of playbooks/ (e.g. failover) or a path")
    parser.add_argument("-i", "--inventory", required=True, help="inventory file or directory")
    parser.add_argument("-l", "--limit", help="limit the run to these hosts (Ansible pattern)")
    parser.add_argument("-e", "--extra-var", dest="extra_vars", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="extra var (value read as YAML: 5 is a number); @FILE reads a YAML file;"
                             " repeatable. Never pass secrets here: they belong in the inventory")
    parser.add_argument("--check", action="store_true", help="report what would change, change nothing")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="stop the run after this long (default 300)")
    parser.add_argument("--vault-password-file", help="file holding the inventory's vault password")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the recap")
    parser.set_defaults(handler=run)


def parse_extra_vars(items: list[str]) -> dict[str, object]:
    """``["cr_epoch=5", "cr_cluster=mail", "@vars.yml"]`` → a dict; bad syntax → ConfigError."""
    result: dict[str, object] = {}
    problems = []
    for item in items:
        if item.startswith("@"):
            result.update(_load_vars_file(Path(item[1:]), problems))
            continue
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not key.isidentifier():
            problems.append(f"-e {item!r}: expected KEY=VALUE (e.g. -e cr_epoch=5) or @FILE")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        result[key] = value if value is not None else ""
    if problems:
        raise ConfigError(problems)
    return result


def _load_vars_file(path: Path, problems: list[str]) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        problems.append(f"-e @{path}: cannot read it ({exc.strerror})")
        return {}
    except yaml.YAMLError as exc:
        problems.append(f"-e @{path}: not valid YAML ({exc.__class__.__name__})")
        return {}
    if not isinstance(data, dict):
        problems.append(f"-e @{path}: expected a mapping of variables")
        return {}
    return data


class ProgressPrinter:
    """Prints one line per task and one per host result, as events arrive."""

    def __init__(self, out=sys.stdout, quiet: bool = False) -> None:
        self.out = out
        self.quiet = quiet
        self._lock = threading.Lock()

    def __call__(self, event: dict) -> None:
        if self.quiet:
            return
        line = self.format(event)
        if line:
            with self._lock:
                print(line, file=self.out, flush=True)

    @staticmethod
    def format(event: dict) -> str | None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            return f"PLAY  {data.get('play', '')}"
        if kind == "playbook_on_task_start":
            return f"  TASK {data.get('task', '')}"
        host = data.get("host", "")
        res = data.get("res") if isinstance(data.get("res"), dict) else {}
        if kind == "runner_on_ok":
            word = "changed" if res.get("changed") else "ok"
            if data.get("task_action") in ("debug", "ansible.builtin.debug") and res.get("msg"):
                return f"    {word:<11} {host}: {' '.join(str(res['msg']).split())[:300]}"
            return f"    {word:<11} {host}{_detail(res) if word == 'changed' else ''}"
        if kind in ("runner_on_failed", "runner_on_unreachable"):
            word = "ignored" if data.get("ignore_errors") else _STATUS_WORDS[kind]
            message = " ".join(str(res.get("msg") or res.get("stderr") or "").split())[:300]
            return f"    {word:<11} {host}: {message}"
        return None


def _detail(res: dict) -> str:
    cmd = res.get("cmd")
    if isinstance(cmd, list):
        cmd = " ".join(str(c) for c in cmd)
    return f"  ({' '.join(str(cmd).split())[:120]})" if cmd else ""


def print_recap(result, out=sys.stdout) -> None:
    print("RECAP", file=out)
    hosts = sorted(set(result.changed) | set(result.failed_hosts) | set(result.unreachable_hosts))
    for host in hosts:
        flags = [f"changed={result.changed.get(host, 0)}"]
        if host in result.failed_hosts:
            flags.append("failed")
        if host in result.unreachable_hosts:
            flags.append("unreachable")
        print(f"  {host:<20} {' '.join(flags)}", file=out)
    print(f"{result.status.upper()}: {result.summary}", file=out)
    print(f"record: {result.artifact_dir}", file=out)


def run(args: argparse.Namespace) -> int:
    from cr_orchestrator.act.playbook_runner import resolve_playbook, run_playbook

    extravars = parse_extra_vars(args.extra_vars)
    resolve_playbook(args.name)  # fail fast with the list of known playbooks
    cancel = threading.Event()
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["result"] = run_playbook(
                playbook=args.name, inventory=args.inventory, extravars=extravars,
                limit=args.limit, check=args.check, timeout_s=args.timeout,
                on_event=ProgressPrinter(quiet=args.quiet), cancel=cancel,
                vault_password_file=args.vault_password_file)
        except BaseException as exc:  # handed to the main thread, raised there
            outcome["error"] = exc

    thread = threading.Thread(target=work, name="crctl-playbook", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        print("interrupted: stopping ansible-playbook...", file=sys.stderr)
        cancel.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    result = outcome["result"]
    print_recap(result)
    return 0 if result.ok else 1
