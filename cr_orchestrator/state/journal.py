"""The steps of a topology change, as its journal in Redis records them.

decided → epoch taken → old primary fenced → promoted → clients switched → verified → done

"decided" and "epoch taken" are written by the orchestrator (the promotion's Lua script
writes the journal with the new epoch in one step); the middle steps are read off the
playbook's own events as they happen (the epoch recorded on the members fences the old
primary, the services start on the new one, the shared IP or DNS record moves, the client
check passes); "done" is the journal closed. A change whose worker or node died is
resumed by a later round at the same epoch: the playbook runs again from the top (every
step is idempotent), and history says the step it had reached.
"""

from __future__ import annotations

import enum


class Step(enum.IntEnum):
    DECIDED = 0
    EPOCH_TAKEN = 1
    OLD_PRIMARY_FENCED = 2
    PROMOTED = 3
    CLIENTS_SWITCHED = 4
    VERIFIED = 5
    DONE = 6

    @property
    def words(self) -> str:
        return self.name.lower().replace("_", " ")


def parse_step(value: object) -> Step | None:
    """A journal's ``step`` field (absent in journals written before steps existed)."""
    if isinstance(value, str) and value.upper() in Step.__members__:
        return Step[value.upper()]
    return None
