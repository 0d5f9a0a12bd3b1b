"""The lab handle: bring a lab up or down, run commands on its hosts, report its status."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator, Sequence

from cr_orchestrator.errors import LabError
from cr_orchestrator.testworld.lab import build, faults, inventory, netns, report, services
from cr_orchestrator.testworld.lab.handle import HostAddresses
from cr_orchestrator.testworld.lab.plan import (DNS_RECORD, DNS_ZONE, LAB_ROOT, HostPlatform, LabPlan,
                                      NodeKind, plan_lab, validate_name)

DEFAULT_NAME = "crlab"
DEFAULT_BASE = "198.18.0.0/20"


def lab_from_env() -> tuple[str, str]:
    return (os.environ.get("CR_LAB_NAME", DEFAULT_NAME), os.environ.get("CR_LAB_BASE", DEFAULT_BASE))


class Lab:
    """One lab, identified by its NAME. Build with :meth:`up`, or :meth:`load` a running one."""

    def __init__(self, plan: LabPlan, *, service_argv: list[str] | None = None) -> None:
        self.plan = plan
        self.service_argv = service_argv

    # --- construction -------------------------------------------------------------
    @classmethod
    def load(cls, *, name: str) -> Lab:
        """The running lab NAME, from its lab.json (LabError if it is not up)."""
        validate_name(name)
        path = f"{LAB_ROOT}/{name}/lab.json"
        try:
            with open(path) as f:
                state = json.load(f)
        except FileNotFoundError as exc:
            raise LabError(f"lab {name} is not up (no {path}); run `crctl lab up --name {name}`") from exc
        plan = plan_lab(name=name, base=state["base"], secondaries=state["secondaries"],
                        windows=state["windows"])
        return cls(plan, service_argv=state.get("service_argv"))

    @classmethod
    def up(cls, *, name: str, base: str, secondaries: int = 1, windows: int = 0,
           service_argv: list[str] | None = None) -> Lab:
        """Build lab NAME (idempotent when it is already up with the same plan)."""
        plan = plan_lab(name=name, base=base, secondaries=secondaries, windows=windows)
        netns.check_prerequisites()
        if windows and service_argv is None:
            from cr_orchestrator.testworld.lab import windows as win

            service_argv = win.default_service_argv()
        lab = cls(plan, service_argv=service_argv)
        with lab.locked():
            state = lab.read_state()
            if state and state.get("complete"):
                lab._check_same_plan(state)
                lab._ensure_running()
                return lab
            # nothing, or the leftovers of an ``up`` that died half-way: start clean
            build.destroy(name, plan.state_dir, base=plan.base, keep_state=True)
            lab._build()
        return lab

    def _check_same_plan(self, state: dict) -> None:
        want = {"base": self.plan.base, **self.plan.extra}
        have = {k: state.get(k) for k in want}
        if have != want:
            raise LabError(f"lab {self.name} is already up with {have}; you asked for {want}. "
                           f"Run `crctl lab down --name {self.name}` first")

    def _build(self) -> None:
        plan = self.plan
        started = time.monotonic()
        services.prepare_lab_files(plan)
        self.write_state({"complete": False, "pids": {}})
        for host in plan.hosts():
            services.prepare_host_files(plan, host.name)
        build.write_resolv_confs(plan)
        build.create_networks(plan)
        pids = build.start_all(plan, service_argv=self.service_argv)
        self.write_inventory()
        self.write_state({"complete": True, "pids": pids,
                           "up_seconds": round(time.monotonic() - started, 2)})

    def _ensure_running(self) -> None:
        """``up`` on a running lab: restart whatever died (holders, sshd, services, named)."""
        state = self.read_state()
        pids = dict(state.get("pids", {}))
        if not netns.pid_alive(pids.get("named")):
            pids["named"] = services.start_named(self.plan)
        for host in self.plan.hosts():
            if host.name in state.get("faults", {}):
                continue  # a deliberate fault stays until `heal`
            holder = pids.get(f"holder:{host.name}")
            if not netns.pid_alive(holder):
                # the host rebooted: its service starts only if its start mode says so
                pids.update(build.start_host(self.plan, host, service_argv=self.service_argv,
                                             start_service=services.autostarts(self.plan,
                                                                               host.name)))
            elif (host.platform is HostPlatform.LINUX
                  and not netns.pid_alive(pids.get(f"sshd:{host.name}"))):
                # sshd is infrastructure; the mail service is left as it is (it may have
                # been stopped on purpose, e.g. by a demotion)
                pids[f"sshd:{host.name}"] = services.start_sshd(self.plan, host.name, holder)
        self._update_state(pids=pids)
        services.wait_for_dns(self.plan)
        self.write_inventory()

    def write_inventory(self) -> str:
        inv = inventory.build_inventory(self.plan, tsig_secret=services.tsig_secret(self.plan),
                                        windows_vars=self._windows_vars())
        return inventory.write_inventory(self.plan, inv)

    def _windows_vars(self) -> dict:
        from cr_orchestrator.testworld.lab import windows

        return windows.inventory_vars(self.name) if self.plan.extra.get("windows") else {}

    def down(self) -> list[str]:
        """Remove everything of this lab (also after a half-finished ``up``)."""
        netns.check_prerequisites()
        return build.destroy(self.name, self.plan.state_dir, base=self.plan.base)

    # --- state file -----------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise changes to one lab (CLI, fixtures and ``--for`` timers run at once)."""
        os.makedirs(self.plan.state_dir, exist_ok=True)
        with open(f"{self.plan.state_dir}/.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @property
    def state_path(self) -> str:
        return f"{self.plan.state_dir}/lab.json"

    def read_state(self) -> dict:
        try:
            with open(self.state_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def write_state(self, values: dict) -> None:
        state = {"name": self.name, "base": self.plan.base, **self.plan.extra,
                 "service_argv": self.service_argv, "faults": {}, **values,
                 "hosts": {n: vars(a) for n, a in self.hosts.items()},
                 "shared_ip": self.shared_ip, "dns_server": self.dns_server,
                 "dns_name": self.dns_name, "inventory": self.inventory_path,
                 "ssh_key": self.ssh_key}
        tmp = f"{self.state_path}.tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, indent=2)
        os.replace(tmp, self.state_path)

    def _update_state(self, **values) -> dict:
        state = self.read_state()
        state.update(values)
        self.write_state(state)
        return state

    def pid(self, key: str) -> int | None:
        return self.read_state().get("pids", {}).get(key)

    # --- the handle's public attributes -------------------------------------------------
    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def state_dir(self) -> str:
        return self.plan.state_dir

    @property
    def inventory_path(self) -> str:
        return inventory.inventory_path(self.plan)

    @property
    def ssh_key(self) -> str:
        return services.ssh_key_path(self.plan)

    @property
    def mailctl(self) -> str:
        return services.mailctl_path(self.plan)

    @property
    def hosts(self) -> dict[str, HostAddresses]:
        return {h.name: HostAddresses(public=self.plan.service_address(h.name),
                                      cluster=self.plan.cluster_address(h.name), site=h.site or "",
                                      role=h.role or "", namespace=h.namespace,
                                      platform=str(h.platform))
                for h in self.plan.hosts()}

    @property
    def shared_ip(self) -> str:
        return self.plan.shared_ip

    @property
    def dns_server(self) -> str:
        return self.plan.dns_server

    @property
    def dns_name(self) -> str:
        return f"{DNS_RECORD}.{DNS_ZONE}"

    @property
    def client_address(self) -> str:
        return self.plan.node("client").links[0].address

    @property
    def root_addresses(self) -> tuple[str, ...]:
        """The orchestrator's (root namespace's) address on each lab net."""
        return self.plan.root_addresses()

    def tsig_secret(self) -> str:
        """The lab's TSIG secret (for tests that sign updates); never print it."""
        return services.tsig_secret(self.plan)

    def data_dir(self, host: str) -> str:
        """HOST's /srv as seen from the root namespace."""
        self.plan.node(host)
        return f"{services.host_dir(self.plan, host)}/srv"

    def state_dir_of(self, host: str) -> str:
        """HOST's /var/lib/cr-orchestrator as seen from the root namespace."""
        self.plan.node(host)
        return f"{services.host_dir(self.plan, host)}/state"

    # --- running things -----------------------------------------------------------
    def host_argv(self, host: str, cmd: str | Sequence[str]) -> list[str]:
        """argv that runs ``cmd`` on HOST (its network, /srv view and hostname)."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        node = self.plan.node(host)
        if node.kind is not NodeKind.HOST:
            return ["ip", "netns", "exec", node.namespace] + argv
        holder = self.pid(f"holder:{host}")
        if not netns.pid_alive(holder):
            raise LabError(f"lab host {host} is down (crashed?): `crctl lab heal {host}` first")
        return netns.nsenter_argv(holder, argv)

    def run_on(self, host: str, cmd: str | Sequence[str], *, timeout: float = 30.0,
               check: bool = False, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` (argv, or a shell string) on HOST; also 'client', 'dns', 'router'."""
        argv = self.host_argv(host, cmd)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
            raise LabError(f"`{shown}` on {host} failed (exit {proc.returncode}): "
                           f"{proc.stderr.strip()}")
        return proc

    def client(self, cmd: str | Sequence[str], *, timeout: float = 30.0, check: bool = False,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in the client namespace (site-a public network)."""
        return self.run_on("client", cmd, timeout=timeout, check=check, input=input)

    def ssh_argv(self, host: str, cmd: str | None = None) -> list[str]:
        """ssh from the root namespace to HOST's cluster address with the lab key."""
        argv = ["ssh", "-i", self.ssh_key, "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
                *shlex.split(inventory.SSH_ARGS), f"root@{self.plan.cluster_address(host)}"]
        return argv + ([cmd] if cmd else [])

    # --- faults (see faults.py) -----------------------------------------------------------
    def fail(self, host: str, mode: str, *, for_s: float | None = None,
             loss_pct: int = 30, delay_ms: int = 100) -> str:

        return faults.fail(self, host=host, mode=faults.FaultMode(mode), for_s=for_s,
                           loss_pct=loss_pct, delay_ms=delay_ms)

    def heal(self, host: str | None = None, *, modes: Sequence[str] | None = None) -> list[str]:

        return faults.heal(self, host=host,
                           modes=[faults.FaultMode(m) for m in modes] if modes else None)

    def faults(self) -> dict[str, dict]:
        return self.read_state().get("faults", {})

    def status(self) -> dict:

        return report.status(self)
