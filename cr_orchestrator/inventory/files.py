"""The inventory's files: which ones Ansible reads, and what is wrong with one of them.

Ansible is vague, or silent, about mistakes in the files themselves (checked with
ansible-core 2.19): a ``group_vars/`` directory it may not read is skipped without a word
(its variables just vanish), an inventory file it may not read "completely failed to
parse", an empty inventory file is an empty inventory, a file that is not UTF-8 fails with
"surrogates not allowed", and a YAML error in ``group_vars/`` or ``host_vars/`` names
neither the file nor the line. :func:`check_files` runs before Ansible and names the file
instead; :func:`yaml_problems` explains a refusal by Ansible with file, line and column.

Which files count is Ansible's rule: in an inventory directory every file except hidden
ones, ``group_vars``/``host_vars``/``vars_plugins`` and files ending in an ignored
extension (:func:`ignored_suffixes`); ``group_vars``/``host_vars`` next to the inventory
(in the directory, or beside the file) with no extension or ``.yml``/``.yaml``/``.json``.
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# Ansible's own default (INVENTORY_IGNORE_EXTS of ansible-core 2.19), used when neither
# the environment nor the ansible.cfg we run with says otherwise. It does not list .ini.
ANSIBLE_DEFAULT_IGNORED = (".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst",
                           ".orig", ".cfg", ".retry")
ALWAYS_SKIPPED = ("group_vars", "host_vars", "vars_plugins")  # Ansible's IGNORED_ALWAYS
VARS_EXTENSIONS = ("", ".yml", ".yaml", ".json")
YAML_SOURCE_EXTENSIONS = (".yml", ".yaml", ".json")  # an extensionless source may be INI
VAULT_HEADER = b"$ANSIBLE_VAULT"
# Bytes no text file holds (tab, newline, carriage return, form feed and ESC aside).
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")
_COMMENT_OR_MARKER = re.compile(r"^\s*([#;].*|---|\.\.\.)?\s*$")


@dataclass
class FileReport:
    """File-level problems: ``errors`` stop the load, ``warnings`` go with the topology."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class InventoryFiles:
    """The files Ansible reads for one ``-i`` argument (and what it skips)."""

    inventory: Path
    sources: list[Path] = field(default_factory=list)
    vars_files: list[Path] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # skipped for their extension
    unreadable: list[str] = field(default_factory=list)  # problems met while listing

    @property
    def base(self) -> Path:
        return self.inventory if self.inventory.is_dir() else self.inventory.parent


