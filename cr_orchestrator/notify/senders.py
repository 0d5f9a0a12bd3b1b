"""Sending one notification to one target (webhook or mail), with retries and back-off.

Each call blocks its own thread only: the notifier runs every delivery in a pool of its
own, apart from the worker that makes the changes, so a receiver that hangs or is down
costs that thread time and nothing else. Errors name the target as scheme://host only (a
webhook URL may hold a token) and never carry the message's own text."""

from __future__ import annotations

import json
import logging
import smtplib
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage

from cr_orchestrator.notify.messages import Notification
from cr_orchestrator.notify.targets import SmtpTarget, Webhook

log = logging.getLogger(__name__)

USER_AGENT = "cr-orchestrator-notify/1"


def post_webhook(hook: Webhook, note: Notification, *, timeout_s: float) -> None:
    """POST the notification as JSON; any answer but 2xx is a failure."""
    body = json.dumps(note.as_json(), sort_keys=True).encode()
    request = urllib.request.Request(hook.url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310 - http(s) checked by the inventory
            answer.read(65536)
    except urllib.error.HTTPError as exc:
        raise OSError(f"{hook.shown()} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OSError(f"{hook.shown()}: {type(reason).__name__}: {reason}") from None


def send_mail(smtp: SmtpTarget, note: Notification, *, timeout_s: float) -> None:
    message = EmailMessage()
    message["From"], message["To"] = smtp.sender, ", ".join(smtp.recipients)
    message["Subject"] = note.title
    message["X-CR-Event"] = f"{note.cluster} {note.kind.value} {note.event_id}"
    message.set_content(f"{note.text}\n\n{json.dumps(note.as_json(), indent=2, sort_keys=True)}\n")
    try:
        with smtplib.SMTP(smtp.server, smtp.port, timeout=timeout_s) as client:
            if smtp.starttls:
                client.starttls()
            client.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise OSError(f"smtp://{smtp.server}:{smtp.port}: {type(exc).__name__}: {exc}") from None


def with_retries(send: Callable[[], None], *, what: str, attempts: int, first_delay_s: float,
                 max_delay_s: float, stop: threading.Event) -> bool:
    """Call ``send`` until it succeeds, at most ``attempts`` times, waiting
    ``first_delay_s`` × 2^n (at most ``max_delay_s``) between tries; False when it never
    did (or ``stop`` was set)."""
    for attempt in range(attempts):
        try:
            send()
            if attempt:
                log.info("notification to %s sent at try %d", what, attempt + 1)
            return True
        except OSError as exc:
            delay = min(max_delay_s, first_delay_s * 2 ** attempt)
            last = attempt + 1 == attempts
            log.warning("notification to %s failed (try %d of %d): %s%s", what, attempt + 1,
                        attempts, exc, "; giving up" if last else f"; again in {delay:g} s")
            if last or stop.wait(delay):
                return False
    return False
