"""Replay recorded WS-Man responses (e.g. from a real Windows host) to a real client.

Each request is answered with the next unused recorded response for the same Action, its
``a:RelatesTo`` rewritten to the request's MessageID (pywinrm checks it on Signal and
Delete). ShellId and CommandId come from the recording, as the client must echo them.
A recorded fault is sent with HTTP 500, as WS-Management sends faults (or with the status
the recording names in ``transport_error``).
"""

from __future__ import annotations

import re

from cr_orchestrator.testworld.wsman_sim import soap


def _action(envelope: str) -> str:
    match = re.search(r"<(?:\w+:)?Action[^>]*>([^<]+)<", envelope)
    return match.group(1).strip() if match else ""


def recorded_status(message: dict) -> int:
    """The HTTP status of a recorded response: the recording's own, else 500 for a fault, else 200."""
    recorded = (message.get("transport_error") or {}).get("code")
    if recorded:
        return int(recorded)
    return 500 if _action(message["response"]) == soap.ACTION_FAULT else 200


class ReplayEngine:
    """Answers with recorded responses; ``messages`` is ``[{"request": xml, "response": xml}, ...]``."""

    def __init__(self, messages: list[dict]) -> None:
        self._pending = [(_action(m["request"]), recorded_status(m), m["response"]) for m in messages]
        self.unmatched: list[str] = []  # actions the recording had no answer for

    def handle(self, req: soap.Request, *, endpoint: str, user: str, client_ip: str) -> tuple[int, str]:
        for i, (action, status, response) in enumerate(self._pending):
            if action == req.action:
                del self._pending[i]
                body = re.sub(r"(<(?:\w+:)?RelatesTo>)[^<]*(<)", lambda m: m.group(1) + req.message_id + m.group(2),
                              response, count=1)
                return status, body
        self.unmatched.append(req.action)
        return 500, soap.fault_response(req, code=2150858817, subcode="w:ActionNotSupported",
                                        reason=f"the recording has no (more) responses for {req.action}")
