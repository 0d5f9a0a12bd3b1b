"""Fixtures shared by every test package.

``lab``: the namespace lab (cr_orchestrator.testworld.lab.Lab), brought up once per session.
Name and base from CR_LAB_NAME / CR_LAB_BASE (default crlab / 198.18.0.0/20); skipped
when not root. Faults a test injects are healed after that test. The lab is torn down at
the end of the session unless it was already up before (a developer's lab is left alone)
or CR_LAB_KEEP=1. A lab that an earlier, killed test session built (its pid file names a
dead process) is not a developer's: it is taken down and built afresh, as is any lab
already up under CI=true.

Handle (see docs/lab.md): ``.name``, ``.inventory_path``, ``.state_dir``, ``.ssh_key``,
``.hosts`` (name -> HostAddresses(public, cluster, site, role, namespace, platform)),
``.shared_ip``, ``.dns_server``, ``.dns_name``, ``.run_on(host, cmd, timeout=, check=,
input=)``, ``.client(cmd, ...)``, ``.fail(host, mode, for_s=None)``, ``.heal(host=None)``,
``.data_dir(host)``, ``.state_dir_of(host)``, ``.mailctl``, ``.ssh_argv(host, cmd)``,
``.root_addresses``, ``.client_address``, ``.tsig_secret()``, ``.status()``.
"""

from __future__ import annotations

import os

import pytest

REDIS_URL = os.environ.get("CR_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_client():
    """The real Redis server (CR_REDIS_URL); tests use their own key prefix, never FLUSHDB.
    (redis-py is imported here, not at the top: the pure unit tests never load it.)"""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def lab():
    """The session's namespace lab (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("the namespace lab needs root (network namespaces, bridges, mounts): "
                    "run the tests as root (CI does)")
    from cr_orchestrator.testworld.lab import Lab, lab_from_env

    name, base = lab_from_env()
    already_up = os.path.exists(f"/var/lib/cr-lab/{name}/lab.json")
    owner = f"/var/lib/cr-lab/{name}/tests-session.pid"
    if already_up and (os.environ.get("CI") == "true" or _left_by_a_dead_test_session(owner)):
        # A test session that was killed (a timeout, a machine stopped mid-run) left its
        # lab in whatever state its last story made: every test here assumes a fresh lab
        # (mail-a primary and serving), so start from one. CI has no developer's lab.
        Lab.load(name=name).down()
        already_up = False
    handle = Lab.up(name=name, base=base)
    if not already_up:
        with open(owner, "w") as f:
            f.write(str(os.getpid()))
    yield handle
    keep = os.environ.get("CR_LAB_KEEP") == "1"
    if keep and os.path.exists(owner):
        os.unlink(owner)  # kept on purpose: the developer's lab from now on
    if not already_up and not keep:
        handle.down()


def _left_by_a_dead_test_session(owner: str) -> bool:
    """The lab was built by a test session whose process is gone (see ``lab``)."""
    try:
        with open(owner) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return False
    return not os.path.exists(f"/proc/{pid}")


@pytest.fixture(autouse=True)
def _heal_lab_after_test(request):
    """After a test that used ``lab``, undo the faults it left behind (cheap when none)."""
    yield
    if "lab" in request.fixturenames:
        handle = request.getfixturevalue("lab")
        if handle.faults():
            handle.heal()
