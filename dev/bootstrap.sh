#!/usr/bin/env bash
# Makes a fresh Debian machine ready: system packages, the venv, a running Redis.
# Idempotent and quick when everything is already there. Sourced by dev/test.sh and
# dev/demo.sh; needs root for apt and for the lab.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CR_VENV:-$here/.venv}"

apt_packages=(
  iproute2 iputils-ping iputils-arping nftables psmisc procps
  openssh-server openssh-client rsync
  bind9 bind9-dnsutils
  dovecot-core dovecot-pop3d dovecot-imapd
  keepalived redis-server redis-sentinel python3
  inotify-tools
  prometheus chromium chromium-driver
)

log() { printf '[bootstrap] %s\n' "$*" >&2; }

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    log "missing Debian packages: ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})"
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python_bin="${CR_PYTHON:-}"
if [[ -z $python_bin ]]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      python_bin=$(command -v "$candidate"); break
    fi
  done
fi
[[ -n $python_bin ]] || { log "need Python >= 3.11"; exit 1; }

stamp="$venv/.cr-installed"
if [[ ! -x $venv/bin/python || ! -f $stamp || $here/pyproject.toml -nt $stamp ]]; then
  log "creating venv $venv with $python_bin"
  "$python_bin" -m venv "$venv"
  pip_log="$venv/pip-install.log"
  if ! { "$venv/bin/pip" install -q --upgrade pip && "$venv/bin/pip" install -q -e "$here[test]"; } \
      >"$pip_log" 2>&1; then
    cat "$pip_log" >&2
    log "pip install failed (log above, also in $pip_log)"
    exit 1
  fi
  touch "$stamp"
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  # Persistent (append-only file, fsync every second): the orchestrator's state (epochs,
  # the journal of a change in progress, history) must survive a restart of Redis.
  log "starting redis-server on 127.0.0.1:6379 (append-only file in /var/lib/redis)"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly yes \
    --appendfsync everysec --dir /var/lib/redis --logfile /var/log/redis/cr-orchestrator.log \
    --maxmemory-policy noeviction
  for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

export PATH="$venv/bin:$PATH"