def shown(path: Path) -> str:
    """The path relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def ignored_suffixes(config: Path | None, environ: dict[str, str]) -> tuple[str, ...]:
    """The extensions Ansible skips in an inventory directory, as it will be configured.

    Ansible's precedence: ``ANSIBLE_INVENTORY_IGNORE`` in its environment (``environ``),
    then the ansible.cfg it runs with (``config``), then its default.
    """
    if "ANSIBLE_INVENTORY_IGNORE" in environ:
        return _suffix_list(environ["ANSIBLE_INVENTORY_IGNORE"])
    if config is not None and config.is_file():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(config, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            return ANSIBLE_DEFAULT_IGNORED  # Ansible itself will report a broken ansible.cfg
        for section, key in (("inventory", "ignore_extensions"),
                             ("defaults", "inventory_ignore_extensions")):
            if parser.has_option(section, key):
                return _suffix_list(parser.get(section, key))
    return ANSIBLE_DEFAULT_IGNORED


def _suffix_list(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def list_files(inventory: Path, ignored: tuple[str, ...]) -> InventoryFiles:
    """The inventory sources and vars files Ansible reads for ``inventory``."""
    files = InventoryFiles(inventory)
    if inventory.is_dir():
        _walk_sources(files, inventory, ignored)
    elif inventory.exists():
        files.sources.append(inventory)
    for name in ("group_vars", "host_vars"):
        folder = files.base / name
        if folder.is_dir():
            _walk_vars(files, folder)
    return files


def _listing(files: InventoryFiles, folder: Path) -> list[os.DirEntry] | None:
    """The entries of ``folder`` sorted by name, or ``None`` (and a problem) if unreadable."""
    try:
        with os.scandir(folder) as entries:
            listed = sorted(entries, key=lambda e: e.name)
    except PermissionError:
        files.unreadable.append(f"{shown(folder)}: permission denied: this directory cannot "
                                f"be listed by user {_user()}, so Ansible would skip its files")
        return None
    except OSError as exc:
        files.unreadable.append(f"{shown(folder)}: cannot list this directory: {exc.strerror}")
        return None
    # Listing needs read permission, opening what is inside needs search (x) permission.
    if not os.access(folder, os.X_OK):
        files.unreadable.append(f"{shown(folder)}: permission denied: user {_user()} may list "
                                "this directory but not open the files in it")
        return None
    return listed


def _walk_sources(files: InventoryFiles, folder: Path, ignored: tuple[str, ...]) -> None:
    for entry in _listing(files, folder) or ():
        path = Path(entry.path)
        if entry.name.startswith(".") or entry.name in ALWAYS_SKIPPED:
            continue
        if entry.name.endswith(ignored):
            files.ignored.append(path)
        elif entry.is_dir():
            _walk_sources(files, path, ignored)
        else:
            files.sources.append(path)


def _walk_vars(files: InventoryFiles, folder: Path) -> None:
    for entry in _listing(files, folder) or ():
        path = Path(entry.path)
        if entry.name.startswith(".") or entry.name.endswith("~"):
            continue  # Ansible skips hidden files and backups here
        if entry.is_dir():
            _walk_vars(files, path)
        elif path.suffix in VARS_EXTENSIONS:
            files.vars_files.append(path)


def check_files(inventory: Path, ignored: tuple[str, ...]) -> FileReport:
    """Problems Ansible would report badly or not at all, found before it runs."""
    report = FileReport()
    try:
        inventory.stat()
    except FileNotFoundError:
        return report  # the loader says "no such inventory"
    except PermissionError:
        report.errors.append(f"{shown(inventory)}: permission denied: user {_user()} cannot reach "
                             "it (a directory above it is not searchable)")
        return report
    files = list_files(inventory, ignored)
    report.errors += files.unreadable
    contents = {}
    for path in [*files.sources, *files.vars_files]:
        data, problem = _read(path)
        if problem:
            report.errors.append(problem)
        else:
            contents[path] = data
    _check_empty_sources(report, files, contents)
    for path in files.ignored:
        if path.suffix == ".ini":
            report.warnings.append(
                f"{shown(path)}: ignored: Ansible, as cr-orchestrator runs it, skips files ending "
                "in .ini in an inventory directory (ansible.cfg inventory_ignore_extensions); "
                "name it without an extension (e.g. 'hosts') for it to be read")
    return report


def _read(path: Path) -> tuple[bytes, str | None]:
    """The bytes of ``path``, or a problem naming it: unreadable, binary or not UTF-8."""
    try:
        data = path.read_bytes()
    except PermissionError:
        return b"", f"{shown(path)}: permission denied: user {_user()} cannot read this file"
    except OSError as exc:
        return b"", f"{shown(path)}: cannot read this file: {exc.strerror}"
    if _CONTROL_BYTES.search(data):
        return data, (f"{shown(path)}: is a binary file (it contains control bytes), not "
                      "inventory text; inventory files must be UTF-8 text")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return data, (f"{shown(path)}:{line}:{column}: is not UTF-8 text (byte "
                      f"0x{data[exc.start]:02x}); save the file as UTF-8")
    return data, None


def _check_empty_sources(report: FileReport, files: InventoryFiles, contents: dict) -> None:
    """An empty inventory is an error; one empty file beside others is only odd."""
    empty = [p for p in files.sources if p in contents and _is_empty(contents[p])]
    if files.inventory.is_dir() and not files.sources and not files.unreadable:
        report.errors.append(f"{shown(files.inventory)}: no inventory file in this directory "
                             "(only group_vars/, host_vars/, hidden or ignored files)")
    elif empty and len(empty) == len(files.sources):
        for path in empty:
            report.errors.append(f"{shown(path)}: the inventory file is empty (nothing but "
                                 "blank lines or comments): it defines no hosts")
    else:
        for path in empty:
            report.warnings.append(f"{shown(path)}: the inventory file is empty: Ansible reads "
                                   "nothing from it (harmless if it is a placeholder)")


def _is_empty(data: bytes) -> bool:
    text = data.decode("utf-8", errors="replace")
    return all(_COMMENT_OR_MARKER.match(line) for line in text.splitlines())


def yaml_problems(inventory: Path, ignored: tuple[str, ...]) -> list[str]:
    """Each YAML file of the inventory that Ansible cannot read, with line and column.

    Used when Ansible refused the inventory: its message for a bad ``group_vars`` file
    names no file, and points at the place where the parser gave up, not where the
    mistake began (we say both).
    """
    files = list_files(inventory, ignored)
    yaml_sources = [p for p in files.sources if p.suffix in YAML_SOURCE_EXTENSIONS]
    problems = []
    for path in [*yaml_sources, *files.vars_files]:
        problem = _yaml_problem(path, vars_file=path in files.vars_files)
        if problem:
            problems.append(problem)
    return problems


def _yaml_problem(path: Path, *, vars_file: bool) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None  # check_files has reported it
    if data.lstrip().startswith(VAULT_HEADER):
        return None  # whole-file vault: Ansible decrypts it, we cannot look inside
    text = data.decode("utf-8", errors="replace")
    try:
        # compose, not load: the syntax is checked without constructing !vault/!unsafe tags
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        return _marked(path, exc)
    except yaml.YAMLError as exc:
        return f"{shown(path)}: YAML syntax error: {exc}"
    if len(nodes) > 1:
        second = nodes[1].start_mark
        return (f"{shown(path)}:{second.line + 1}:{second.column + 1}: a second YAML document "
                "starts here ('---'); Ansible reads one document per file")
    if vars_file and nodes and not isinstance(nodes[0], yaml.MappingNode):
        kind = {yaml.SequenceNode: "a list", yaml.ScalarNode: "a single value"}.get(
            type(nodes[0]), "not a mapping")
        mark = nodes[0].start_mark
        return (f"{shown(path)}:{mark.line + 1}:{mark.column + 1}: is {kind}; a vars file must "
                "be a mapping of variable names to values (name: value)")
    return None


def _marked(path: Path, exc: yaml.MarkedYAMLError) -> str:
    """``FILE:LINE:COLUMN: YAML syntax error: problem (while ... that starts at line L, column C)``."""
    mark = exc.problem_mark or exc.context_mark
    where = f"{shown(path)}:{mark.line + 1}:{mark.column + 1}" if mark else shown(path)
    message = f"{where}: YAML syntax error: {exc.problem or exc.context}"
    starts = exc.context_mark
    if exc.context and starts and (starts.line, starts.column) != (mark.line, mark.column):
        message += f" ({exc.context} that starts at line {starts.line + 1}, column {starts.column + 1})"
    return message


def readable_problem(path: Path, what: str) -> str | None:
    """``permission denied`` naming ``path`` if we cannot open it, else ``None``."""
    try:
        with path.open("rb"):
            return None
    except PermissionError:
        return f"{shown(path)}: permission denied: user {_user()} cannot read this {what}"
    except OSError:
        return None  # missing or stranger: the caller's own checks say so


def _user() -> str:
    """Who we run as, for permission messages (root reads everything, others may not)."""
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())
