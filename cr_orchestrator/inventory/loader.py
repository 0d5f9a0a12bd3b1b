"""Read an inventory with the real ``ansible-inventory``, decrypt vault values, locate files.

Why a subprocess rather than Ansible's Python API: see /work/shared/NOTES.md ("Reading the
inventory") — the API omits group_vars/host_vars unless used just so, merges a stray
``group_vars/`` from the current directory, caches host_vars in a long-lived process and
only warns about unparsable sources. ``ansible-inventory --list --export`` has none of
those problems and is what Ansible itself will see when it runs our playbooks.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from cr_orchestrator.content import content_root
from cr_orchestrator.runtime.config import child_environ
from cr_orchestrator.errors import ConfigError
from cr_orchestrator.inventory.files import (
    FileReport,
    check_files,
    ignored_suffixes,
    list_files,
    readable_problem,
    shown,
    yaml_problems,
)
from cr_orchestrator.inventory.values import VAULT_KEY, Locate, Problems, Where
from cr_orchestrator.model import Secret

TIMEOUT_S = 60.0
VARS_SUFFIXES = ("", ".yml", ".yaml", ".json")
ROLES_DIR = content_root() / "roles"
# The ansible.cfg our playbook runs use (act/playbook_runner.py): the inventory is read
# with it too, so that validate sees the files the playbooks will see (it skips .ini
# files in an inventory directory, which Ansible's own default would read).
ANSIBLE_CFG = content_root() / "ansible.cfg"
_SECRET_LINE = re.compile(r"password|passwd|secret|_pass\b|token|\$ANSIBLE_VAULT", re.I)


def ansible_inventory_command(inventory: Path, *, vault_password_file: Path | None) -> list[str]:
    """The command line we run (pure, so tests can check it)."""
    exe = Path(sys.executable).with_name("ansible-inventory")
    cmd = [str(exe), "-i", str(inventory.resolve()), "--list", "--export"]
    if vault_password_file is not None:
        cmd += ["--vault-password-file", str(vault_password_file.resolve())]
    return cmd


def run_ansible_inventory(inventory: Path, *, vault_password_file: Path | None = None) -> dict:
    """The ``--list --export`` JSON of ``inventory``; :class:`ConfigError` if Ansible refuses it."""
    if not inventory.exists():
        raise ConfigError(f"{inventory}: no such inventory file or directory")
    if vault_password_file is not None and not vault_password_file.is_file():
        raise ConfigError(f"{vault_password_file}: no such vault password file")
    if vault_password_file is not None and (
            problem := readable_problem(vault_password_file, "vault password file")):
        raise ConfigError(problem)
    cmd = ansible_inventory_command(inventory, vault_password_file=vault_password_file)
    env = child_environ(**ansible_inventory_environ())
    # An empty working directory: no stray ./group_vars or ./ansible.cfg gets merged in.
    with tempfile.TemporaryDirectory(prefix="cr-inventory-") as cwd:
        try:
            done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=TIMEOUT_S, check=False)
        except FileNotFoundError as exc:
            raise ConfigError(f"{cmd[0]}: not found; install the 'ansible' package in this "
                              "environment") from exc
        except subprocess.TimeoutExpired as exc:
            raise ConfigError(f"{inventory}: ansible-inventory took more than {TIMEOUT_S:g}s") from exc
    if done.returncode != 0:
        raise ConfigError(_ansible_errors(inventory, done.stderr, vault_password_file))
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{inventory}: ansible-inventory printed no valid JSON ({exc})") from exc


def ansible_inventory_environ() -> dict[str, str]:
    """What we set for ``ansible-inventory`` (on top of our own environment)."""
    env = {
        # Any file Ansible cannot parse is an error: with only UNPARSED_FAILED, one bad file
        # in an inventory directory is a warning and its hosts silently disappear.
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
        "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_DEPRECATION_WARNINGS": "False",
    }
    if ANSIBLE_CFG.is_file():
        env["ANSIBLE_CONFIG"] = str(ANSIBLE_CFG)
    return env


def inventory_ignored_suffixes() -> tuple[str, ...]:
    """Extensions skipped in an inventory directory, as our ``ansible-inventory`` runs."""
    return ignored_suffixes(ANSIBLE_CFG if ANSIBLE_CFG.is_file() else None,
                            child_environ(**ansible_inventory_environ()))


def check_inventory_files(inventory: Path) -> FileReport:
    """File-level problems of ``inventory`` (unreadable, empty, binary...), before Ansible runs."""
    return check_files(inventory, inventory_ignored_suffixes())


def _ansible_errors(inventory: Path, stderr: str, vault_password_file: Path | None) -> list[str]:
    lines = list(dict.fromkeys(ln.strip() for ln in stderr.splitlines() if ln.strip()))
    text = " ".join(lines)
    problems = []
    if "no vault secrets" in text and vault_password_file is None:
        problems.append(f"{inventory}: a file of this inventory is vault-encrypted and no vault "
                        "password was given (use --vault-password-file)")
    elif "Decryption failed" in text:
        problems.append(f"{inventory}: the vault password does not decrypt this inventory's "
                        "encrypted files")
    elif explained := yaml_problems(inventory, inventory_ignored_suffixes()):
        # Ansible's own text names no group_vars file and points where its parser gave up;
        # its text is kept only when it is about something else than YAML.
        if "YAML" in text or "Could not process" in text:
            return explained
        problems += explained
    # Ansible quotes the offending source line; hide any that might hold a secret.
    quoted = ["<line hidden: it may contain a secret>" if _SECRET_LINE.search(ln) else ln
              for ln in lines]
    problems.append(f"{inventory}: ansible-inventory refused the inventory: " + " | ".join(quoted[:12]))
    return problems


def decrypt_vault_values(data: dict, *, vault_password_file: Path | None,
                         locate: Locate | None = None) -> dict:
    """``data`` with every inline ``!vault`` value replaced by a decrypted :class:`Secret`.

    Without a password file the values stay as they are; the model builder then names each
    encrypted variable that is needed. A value the password cannot decrypt is an error.
    """
    if vault_password_file is None:
        return data
    vault = _vault_lib(vault_password_file)
    problems = Problems(locate=locate or (lambda kind, name, var: "inventory"))

    def walk(value: object, where: Where, trail: str) -> object:
        if isinstance(value, dict) and VAULT_KEY in value:
            try:
                return Secret(vault.decrypt(value[VAULT_KEY]).decode("utf-8"))
            except Exception:  # noqa: BLE001 - Ansible raises several types; none carry the secret
                problems.error(where, trail, "the vault password does not decrypt this value")
                return value
        if isinstance(value, dict):
            return {k: walk(v, where, f"{trail}.{k}" if trail else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, where, f"{trail}[{i}]") for i, v in enumerate(value)]
        return value

    result = {}
    for name, body in data.items():
        if name == "_meta":
            hostvars = {h: walk(v, Where("host", h), "")
                        for h, v in (body.get("hostvars") or {}).items()}
            result[name] = {**body, "hostvars": hostvars}
        elif isinstance(body, dict) and "vars" in body:
            result[name] = {**body, "vars": walk(body["vars"], Where("group", name), "")}
        else:
            result[name] = body
    if problems.errors:
        raise ConfigError(problems.errors)
    return result


def _vault_lib(vault_password_file: Path):
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import VaultLib, get_file_vault_secret

    secret = get_file_vault_secret(filename=str(vault_password_file), vault_id="default",
                                   loader=DataLoader())
    secret.load()
    return VaultLib([("default", secret)])


class FileLocator:
    """Finds which file defines a variable of a group or host, for error messages.

    Looks in ``group_vars/<group>``/``host_vars/<host>`` next to the inventory (file, or
    directory of files), then in the inventory sources; the first one whose text mentions
    the variable wins. Whole-file vault-encrypted files cannot be searched: they are named
    when nothing else mentions the variable.
    """

    def __init__(self, inventory: Path) -> None:
        self.inventory = inventory
        self.base = inventory if inventory.is_dir() else inventory.parent
        # the same files Ansible reads (and the same extensions skipped)
        self.sources = list_files(inventory, inventory_ignored_suffixes()).sources
        self._texts: dict[Path, str] = {}

    def __call__(self, kind: str, name: str, var: str) -> str:
        vars_files = self._vars_files(kind, name)
        token = re.compile(rf"(?<![\w-]){re.escape(var)}(?![\w-])")
        for path in vars_files:
            if token.search(self._text(path)):
                return shown(path)
        for path in self.sources:
            text = self._text(path)
            if token.search(text) and re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text):
                return shown(path)
        return shown((vars_files or self.sources or [self.inventory])[0])

    def _vars_files(self, kind: str, name: str) -> list[Path]:
        root = self.base / f"{kind}_vars"
        files = []
        for suffix in VARS_SUFFIXES:
            path = root / f"{name}{suffix}"
            if path.is_file():
                files.append(path)
            elif path.is_dir():
                files.extend(sorted(f for f in path.rglob("*") if f.is_file()))
        return files

    def _text(self, path: Path) -> str:
        if path not in self._texts:
            try:
                self._texts[path] = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                self._texts[path] = ""
        return self._texts[path]


def role_variables(roles_dir: Path = ROLES_DIR) -> frozenset[str]:
    """Public ``cr_*`` variables of our roles (``defaults/main.yml``): inventory may set them."""
    import yaml

    names: set[str] = set()
    for defaults in sorted(roles_dir.glob("*/defaults/main.yml")):
        try:
            data = yaml.safe_load(defaults.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue  # a broken role is the playbook runner's error to report, not ours
        names |= {k for k in data if isinstance(k, str) and k.startswith("cr_")}
    return frozenset(names)
