"""``python -m cr_orchestrator.cli``: the same as ``crctl``."""

import sys

from cr_orchestrator.cli import main

sys.exit(main())
