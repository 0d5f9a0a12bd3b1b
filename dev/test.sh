#!/usr/bin/env bash
# The test suite, on a fresh machine: installs what it needs, then runs pytest.
# Extra arguments go to pytest (e.g. dev/test.sh tests/unit -k decide).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$here/dev/bootstrap.sh"
cd "$here"
# Static checks first (seconds): a lint or type error fails the run like a test does.
"$venv/bin/ruff" check cr_orchestrator tests bench
"$venv/bin/mypy"  # strict on decide/ and observe/ (pyproject.toml [tool.mypy])
# The whole suite (no arguments, as CI runs it, or only pytest options): the pure core's
# branch coverage is measured on the unit tests first and must stay >= 95 %.
if [[ $# -eq 0 || ${1:0:1} == "-" ]]; then
  "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit --cov=cr_orchestrator.decide \
    --cov-branch --cov-report=term:skip-covered --no-header
fi
exec "$venv/bin/python" -m pytest "$@"
