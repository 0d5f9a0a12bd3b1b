"""The kept-connection SSH transport against the lab's real sshd: commands share one
connection per host, and host keys are checked as OpenSSH would check them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import asyncssh
import pytest

from cr_orchestrator.inventory import load_topology
from cr_orchestrator.observe import linux_host
from cr_orchestrator.remote import ssh_pool

pytestmark = pytest.mark.lab


def _argv(lab, tmp_path: Path, common_args: str, command: str = "hostname") -> list[str]:
    host = load_topology(lab.inventory_path).hosts["mail-a"]
    host = dataclasses.replace(host, ssh=dataclasses.replace(host.ssh, common_args=common_args))
    return linux_host.build_ssh_command(host=host, control_dir=tmp_path, connect_timeout_s=2,
                                        remote_command=command)


def _known_hosts(path: Path, address: str, key: str) -> None:
    path.write_text(f"{address} {key}\n")


def test_commands_share_one_kept_connection(lab, tmp_path):
    argv = _argv(lab, tmp_path, "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null")
    first = ssh_pool.run(argv, deadline_s=5, stdin=None)
    assert (first.rc, first.stdout.strip()) == (0, "mail-a"), first
    assert ssh_pool.warm(argv) is True  # the next probe needs no handshake
    script = ssh_pool.run(argv[:-1] + ["sh -s"], deadline_s=5, stdin="echo $((6 * 7))\nexit 3\n")
    assert (script.rc, script.stdout.strip()) == (3, "42")


def test_a_host_key_that_differs_from_known_hosts_is_refused(lab, tmp_path):
    address = lab.hosts["mail-a"].cluster
    known = tmp_path / "known_hosts"
    wrong = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    _known_hosts(known, address, wrong)
    for strict in ("yes", "accept-new"):
        argv = _argv(lab, tmp_path, f"-o StrictHostKeyChecking={strict} "
                                    f"-o UserKnownHostsFile={known}")
        run = ssh_pool.run(argv, deadline_s=5)
        assert run.rc == 255 and "host key verification failed" in run.stderr, (strict, run)
        assert run.stdout == ""


def test_unknown_host_key_refused_when_strict_and_learned_with_accept_new(lab, tmp_path):
    known = tmp_path / "known_hosts"
    strict = _argv(lab, tmp_path, f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={known}")
    refused = ssh_pool.run(strict, deadline_s=5)
    assert refused.rc == 255 and "host key verification failed" in refused.stderr, refused
    learn = _argv(lab, tmp_path, f"-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={known}")
    assert ssh_pool.run(learn, deadline_s=5).rc == 0
    assert lab.hosts["mail-a"].cluster in known.read_text()  # as OpenSSH appends it
    # now known: even the strict setting connects (a new connection: other settings)
    ssh_pool.pool().close_all()
    assert ssh_pool.run(strict, deadline_s=5).rc == 0


def test_settings_the_pool_cannot_reproduce_go_to_openssh(tmp_path):
    argv = ["ssh", "-o", "ProxyCommand=nc %h %p", "-o", "BatchMode=yes", "-l", "root",
            "192.0.2.1", "true"]
    assert isinstance(ssh_pool.target_of(argv), str)
    assert ssh_pool.warm(argv) is None
