"""Fault injection on lab hosts, and healing.

=========  ===============================================================================
crash      every process of the host SIGKILLed, its links down and addresses flushed
link       its switch ports down (partition: nobody reaches it, it reaches nobody)
service    its service stopped (mailctl stop); the host itself stays up
freeze     every process of the host SIGSTOPped (connections open, then stall)
loss       outgoing packet loss (and latency) on its links: tc netem, or nftables when the
           kernel has no sch_netem (then loss only, no latency)
isolate    nftables in the host drops traffic to/from the root namespace (orchestrator)
           only: peers still reach it
asymmetric nftables in the host drops traffic to/from the root namespace (orchestrator)
           and every other host and orchestrator node: only clients still reach it (the
           partition a lease guards against: it would keep serving them)
=========  ===============================================================================

Each active fault is recorded in lab.json so ``heal`` undoes exactly what was done.
``--for N`` starts a timer process that heals that one fault after N seconds.
"""

from __future__ import annotations

import enum
import os
import signal
import subprocess
import sys
import time

from cr_orchestrator.errors import LabError
from cr_orchestrator.testworld.lab import build, netns, services
from cr_orchestrator.testworld.lab.plan import HostPlatform, Node, NodeKind
from cr_orchestrator.testworld.lab.handle import LabHandle


ISOLATE_TABLE = "cr_lab_isolate"
LOSS_TABLE = "cr_lab_loss"


class FaultMode(enum.StrEnum):
    CRASH = "crash"
    LINK = "link"
    SERVICE = "service"
    FREEZE = "freeze"
    LOSS = "loss"
    ISOLATE = "isolate"
    ASYMMETRIC = "asymmetric"


# order in which heal undoes faults: network first, processes last
HEAL_ORDER = (FaultMode.LINK, FaultMode.ISOLATE, FaultMode.ASYMMETRIC, FaultMode.LOSS, FaultMode.FREEZE,
              FaultMode.CRASH, FaultMode.SERVICE)


def _host_node(lab: LabHandle, host: str) -> Node:
    node = lab.plan.node(host)
    if node.kind is not NodeKind.HOST:
        raise LabError(f"{host} is not a lab host; faults apply to: {', '.join(lab.hosts)}")
    return node


def fail(lab: LabHandle, *, host: str, mode: FaultMode, for_s: float | None = None,
         loss_pct: int = 30, delay_ms: int = 100) -> str:
    """Inject fault ``mode`` into HOST; returns a sentence saying what was done."""
    node = _host_node(lab, host)
    if for_s is not None and for_s <= 0:
        raise LabError(f"--for {for_s}: give a positive number of seconds")
    if not 0 < loss_pct <= 100:
        raise LabError(f"--loss {loss_pct}: give a percentage between 1 and 100")
    with lab.locked():
        state = lab.read_state()
        faults = state.setdefault("faults", {})
        active = faults.get(host, {})
        if mode in active:
            raise LabError(f"{host} already has fault {mode}; `crctl lab heal {host}` first")
        if FaultMode.CRASH in active:
            raise LabError(f"{host} is crashed; `crctl lab heal {host}` first")
        detail = APPLY[mode](lab, node, loss_pct=loss_pct, delay_ms=delay_ms)
        record = {"since": time.time(), "detail": detail}
        if for_s:
            record["heal_at"] = time.time() + for_s
            _start_timer(lab, host=host, mode=mode, for_s=for_s)
        faults.setdefault(host, {})[str(mode)] = record
        lab.write_state(state)
    return f"{host}: {detail}" + (f" (heals itself in {for_s:g} s)" if for_s else "")


def heal(lab: LabHandle, *, host: str | None = None,
         modes: list[FaultMode] | None = None) -> list[str]:
    """Undo the recorded faults of HOST (or of every host); returns what was done."""
    if host is not None:
        _host_node(lab, host)
    done = []
    with lab.locked():
        state = lab.read_state()
        faults = state.setdefault("faults", {})
        for name in [host] if host else list(faults):
            active = faults.get(name, {})
            for mode in HEAL_ORDER:
                if str(mode) in active and (modes is None or mode in modes):
                    _cancel_timer(lab, host=name, mode=mode)
                    done.append(f"{name}: " + UNDO[mode](lab, _host_node(lab, name), state))
                    del active[str(mode)]
            if not active:
                faults.pop(name, None)
        lab.write_state(state)
    return done


