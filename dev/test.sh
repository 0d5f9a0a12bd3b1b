#!/usr/bin/env bash
# The test suite, on a fresh machine: installs what it needs, then runs pytest.
# Extra arguments go to pytest (e.g. dev/test.sh tests/unit -k decide).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$here/dev/bootstrap.sh"
cd "$here"
exec "$venv/bin/python" -m pytest "$@"
