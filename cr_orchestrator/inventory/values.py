"""Small checked converters for inventory values, and the problem collector.

Every converter records a problem naming the file, group or host, and variable at fault
and returns ``None`` instead of raising, so one pass over an inventory reports every
mistake at once. Secret variables are never quoted in a message.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cr_orchestrator.model import Secret

VAULT_KEY = "__ansible_vault"  # how ansible-inventory prints an inline !vault value

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}

# locate(kind, name, variable) -> the file that defines it (inventory, group_vars/X, ...)
Locate = Callable[[str, str, str], str]


@dataclass(frozen=True)
class Where:
    """The inventory object a variable belongs to: ``group`` or ``host`` and its name."""

    kind: str  # "group" | "host"
    name: str


class Problems:
    """Collects errors and warnings, each one line naming file, group/host and variable."""

    def __init__(self, *, locate: Locate) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self._locate = locate

    def line(self, where: Where, var: str, message: str) -> str:
        top = re.match(r"[A-Za-z_][A-Za-z0-9_]*", var)
        file = self._locate(where.kind, where.name, top.group(0) if top else var)
        return f"{file}: {where.kind} '{where.name}': {var}: {message}"

    def error(self, where: Where, var: str, message: str) -> None:
        line = self.line(where, var, message)
        if line not in self.errors:  # a group variable shared by several hosts: say it once
            self.errors.append(line)

    def warn(self, where: Where, var: str, message: str) -> None:
        line = self.line(where, var, message)
        if line not in self.warnings:
            self.warnings.append(line)


def is_vault_blob(value: object) -> bool:
    """True for an inline ``!vault`` value that could not be decrypted."""
    return isinstance(value, dict) and VAULT_KEY in value


def _unvault(p: Problems, where: Where, var: str, value: object) -> tuple[bool, object]:
    if is_vault_blob(value):
        p.error(where, var, "is vault-encrypted and no vault password was given "
                "(use --vault-password-file)")
        return False, None
    if isinstance(value, Secret):  # a decrypted !vault value used as plain text
        return True, value.reveal()
    return True, value


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``500ms``, ``30s``, ``5m``, ``1h``.

    Raises ``ValueError`` (with a reason) for anything else, including zero or less.
    """
    if isinstance(value, bool):
        raise ValueError("is a boolean, not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration (use seconds or e.g. 500ms, 30s, 5m, 1h)")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    else:
        raise ValueError(f"must be a duration, got {type(value).__name__}")
    if not seconds > 0:
        raise ValueError(f"must be positive, got {value!r}")
    return seconds


def as_duration(p: Problems, where: Where, var: str, value: object) -> float | None:
    ok, value = _unvault(p, where, var, value)
    if not ok:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        p.error(where, var, str(exc))
        return None


def as_str(p: Problems, where: Where, var: str, value: object, *, secret: bool = False) -> str | None:
    """A non-empty string (numbers are accepted as their text, as Ansible would template them)."""
    ok, value = _unvault(p, where, var, value)
    if not ok:
        return None
    if value is None:
        p.error(where, var, "missing")
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        shown = "" if secret else f", got {value!r}"
        p.error(where, var, f"must be a non-empty string{shown}")
        return None
    return value.strip()


def as_secret(p: Problems, where: Where, var: str, value: object) -> Secret | None:
    if isinstance(value, Secret):
        return value
    text = as_str(p, where, var, value, secret=True)
    return Secret(text) if text is not None else None


def as_int(p: Problems, where: Where, var: str, value: object, *, minimum: int,
           maximum: int | None = None) -> int | None:
    ok, value = _unvault(p, where, var, value)
    if not ok:
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        value = int(value)  # INI inventories may hand numbers over as text
    if isinstance(value, bool) or not isinstance(value, int):
        p.error(where, var, f"must be a whole number, got {value!r}")
        return None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        p.error(where, var, f"must be at least {minimum}{upper}, got {value}")
        return None
    return value


def as_bool(p: Problems, where: Where, var: str, value: object) -> bool | None:
    ok, value = _unvault(p, where, var, value)
    if not ok:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str | int) and str(value).strip().lower() in _TRUE | _FALSE:
        return str(value).strip().lower() in _TRUE
    p.error(where, var, f"must be true or false, got {value!r}")
    return None


def as_mapping(p: Problems, where: Where, var: str, value: object) -> dict | None:
    if isinstance(value, dict) and not is_vault_blob(value):
        return value
    p.error(where, var, f"must be a mapping (key: value), got {type(value).__name__}")
    return None


def as_list(p: Problems, where: Where, var: str, value: object) -> list | None:
    if isinstance(value, list):
        return value
    p.error(where, var, f"must be a list, got {type(value).__name__}")
    return None


def as_ip(p: Problems, where: Where, var: str, value: object) -> str | None:
    text = as_str(p, where, var, value)
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        p.error(where, var, f"{text!r} is not a valid IP address")
        return None


def as_address(p: Problems, where: Where, var: str, value: object) -> str | None:
    """An IP address or a DNS name; dotted digits must be a valid IPv4 address."""
    text = as_str(p, where, var, value)
    if text is None:
        return None
    if re.fullmatch(r"[\d.]+", text) or ":" in text:
        return as_ip(p, where, var, text)
    labels = text.rstrip(".").split(".")
    if not all(_HOSTNAME_LABEL.match(label) for label in labels):
        p.error(where, var, f"{text!r} is neither an IP address nor a valid host name")
        return None
    return text


def as_cidr(p: Problems, where: Where, var: str, value: object) -> str | None:
    """An interface address in CIDR form, e.g. ``123.123.123.101/24``."""
    text = as_str(p, where, var, value)
    if text is None:
        return None
    if "/" not in text:
        p.error(where, var, f"{text!r} is not in CIDR form (address/prefix, e.g. 192.0.2.10/24)")
        return None
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        p.error(where, var, f"{text!r} is not a valid address/prefix")
        return None
    net = iface.network
    if net.num_addresses > 2 and iface.ip in (net.network_address, net.broadcast_address):
        p.error(where, var, f"{text!r} is the network or broadcast address of {net}")
        return None
    return str(iface)


def check_keys(p: Problems, where: Where, var: str, mapping: dict, allowed: Iterable[str]) -> None:
    """Report every key of ``mapping`` that is not ``allowed``, suggesting the closest one."""
    allowed = list(allowed)
    for key in mapping:
        if key not in allowed:
            p.error(where, f"{var}.{key}" if var else str(key), unknown_message(str(key), allowed))


def unknown_message(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        hint = f"; did you mean {close[0]!r}?"
    elif len(allowed) <= 12:
        hint = f" (known: {', '.join(sorted(allowed))})"
    else:
        hint = " (see docs/inventory.md for the known ones)"
    return f"unknown key {key!r}{hint}"


def one_of(p: Problems, where: Where, var: str, value: object, choices: Iterable[str]) -> str | None:
    text = as_str(p, where, var, value)
    choices = list(choices)
    if text is None:
        return None
    if text.lower() not in choices:
        p.error(where, var, f"{text!r} is not one of {', '.join(choices)}")
        return None
    return text.lower()