# --- crash ------------------------------------------------------------------------------
def _crash(lab: LabHandle, node: Node, **_) -> str:
    netns.kill_ns_processes(node.namespace)
    cmds = []
    for lk in node.links:
        cmds += [f"addr flush dev {lk.ifname}", f"link set {lk.ifname} down"]
    netns.ip_batch(cmds, ns=node.namespace)
    return "crashed: every process killed, links down, addresses gone"


def _uncrash(lab: LabHandle, node: Node, state: dict) -> str:
    build.configure_node(lab.plan, node)
    autostart = services.autostarts(lab.plan, node.name)
    pids = build.start_host(lab.plan, node, service_argv=lab.service_argv,
                            start_service=autostart)
    state.setdefault("pids", {}).update(pids)
    build.wait_for_host(lab.plan, node, service_argv=lab.service_argv)
    if autostart:
        return "rebooted: addresses back, sshd started, service started (start mode automatic)"
    return "rebooted: addresses back, sshd started, service left stopped (start mode manual)"


# --- link -----------------------------------------------------------------------------------
def _set_ports(lab: LabHandle, node: Node, updown: str) -> None:
    netns.ip_batch([f"link set {lk.port} {updown}" for lk in node.links], ns=lab.plan.switch_ns)


def _link(lab: LabHandle, node: Node, **_) -> str:
    _set_ports(lab, node, "down")
    return "links cut (switch ports down)"


def _unlink(lab: LabHandle, node: Node, state: dict) -> str:
    _set_ports(lab, node, "up")
    return "links restored"


# --- service --------------------------------------------------------------------------------
def _stop_service(lab: LabHandle, node: Node, **_) -> str:
    if node.platform is HostPlatform.LINUX:
        lab.run_on(node.name, [lab.mailctl, "stop"], check=True)
        return "mail service stopped"
    pid = lab.pid(f"service:{node.name}")
    if not netns.pid_alive(pid):
        raise LabError(f"{node.name} has no running service to stop")
    netns.signal_pids([pid], signal.SIGTERM)
    netns.wait_until(lambda: not netns.pid_alive(pid), timeout=5, what=f"service of {node.name}")
    netns.reap_children()
    return "service stopped"


def _start_service(lab: LabHandle, node: Node, state: dict) -> str:
    if node.platform is HostPlatform.LINUX:
        lab.run_on(node.name, [lab.mailctl, "start"], check=True)
        return "mail service started"
    holder = state.get("pids", {}).get(f"holder:{node.name}")
    if lab.service_argv:
        state["pids"][f"service:{node.name}"] = build.start_command_service(
            lab.plan, node, holder, lab.service_argv)
        build.wait_for_host(lab.plan, node, service_argv=lab.service_argv)
    return "service started"


# --- freeze -----------------------------------------------------------------------------------
def _freeze(lab: LabHandle, node: Node, **_) -> str:
    pids = netns.ns_pids(node.namespace)
    netns.signal_pids(pids, signal.SIGSTOP)
    return f"frozen: {len(pids)} processes stopped"


def _thaw(lab: LabHandle, node: Node, state: dict) -> str:
    netns.signal_pids(netns.ns_pids(node.namespace), signal.SIGCONT)
    return "thawed: processes continued"


# --- loss -------------------------------------------------------------------------------------
def _loss(lab: LabHandle, node: Node, *, loss_pct: int, delay_ms: int, **_) -> str:
    ns = ["ip", "netns", "exec", node.namespace]
    tried = netns.run(ns + ["tc", "qdisc", "add", "dev", node.links[0].ifname, "root", "netem",
                            "loss", f"{loss_pct}%", "delay", f"{delay_ms}ms"], check=False)
    if tried.returncode == 0:
        for lk in node.links[1:]:
            netns.run(ns + ["tc", "qdisc", "add", "dev", lk.ifname, "root", "netem",
                            "loss", f"{loss_pct}%", "delay", f"{delay_ms}ms"])
        return f"netem: {loss_pct}% loss, {delay_ms} ms delay on outgoing packets"
    # this kernel has no sch_netem: drop at random with nftables (no latency possible)
    rules = (f"table inet {LOSS_TABLE} {{\n chain out {{\n  type filter hook output priority 0;\n"
             f"  numgen random mod 100 < {loss_pct} drop\n }}\n}}\n")
    netns.run(ns + ["nft", "-f", "-"], input=rules)
    return (f"nftables: {loss_pct}% loss on outgoing packets (no latency: the kernel lacks "
            f"sch_netem: {tried.stderr.strip()})")


