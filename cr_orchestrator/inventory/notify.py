"""``cr_notify``: where a cluster's notifications go (webhooks and/or mail).

    cr_notify:
      webhooks:
        - url: https://hooks.example.com/T0/B0/XXXX   # may be !vault: the token stays secret
      smtp:
        server: smtp.example.com
        port: 25                                      # default 25
        from: cr-orchestrator@example.com
        to: [ops@example.com]
        starttls: false
      events: [failover, switchover, action_needed, playbook_failed, replica_behind]

Set in a cluster's group or a parent of several (inherited like ``cr_policy``).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from cr_orchestrator.inventory.values import (
    Problems,
    Where,
    as_address,
    as_bool,
    as_int,
    as_list,
    as_mapping,
    as_str,
    check_keys,
    one_of,
)
from cr_orchestrator.model import Secret
from cr_orchestrator.notify.targets import NotifyKind, NotifyTargets, SmtpTarget, Webhook

NOTIFY_KEYS = ("webhooks", "smtp", "events")
WEBHOOK_KEYS = ("url",)
SMTP_KEYS = ("server", "port", "from", "to", "starttls")
_MAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def build_notify(p: Problems, where: Where, raw: object) -> NotifyTargets | None:
    """The validated ``cr_notify`` of one cluster; errors name file, group and variable."""
    raw = as_mapping(p, where, "cr_notify", raw)
    if raw is None:
        return None
    check_keys(p, where, "cr_notify", raw, NOTIFY_KEYS)
    if not set(raw) & {"webhooks", "smtp"}:
        p.error(where, "cr_notify", "needs webhooks, smtp or both")
        return None
    before = len(p.errors)
    hooks = []
    for i, entry in enumerate(as_list(p, where, "cr_notify.webhooks", raw.get("webhooks", [])) or []):
        hook = _webhook(p, where, f"cr_notify.webhooks[{i}]", entry)
        if hook is not None:
            hooks.append(hook)
    smtp = _smtp(p, where, raw["smtp"]) if "smtp" in raw else None
    kinds = frozenset(NotifyKind)
    if "events" in raw:
        listed = as_list(p, where, "cr_notify.events", raw["events"]) or []
        chosen = [one_of(p, where, f"cr_notify.events[{i}]", v, [k.value for k in NotifyKind])
                  for i, v in enumerate(listed)]
        if not listed:
            p.error(where, "cr_notify.events", "is empty: leave it out to be told of everything")
        kinds = frozenset(NotifyKind(k) for k in chosen if k is not None)
    if len(p.errors) > before:
        return None
    return NotifyTargets(webhooks=tuple(hooks), smtp=smtp, kinds=kinds)


def _webhook(p: Problems, where: Where, var: str, raw: object) -> Webhook | None:
    if isinstance(raw, str | Secret):
        raw = {"url": raw}
    raw = as_mapping(p, where, var, raw)
    if raw is None:
        return None
    check_keys(p, where, var, raw, WEBHOOK_KEYS)
    value = raw.get("url")
    secret = isinstance(value, Secret)
    text = value.reveal() if secret else as_str(p, where, f"{var}.url", value)
    if text is None:
        return None
    parts = urlsplit(text)
    shown = "the vaulted URL" if secret else repr(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        p.error(where, f"{var}.url", f"{shown} is not an http(s) URL with a host")
        return None
    if parts.password is not None:
        p.error(where, f"{var}.url", "carries a password (user:password@): put the token in the "
                "URL's path or vault-encrypt the URL; a password in a URL ends up in logs")
        return None
    return Webhook(url=text)


def _smtp(p: Problems, where: Where, raw: object) -> SmtpTarget | None:
    var = "cr_notify.smtp"
    raw = as_mapping(p, where, var, raw)
    if raw is None:
        return None
    check_keys(p, where, var, raw, SMTP_KEYS)
    before = len(p.errors)
    for key in ("server", "from", "to"):
        if key not in raw:
            p.error(where, f"{var}.{key}", "missing: mail needs server, from and to")
    server = as_address(p, where, f"{var}.server", raw["server"]) if "server" in raw else None
    port = as_int(p, where, f"{var}.port", raw.get("port", 25), minimum=1, maximum=65535)
    sender = as_str(p, where, f"{var}.from", raw["from"]) if "from" in raw else None
    to = raw.get("to")
    recipients = [to] if isinstance(to, str) else (as_list(p, where, f"{var}.to", to) or []) \
        if "to" in raw else []
    for i, address in enumerate(recipients):
        if not isinstance(address, str) or not _MAIL.match(address):
            p.error(where, f"{var}.to[{i}]", f"{address!r} is not a mail address")
    if sender is not None and not _MAIL.match(sender):
        p.error(where, f"{var}.from", f"{sender!r} is not a mail address")
    if "to" in raw and not recipients:
        p.error(where, f"{var}.to", "is empty: name at least one recipient")
    starttls = as_bool(p, where, f"{var}.starttls", raw.get("starttls", False))
    if len(p.errors) > before or server is None or port is None or sender is None:
        return None
    return SmtpTarget(server=server, port=port, sender=sender, recipients=tuple(recipients),
                      starttls=bool(starttls))
