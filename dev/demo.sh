#!/usr/bin/env bash
# The main job, on a fresh machine: installs what it needs, then runs the lab demo
# (a two-site lab, the orchestrator on it, a primary crash, failover, rejoin, cleanup).
# Extra arguments go to `crctl demo` (e.g. --keep to leave the lab up).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$here/dev/bootstrap.sh"
cd "$here"
exec "$venv/bin/crctl" demo "$@"