def _unloss(lab: LabHandle, node: Node, state: dict) -> str:
    ns = ["ip", "netns", "exec", node.namespace]
    for lk in node.links:
        netns.run(ns + ["tc", "qdisc", "del", "dev", lk.ifname, "root"], check=False)
    netns.run(ns + ["nft", "delete", "table", "inet", LOSS_TABLE], check=False)
    return "packet loss removed"


# --- isolate ------------------------------------------------------------------------------------
def _isolate(lab: LabHandle, node: Node, **_) -> str:
    roots = ", ".join(lab.root_addresses)
    rules = (f"table inet {ISOLATE_TABLE} {{\n"
             f" chain in {{\n  type filter hook input priority -10;\n  ip saddr {{ {roots} }} drop\n }}\n"
             f" chain out {{\n  type filter hook output priority -10;\n  ip daddr {{ {roots} }} drop\n }}\n"
             "}\n")
    netns.run(["ip", "netns", "exec", node.namespace, "nft", "-f", "-"], input=rules)
    return "isolated from the orchestrator (root namespace); peers still reach it"


def _unisolate(lab: LabHandle, node: Node, state: dict) -> str:
    netns.run(["ip", "netns", "exec", node.namespace, "nft", "delete", "table", "inet",
               ISOLATE_TABLE], check=False)
    return "isolation removed"


# --- asymmetric -----------------------------------------------------------------------------------
ASYMMETRIC_TABLE = "cr_lab_asymmetric"


def _asymmetric(lab: LabHandle, node: Node, **_) -> str:
    peers = sorted({lk.address for n in lab.plan.nodes if n.name != node.name
                    and n.kind in (NodeKind.HOST, NodeKind.ORCHESTRATOR, NodeKind.WITNESS)
                    for lk in n.links})
    cut = ", ".join([*lab.root_addresses, *peers])
    rules = (f"table inet {ASYMMETRIC_TABLE} {{\n"
             f" chain in {{\n  type filter hook input priority -10;\n  ip saddr {{ {cut} }} drop\n }}\n"
             f" chain out {{\n  type filter hook output priority -10;\n  ip daddr {{ {cut} }} drop\n }}\n"
             "}\n")
    netns.run(["ip", "netns", "exec", node.namespace, "nft", "-f", "-"], input=rules)
    return "cut off from the orchestrator (root namespace) and its peers; clients still reach it"


def _unasymmetric(lab: LabHandle, node: Node, state: dict) -> str:
    netns.run(["ip", "netns", "exec", node.namespace, "nft", "delete", "table", "inet",
               ASYMMETRIC_TABLE], check=False)
    return "asymmetric partition removed"


APPLY = {FaultMode.CRASH: _crash, FaultMode.LINK: _link, FaultMode.SERVICE: _stop_service,
         FaultMode.FREEZE: _freeze, FaultMode.LOSS: _loss, FaultMode.ISOLATE: _isolate,
         FaultMode.ASYMMETRIC: _asymmetric}
UNDO = {FaultMode.CRASH: _uncrash, FaultMode.LINK: _unlink, FaultMode.SERVICE: _start_service,
        FaultMode.FREEZE: _thaw, FaultMode.LOSS: _unloss, FaultMode.ISOLATE: _unisolate,
        FaultMode.ASYMMETRIC: _unasymmetric}


# --- --for timers -------------------------------------------------------------------------
def _timer_pidfile(lab: LabHandle, host: str, mode: FaultMode) -> str:
    return f"{lab.state_dir}/run/timer-{host}.{mode}"


def _start_timer(lab: LabHandle, *, host: str, mode: FaultMode, for_s: float) -> None:
    env = dict(os.environ, CR_LAB_TIMER=lab.name)
    with open(f"{lab.state_dir}/log/timers.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cr_orchestrator.testworld.lab.timer", lab.name, host, str(mode),
             str(for_s)], stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            start_new_session=True)
    netns._daemons.append(proc)  # reaped later, never left a zombie
    with open(_timer_pidfile(lab, host, mode), "w") as f:
        f.write(f"{proc.pid}\n")


def _cancel_timer(lab: LabHandle, *, host: str, mode: FaultMode) -> None:
    path = _timer_pidfile(lab, host, mode)
    if not os.path.exists(path):
        return
    with open(path) as f:
        pid = int(f.read().split()[0])
    if pid != os.getpid() and netns.pid_alive(pid) and build._is_lab_timer(pid, lab.name):
        netns.signal_pids([pid], signal.SIGKILL)
    os.unlink(path)
