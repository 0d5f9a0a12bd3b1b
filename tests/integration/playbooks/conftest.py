"""Shared set-up of the playbook tests: the lab's inventory, a run helper whose records go
to a temporary artifacts root, and epochs newer than any the lab hosts have recorded."""

from __future__ import annotations

import pytest

from cr_orchestrator.act.playbook_runner import run_playbook

CLUSTER = "mail"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("runs")
    monkeypatch_module.setenv("CR_ARTIFACTS", str(root))
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def recorded_epoch(lab, host: str) -> int:
    proc = lab.run_on(host, f"cat /var/lib/cr-orchestrator/{CLUSTER}.epoch")
    return int(proc.stdout.strip() or 0) if proc.returncode == 0 else 0


class Orders:
    """Runs playbooks against the lab with fresh, ever newer epochs."""

    def __init__(self, lab) -> None:
        self.lab = lab
        self.epoch = max(recorded_epoch(lab, h) for h in ("mail-a", "mail-b", "mail-dr"))

    def holds_shared_ip(self, host: str) -> bool:
        out = self.lab.run_on(host, "ip -o addr show dev eth0").stdout
        return f" {self.lab.shared_ip}/" in out

    def service_runs(self, host: str) -> bool:
        return self.lab.run_on(host, f"{self.lab.mailctl} status").returncode == 0

    def recorded_epoch(self, host: str) -> int:
        return recorded_epoch(self.lab, host)

    def recorded_role(self, host: str) -> str | None:
        """The host's role record ("primary N" / "secondary N"), None when absent."""
        proc = self.lab.run_on(host, f"cat /var/lib/cr-orchestrator/{CLUSTER}.role")
        return proc.stdout.strip() if proc.returncode == 0 else None

    def next_epoch(self) -> int:
        self.epoch += 1
        return self.epoch

    def run(self, playbook: str, *, new: str, old: str | None = None, epoch: int | None = None,
            check: bool = False, limit: str | None = None, timeout_s: float = 180, **more):
        extravars = {"cr_cluster": CLUSTER, "cr_new_primary": new,
                     "cr_epoch": self.next_epoch() if epoch is None else epoch, **more}
        if old:
            extravars["cr_old_primary"] = old
        return run_playbook(playbook=playbook, inventory=self.lab.inventory_path,
                            extravars=extravars, check=check, limit=limit, timeout_s=timeout_s)


@pytest.fixture(scope="module")
def orders(lab, artifacts):
    return Orders(lab)


