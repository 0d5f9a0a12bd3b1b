"""``python -m cr_orchestrator.testworld.lab.timer NAME HOST MODE SECONDS``: heal one fault later.

Started in the background by ``crctl lab fail ... --for SECONDS``; ``heal`` and ``down``
kill it when they get there first.
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> int:
    from cr_orchestrator.testworld.lab.core import Lab

    name, host, mode, seconds = argv
    time.sleep(float(seconds))
    for line in Lab.load(name=name).heal(host, modes=[mode]):
        print(f"{time.strftime('%H:%M:%S')} timer healed {line}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
