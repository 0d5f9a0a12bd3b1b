"""The orchestrator's runtime configuration: the one place that reads the environment.

Every setting that comes from the environment is a field of :class:`RuntimeConfig`, a
frozen value read by :func:`runtime` (on each call: a test or a parent process that
changes the environment is seen; made again only when one of its variables changed).
No other module reads ``os.environ``; child processes get theirs from
:func:`child_environ`. (The lab and the simulator, in the test world, read their own.)

========================  ==========================================  =====================
variable                  meaning                                     default
========================  ==========================================  =====================
CR_REDIS_URL              the orchestrator's Redis                    redis://127.0.0.1:6379/0
                          (or redis-sentinel://H:P,H:P/MASTER: state/redis_address.py)
CR_REDIS_SENTINELS        sentinels H:P,H:P,... (overrides the URL)   (none)
CR_REDIS_MASTER           the master's name at those sentinels        cr
CR_PREFIX                 key prefix of every Redis key, queue, entry cr
CR_INVENTORY              inventory for ``crctl`` and the worker      (none)
CR_VAULT_PASSWORD_FILE    vault password file                         (none)
CR_ARTIFACTS              where playbook run records go               /var/lib/cr-orchestrator/runs
CR_SSH_CONTROL_DIR        ssh ControlMaster sockets                   $TMPDIR/cr-ssh-UID/SCOPE
CR_LAB_NAME               lab scope of those sockets (lab runs only)  default
CR_CONSOLE_TOKEN_FILE     file holding the console's action token     (none: read-only)
CR_SSH_TRANSPORT          probes' ssh: asyncssh (kept connections)    asyncssh
                          or openssh (one ssh process per probe)
ANSIBLE_HOST_KEY_CHECKING passed on to ansible-playbook               False
========================  ==========================================  =====================
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "cr"
DEFAULT_ARTIFACTS = "/var/lib/cr-orchestrator/runs"


@dataclass(frozen=True)
class RuntimeConfig:
    redis_url: str = DEFAULT_REDIS_URL
    prefix: str = DEFAULT_PREFIX
    inventory: str | None = None
    vault_password_file: str | None = None
    artifacts_dir: Path = Path(DEFAULT_ARTIFACTS)
    ssh_control_dir: Path | None = None  # None: per user and lab scope under $TMPDIR
    lab_name: str | None = None
    ansible_host_key_checking: str = "False"
    console_token_file: Path | None = None  # crctl serve: actions need the token it holds
    ssh_transport: str = "asyncssh"  # probes and peer checks: remote/ssh_pool.py or ssh.py

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> RuntimeConfig:
        def get(name: str) -> str | None:
            return environ.get(name) or None

        return cls(
            redis_url=_redis_url(get("CR_REDIS_URL"), get("CR_REDIS_SENTINELS"),
                                 get("CR_REDIS_MASTER")),
            prefix=get("CR_PREFIX") or DEFAULT_PREFIX,
            inventory=get("CR_INVENTORY"),
            vault_password_file=get("CR_VAULT_PASSWORD_FILE"),
            artifacts_dir=Path(get("CR_ARTIFACTS") or DEFAULT_ARTIFACTS),
            ssh_control_dir=Path(d) if (d := get("CR_SSH_CONTROL_DIR")) else None,
            lab_name=get("CR_LAB_NAME"),
            ansible_host_key_checking=environ.get("ANSIBLE_HOST_KEY_CHECKING", "False"),
            console_token_file=Path(t) if (t := get("CR_CONSOLE_TOKEN_FILE")) else None,
            ssh_transport=_ssh_transport(get("CR_SSH_TRANSPORT")),
        )

    def control_dir(self) -> Path:
        """Where ssh ControlMaster sockets live: per user and per lab. /tmp keeps the
        socket path well under the 108-byte limit of a unix socket."""
        if self.ssh_control_dir is not None:
            return self.ssh_control_dir
        return Path(tempfile.gettempdir()) / f"cr-ssh-{os.getuid()}" / (self.lab_name or "default")


SSH_TRANSPORTS = ("asyncssh", "openssh")


def _ssh_transport(value: str | None) -> str:
    if value is None:
        return "asyncssh"
    if value not in SSH_TRANSPORTS:
        from cr_orchestrator.errors import ConfigError

        raise ConfigError(f"CR_SSH_TRANSPORT={value!r}: expected one of {', '.join(SSH_TRANSPORTS)}")
    return value


def _redis_url(url: str | None, sentinels: str | None, master: str | None) -> str:
    if sentinels is None:
        return url or DEFAULT_REDIS_URL
    from cr_orchestrator.state.redis_address import sentinel_address

    return sentinel_address(sentinels, master or "cr", what="CR_REDIS_SENTINELS")


# Every variable RuntimeConfig.from_environ reads (tests/unit/test_runtime_config.py
# holds the two together).
VARIABLES = ("CR_REDIS_URL", "CR_REDIS_SENTINELS", "CR_REDIS_MASTER", "CR_PREFIX",
             "CR_INVENTORY", "CR_VAULT_PASSWORD_FILE", "CR_ARTIFACTS", "CR_SSH_CONTROL_DIR",
             "CR_LAB_NAME", "ANSIBLE_HOST_KEY_CHECKING", "CR_CONSOLE_TOKEN_FILE",
             "CR_SSH_TRANSPORT")
_last: tuple[tuple[str | None, ...], RuntimeConfig] | None = None


def runtime() -> RuntimeConfig:
    """The configuration as the environment gives it now.

    A probe round asks several times (transport, control directory, ...); building it
    cost ~0.1 ms each (bench/profile_round.py), so the last one is kept for as long as
    the variables it reads keep their values."""
    global _last
    values = tuple(map(os.environ.get, VARIABLES))
    last = _last
    if last is not None and last[0] == values:
        return last[1]
    config = RuntimeConfig.from_environ(os.environ)
    _last = (values, config)  # one assignment: threads see the old pair or the new one
    return config


def child_environ(**overrides: str) -> dict[str, str]:
    """The environment for a child process: ours, with ``overrides``."""
    return {**os.environ, **overrides}


def search_path(first: Path) -> str:
    """``PATH`` with ``first`` in front (our venv's tools before the system's)."""
    return os.pathsep.join([str(first), os.environ.get("PATH", "")])
