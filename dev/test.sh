#!/usr/bin/env bash
# The test suite, on a fresh machine: installs what it needs, then runs pytest.
# Extra arguments go to pytest (e.g. dev/test.sh tests/unit -k decide).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$here/dev/bootstrap.sh"
cd "$here"
# Static checks first (seconds): a lint or type error fails the run like a test does.
"$venv/bin/ruff" check cr_orchestrator tests bench
if grep -q '^\[tool.mypy\]' pyproject.toml; then "$venv/bin/mypy"; fi
exec "$venv/bin/python" -m pytest "$@"
