"""Building and removing a lab's networks and processes (``up``/``down`` internals)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

from cr_orchestrator.errors import LabError
from cr_orchestrator.testworld.lab import netns, services, windows
from cr_orchestrator.testworld.lab.plan import DNS_ZONE, HostPlatform, LabPlan, Node

NETNS_ETC = "/etc/netns"  # ip netns exec bind-mounts /etc/netns/NS/resolv.conf


def create_networks(plan: LabPlan, *, before: LabPlan | None = None) -> None:
    """Namespaces, the switch's bridges, every veth, addresses and routes.

    With ``before`` (the plan of the running lab), only what ``plan`` adds to it: how
    ``up --orchestrators`` grows a running lab without touching what is there.
    """
    sw = plan.switch_ns
    old_nets = {n.key for n in before.nets} if before else set()
    old_links = {n.name: set(n.links) for n in before.nodes} if before else {}
    nets = [n for n in plan.nets if n.key not in old_nets]
    new_nodes = [n for n in plan.nodes if n.name not in old_links]
    for ns in ([] if before else [sw]) + [n.namespace for n in new_nodes]:
        netns.run(["ip", "netns", "add", ns])
    sw_cmds = [] if before else ["link set lo up"]
    for net in nets:
        sw_cmds += [f"link add br-{net.key} type bridge forward_delay 0",
                    f"link set br-{net.key} up"]
    netns.ip_batch(sw_cmds, ns=sw)
    # root <-> switch: the orchestrator's way into each lab net (no other route leaves it)
    root_cmds = []
    for net in nets:
        root_cmds += [f"link add {net.root_if} type veth peer name r-{net.key} netns {sw}",
                      f"addr add {net.root_address}/24 dev {net.root_if}",
                      f"link set {net.root_if} up"]
    netns.ip_batch(root_cmds)
    sw_cmds = []
    for net in nets:
        sw_cmds += [f"link set r-{net.key} master br-{net.key}", f"link set r-{net.key} up"]
    changed = []
    for node in plan.nodes:
        links = [lk for lk in node.links if lk not in old_links.get(node.name, set())]
        changed += [node] if links else []
        for lk in links:
            sw_cmds += [f"link add {lk.port} type veth peer name {lk.ifname} netns {node.namespace}",
                        f"link set {lk.port} master br-{lk.net}", f"link set {lk.port} up"]
    netns.ip_batch(sw_cmds, ns=sw)
    for node in changed:
        configure_node(plan, node)
    if before:
        return
    netns.run(["ip", "netns", "exec", plan.node("router").namespace,
               "sysctl", "-qw", "net.ipv4.ip_forward=1"])
    primary = plan.hosts()[0]
    netns.ip("addr", "add", f"{plan.shared_ip}/{plan.shared_ip_prefix}", "dev", "eth0",
             ns=primary.namespace)


def remove_additions(plan: LabPlan, *, before: LabPlan) -> None:
    """Undo what ``create_networks(plan, before=before)`` may have added (an earlier
    attempt that died half-way): the new nodes' namespaces, switch ports, bridges and
    root veths. What ``before`` has is left alone."""
    old_links = {n.name: set(n.links) for n in before.nodes}
    old_nets = {n.key for n in before.nets}
    present = set(netns.namespaces(f"{plan.name}-"))
    for node in plan.nodes:
        if node.name not in old_links and node.namespace in present:
            netns.kill_ns_processes(node.namespace)
            netns.run(["ip", "netns", "del", node.namespace])
        for lk in node.links:
            if node.name in old_links and lk not in old_links[node.name]:
                netns.ip("link", "del", lk.port, ns=plan.switch_ns, check=False)
    for net in plan.nets:
        if net.key not in old_nets:
            netns.ip("link", "del", f"br-{net.key}", ns=plan.switch_ns, check=False)
            netns.ip("link", "del", net.root_if, check=False)


def configure_node(plan: LabPlan, node: Node) -> None:
    """Addresses, links up and routes of one node (also what heal after a crash redoes)."""
    cmds = ["link set lo up"]
    for lk in node.links:
        cmds += [f"addr replace {lk.address}/24 dev {lk.ifname}", f"link set {lk.ifname} up"]
    for dest, gateway in node.routes:
        cmds.append(f"route replace {dest} via {gateway}")
    netns.ip_batch(cmds, ns=node.namespace)


def write_resolv_confs(plan: LabPlan) -> None:
    for node in plan.nodes:
        d = f"{NETNS_ETC}/{node.namespace}"
        os.makedirs(d, exist_ok=True)
        with open(f"{d}/resolv.conf", "w") as f:
            f.write(f"nameserver {plan.dns_server}\nsearch {DNS_ZONE.rstrip('.')}\n")


def start_host(plan: LabPlan, host: Node, *, service_argv: list[str] | None,
               start_service: bool) -> dict[str, int]:
    """Start HOST's namespace holder, sshd and (when ``start_service``) its mail service.

    A "Windows" host's service is the WS-Man endpoint itself: it always starts.
    """
    holder = services.start_holder(plan, host.name)
    pids = {f"holder:{host.name}": holder}
    if host.platform is HostPlatform.LINUX:
        pids[f"sshd:{host.name}"] = services.start_sshd(plan, host.name, holder)
        if start_service:
            start_mail(plan, host.name, holder)
    elif service_argv:
        pids[f"service:{host.name}"] = start_command_service(plan, host, holder, service_argv)
    return pids


def start_mail(plan: LabPlan, host: str, holder: int) -> None:
    proc = subprocess.run(netns.nsenter_argv(holder, [services.mailctl_path(plan), "start"]),
                          capture_output=True, text=True, timeout=20)
    if proc.returncode != 0:
        raise LabError(f"mail service of {host} did not start: {proc.stderr.strip()}")


def command_argv(plan: LabPlan, host: Node, template: list[str]) -> list[str]:
    """Fill a host-service command template ({host}, {address}, {cluster_address}, {data})."""
    values = {"host": host.name, "address": plan.service_address(host.name),
              "hostdir": services.host_dir(plan, host.name),
              "cluster_address": plan.cluster_address(host.name),
              "data": services.HOST_SRV, "lab": plan.name}
    return [part.format(**values) for part in template]


def start_command_service(plan: LabPlan, host: Node, holder: int, template: list[str]) -> int:
    argv = command_argv(plan, host, template)
    log = f"{services.host_dir(plan, host.name)}/log/service.log"
    windows.prepare_host(plan.name, host.name)
    return netns.start_daemon(netns.nsenter_argv(holder, argv), log_path=log,
                              env=windows.service_env(plan.name))


def start_all(plan: LabPlan, *, service_argv: list[str] | None) -> dict[str, int]:
    """Every lab process: named, then each host in parallel; waits until they answer."""
    pids = {"named": services.start_named(plan)}
    with ThreadPoolExecutor(max_workers=max(1, len(plan.hosts()))) as pool:
        # Only the primary serves at first: one node runs the service at a time.
        for result in pool.map(lambda h: start_host(plan, h, service_argv=service_argv,
                                                    start_service=h.role == "primary"),
                               plan.hosts()):
            pids.update(result)
    for host in plan.hosts():
        wait_for_host(plan, host, service_argv=service_argv)
    services.wait_for_dns(plan)
    return pids


def wait_for_host(plan: LabPlan, host: Node, *, service_argv: list[str] | None) -> None:
    """Until HOST answers: sshd (Linux), or the WS-Man port when it runs the simulator."""
    if host.platform is HostPlatform.LINUX:
        services.wait_for_port(plan.cluster_address(host.name), 22, timeout=10,
                               what=f"sshd of {host.name}")
    elif service_argv and "cr_orchestrator.testworld.wsman_sim" in service_argv:
        services.wait_for_port(plan.cluster_address(host.name), windows.WSMAN_PORT, timeout=10,
                               what=f"the WS-Man simulator of {host.name}")


def kill_timers(*, name: str, state_dir: str, host: str | None = None,
                except_pid: int | None = None) -> None:
    """Cancel pending ``--for`` heal timers (all, or HOST's)."""
    d = f"{state_dir}/run"
    if not os.path.isdir(d):
        return
    for entry in os.listdir(d):
        if not entry.startswith("timer-") or (host and not entry.startswith(f"timer-{host}.")):
            continue
        try:
            with open(f"{d}/{entry}") as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if pid != except_pid and netns.pid_alive(pid) and _is_lab_timer(pid, name):
            netns.signal_pids([pid], signal.SIGKILL)
        os.unlink(f"{d}/{entry}")


def _is_lab_timer(pid: int, name: str) -> bool:
    """Only kill a pid that is still our heal timer (pids get reused)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"CR_LAB_TIMER={name}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def _kill_ssh_masters_into(base: str) -> None:
    """ssh ControlPersist masters (Ansible's) connected into the lab would hang on dead peers."""
    out = netns.run(["ss", "-Htnp", "dst", base], check=False).stdout
    for pid in {int(p) for p in re.findall(r"pid=(\d+)", out)}:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if cmdline.startswith(b"ssh: ") and b"[mux]" in cmdline:
            netns.signal_pids([pid], signal.SIGTERM)


def destroy(name: str, state_dir: str, *, base: str | None = None,
            keep_state: bool = False) -> list[str]:
    """Remove every namespace, link, process and file of lab ``name``; returns what it removed.

    Works from names alone (``NAME-*``), so a lab whose ``up`` died half-way goes too.
    """
    removed = []
    kill_timers(name=name, state_dir=state_dir)
    prefix = f"{name}-"
    spaces = netns.namespaces(prefix)
    for ns in spaces:
        netns.kill_ns_processes(ns)
    if base:
        _kill_ssh_masters_into(base)
    for ns in spaces:
        netns.run(["ip", "netns", "del", ns])
        removed.append(f"namespace {ns}")
        shutil.rmtree(f"{NETNS_ETC}/{ns}", ignore_errors=True)
    for link in netns.root_links(prefix):
        netns.ip("link", "del", link, check=False)
        removed.append(f"link {link}")
    if os.path.isdir(NETNS_ETC):
        for entry in os.listdir(NETNS_ETC):
            if entry.startswith(prefix):
                shutil.rmtree(f"{NETNS_ETC}/{entry}", ignore_errors=True)
    if not keep_state and os.path.isdir(state_dir):
        shutil.rmtree(state_dir)
        removed.append(f"state dir {state_dir}")
    return removed
