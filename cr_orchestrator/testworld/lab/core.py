"""The lab handle: bring a lab up or down, run commands on its hosts, report its status."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence

from cr_orchestrator.errors import LabError
from cr_orchestrator.testworld.lab import (build, faults, inventory, netns, orchnodes, quorum,
                                           report, services, sitefaults)
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
                        windows=state["windows"],
                        orchestrators=bool(state.get("orchestrators")))
        return cls(plan, service_argv=state.get("service_argv"))

    @classmethod
    def up(cls, *, name: str, base: str, secondaries: int = 1, windows: int = 0,
           service_argv: list[str] | None = None, orchestrators: bool = False) -> Lab:
        """Build lab NAME (idempotent when it is already up with the same plan).

        ``orchestrators``: also the orchestrator nodes, the witness and client-b (added
        to a running lab that lacks them; a lab that has them keeps them without it)."""
        plan = plan_lab(name=name, base=base, secondaries=secondaries, windows=windows,
                        orchestrators=orchestrators)
        netns.check_prerequisites()
        if orchestrators:
            quorum.check_installed()
        if windows and service_argv is None:
            from cr_orchestrator.testworld.lab import windows as win

            service_argv = win.default_service_argv()
        lab = cls(plan, service_argv=service_argv)
        with lab.locked():
            state = lab.read_state()
            if state and state.get("complete"):
                lab._check_same_plan(state)
                if state.get("orchestrators") and not orchestrators:
                    lab.plan = plan_lab(name=name, base=base, secondaries=secondaries,
                                        windows=windows, orchestrators=True)
                elif orchestrators and not state.get("orchestrators"):
                    lab._add_orchestrators()
                lab._ensure_running()
                return lab
            # nothing, or the leftovers of an ``up`` that died half-way: start clean
            build.destroy(name, plan.state_dir, base=plan.base, keep_state=True)
            lab._build()
        return lab

    def _check_same_plan(self, state: dict) -> None:
        # orchestrator nodes are extra: asked for, they are added; not asked, they stay
        want = {"base": self.plan.base, **self.plan.extra}
        want.pop("orchestrators", None)
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
        if plan.quorum_nodes():
            quorum.write_files(plan)
            pids.update(quorum.start_all(plan))
        self.write_inventory()
        self.write_state({"complete": True, "pids": pids,
                           "up_seconds": round(time.monotonic() - started, 2)})

    def _add_orchestrators(self) -> None:
        """Grow a running lab by its orchestrator nodes, witness segment and client-b."""
        state = self.read_state()
        before = plan_lab(name=self.name, base=self.plan.base,
                          secondaries=state["secondaries"], windows=state["windows"])
        build.remove_additions(self.plan, before=before)  # of an attempt that died half-way
        build.write_resolv_confs(self.plan)
        build.create_networks(self.plan, before=before)
        quorum.write_files(self.plan)
        pids = quorum.start_all(self.plan)
        self._update_state(orchestrators=True, pids={**state.get("pids", {}), **pids})

    def _ensure_running(self) -> None:
        """``up`` on a running lab: restart whatever died (holders, sshd, services, named,
        Redis, sentinels)."""
        state = self.read_state()
        pids = dict(state.get("pids", {}))
        if not netns.pid_alive(pids.get("named")):
            pids["named"] = services.start_named(self.plan)
        crashed = sitefaults.crashed_nodes(state)
        for node in self.plan.quorum_nodes():
            if node.name in crashed:
                continue
            for what, start in (("redis", quorum.start_redis),
                                ("sentinel", quorum.start_sentinel)):
                if not netns.pid_alive(pids.get(f"{what}:{node.name}")):
                    pids[f"{what}:{node.name}"] = start(self.plan, node.name)
        for host in self.plan.hosts():
            if host.name in state.get("faults", {}) or host.name in crashed:
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
        """Fault ``mode`` on HOST, or on a whole site (``site-a``: crash or isolate)."""
        if sitefaults.is_site(self, host):
            if for_s is not None:
                raise LabError("--for: a site fault lasts until `crctl lab heal SITE`")
            return sitefaults.fail(self._as_now(), site=host, mode=mode)
        if host in sitefaults.crashed_nodes(self.read_state()):
            raise LabError(f"{host} is down with its site; `crctl lab heal` the site first")
        return faults.fail(self, host=host, mode=faults.FaultMode(mode), for_s=for_s,
                           loss_pct=loss_pct, delay_ms=delay_ms)

    def heal(self, host: str | None = None, *, modes: Sequence[str] | None = None) -> list[str]:
        """Undo the faults of HOST or SITE (or of everything: sites first)."""
        if sitefaults.is_site(self, host):
            return sitefaults.heal(self._as_now(), site=host)
        done = sitefaults.heal(self._as_now()) if host is None else []
        return done + faults.heal(self, host=host,
                                  modes=[faults.FaultMode(m) for m in modes] if modes else None)

    def _as_now(self) -> Lab:
        """This lab as lab.json says it is now: a handle made before ``up --orchestrators``
        grew the lab must still crash and heal the orchestrator nodes with their site."""
        if bool(self.read_state().get("orchestrators")) != bool(self.plan.quorum_nodes()):
            return Lab.load(name=self.name)
        return self

    def faults(self) -> dict[str, dict]:
        """Active faults: host (or site) -> {mode: record}."""
        state = self.read_state()
        return {**state.get("faults", {}), **state.get("site_faults", {})}

    # --- orchestrator nodes, Redis and Sentinel (see quorum.py, orchnodes.py) ---------------
    @property
    def sentinels(self) -> tuple[str, ...]:
        """``ip:26379`` of the three sentinels (CR_REDIS_SENTINELS is these, comma-joined)."""
        return quorum.sentinel_addresses(self.plan)

    def quorum_address(self, node: str) -> str:
        """Where NODE's Redis (6379) and sentinel (26379) listen."""
        return quorum.address(self.plan, node)

    def redis_master(self) -> str | None:
        """The node a majority of the sentinels names master now (None: no majority)."""
        return quorum.master(self.plan)

    def sentinel_views(self) -> dict[str, str | None]:
        """node -> the node its own sentinel names master (None: no answer)."""
        return quorum.views(self.plan)

    def redis_role(self, node: str) -> str:
        """``master``, ``slave`` or ``down (...)``: NODE's Redis, asked directly."""
        return quorum.role(self.quorum_address(node))

    def redis_write_refusal(self, node: str) -> str | None:
        """None when NODE's Redis takes a write now, else the error (NOREPLICAS, READONLY)."""
        return quorum.write_refusal(self.quorum_address(node))

    def kill_redis(self, node: str) -> int:
        """SIGKILL NODE's redis-server (``start_redis`` or ``crctl lab up`` restarts it)."""
        self.plan.quorum_node(node)
        pid = self.pid(f"redis:{node}")
        if not netns.pid_alive(pid):
            raise LabError(f"the Redis of {node} is not running")
        netns.signal_pids([pid], signal.SIGKILL)  # type: ignore[list-item]
        netns.wait_until(lambda: not netns.pid_alive(pid), timeout=5, what=f"Redis of {node}")
        netns.reap_children()
        return pid  # type: ignore[return-value]

    def kill_redis_master(self) -> str:
        """SIGKILL the Redis the sentinels name master; returns its node."""
        node = self.redis_master()
        if node is None:
            raise LabError("the sentinels agree on no master now: nothing to kill")
        self.kill_redis(node)
        return node

    def start_redis(self, node: str) -> int:
        """Start NODE's redis-server again (from the configuration it last wrote)."""
        with self.locked():
            pid = quorum.start_redis(self.plan, node)
            state = self.read_state()
            state.setdefault("pids", {})[f"redis:{node}"] = pid
            self.write_state(state)
        return pid

    def move_redis_master(self, node: str, *, timeout: float = 30.0) -> None:
        """Make NODE (orch-a or orch-b) the Redis master by a graceful Sentinel failover
        (a scenario's "as built"); returns once every other Redis replicates it."""
        quorum.move_master(self.plan, node, timeout=timeout)

    def start_orchestrator(self, node: str, *, inventory: str | None = None,
                           env: dict[str, str] | None = None,
                           args: Sequence[str] = ()) -> int:
        """Start ``crctl run --site SITE`` on NODE (orch-a, orch-b) through the lab's
        sentinels; ``env`` overrides its environment (recorded in lab.json: no secrets),
        ``args`` are more crctl run options. Returns its pid."""
        with self.locked():
            state = self.read_state()
            runs = state.setdefault("orch_runs", {})
            if netns.pid_alive((runs.get(node) or {}).get("pid")):
                raise LabError(f"crctl run already runs on {node}; stop it first")
            spec: dict[str, object] = {"inventory": inventory or self.inventory_path,
                                       "env": dict(env or {}), "args": list(args)}
            pid = orchnodes.start(self.plan, node, spec)
            runs[node] = {**spec, "pid": pid}
            self.write_state(state)
        return pid

    def stop_orchestrator(self, node: str) -> None:
        """Stop crctl run on NODE (SIGTERM: it stops worker and beat) and forget it."""
        with self.locked():
            state = self.read_state()
            spec = state.setdefault("orch_runs", {}).pop(node, None) or {}
            keep = [p for k, p in state.get("pids", {}).items()
                    if k in (f"redis:{node}", f"sentinel:{node}")]
            orchnodes.stop(self.plan, node, spec.get("pid"), keep=keep)
            self.write_state(state)

    def orchestrator_pid(self, node: str, child: str | None = None) -> int | None:
        """pid of crctl run on NODE, or of its ``worker``/``beat`` child (None: not running)."""
        pid = (self.read_state().get("orch_runs", {}).get(node) or {}).get("pid")
        if not netns.pid_alive(pid):
            return None
        return orchnodes.child_pid(pid, child) if child else pid

    def kill_orchestrator_child(self, node: str, child: str) -> int:
        """SIGKILL the ``worker`` (with its pool) or ``beat`` of crctl run on NODE; returns
        its pid (crctl run starts it again after its back-off)."""
        parent = self.orchestrator_pid(node)
        if parent is None:
            raise LabError(f"crctl run is not running on {node}: "
                           f"`crctl lab orch start {node}` first")
        return orchnodes.kill_child(parent, child)

    def run_in(self, node: str, cmd: str | Sequence[str], *, timeout: float = 30.0,
               check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in NODE's namespace (orch-a, orch-b, witness, client-b, a host...)."""
        return self.run_on(node, cmd, timeout=timeout, check=check)

    def status(self) -> dict:

        return report.status(self)
