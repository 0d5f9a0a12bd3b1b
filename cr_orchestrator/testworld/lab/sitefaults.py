"""Whole-site faults: ``crctl lab fail site-a --mode crash|isolate`` and their heal.

=========  ===============================================================================
crash      the site's hosts and its orchestrator node die at once: every process SIGKILLed
           (sshd, mail service, Redis, sentinel, crctl run with its worker and beat), then
           their links down and addresses flushed. The lab's DNS and clients stay up: they
           stand for the world outside the site.
isolate    the router drops every packet between the site's segments and the other
           segments (the other site's and the witness's), except to and from the lab's DNS
           server (the outside world's DNS). Inside the site everything still talks.
           Nothing else routes between the sites: hosts and nodes route through the
           router only, and the root namespace does not forward (it only observes).
=========  ===============================================================================

Recorded in lab.json under ``site_faults`` (SITE -> {mode: record}), so ``heal`` undoes
exactly what was done: after a crash the hosts reboot (their services start only with
start mode automatic), the node's Redis and sentinel start from the files they last wrote
(Sentinel then makes a Redis that was master a replica), and a ``crctl run`` that ran
there starts again.
"""

from __future__ import annotations

import enum
import signal
import time

from cr_orchestrator.errors import LabError
from cr_orchestrator.testworld.lab import build, netns, orchnodes, quorum
from cr_orchestrator.testworld.lab.faults import UNDO, FaultMode
from cr_orchestrator.testworld.lab.handle import LabHandle
from cr_orchestrator.testworld.lab.plan import Node, NodeKind


class SiteFaultMode(enum.StrEnum):
    CRASH = "crash"
    ISOLATE = "isolate"


def is_site(lab: LabHandle, name: str | None) -> bool:
    return name in lab.plan.sites


def site_nodes(lab: LabHandle, site: str) -> list[Node]:
    """What a site crash takes: the site's hosts and its orchestrator node."""
    return [n for n in lab.plan.nodes
            if n.site == site and n.kind in (NodeKind.HOST, NodeKind.ORCHESTRATOR)]


def crashed_nodes(state: dict) -> set[str]:
    """Names of the nodes a recorded site crash holds down (``up`` leaves them down)."""
    return {n for record in state.get("site_faults", {}).values()
            for n in record.get(str(SiteFaultMode.CRASH), {}).get("nodes", [])}


def fail(lab: LabHandle, *, site: str, mode: str) -> str:
    try:
        fault = SiteFaultMode(mode)
    except ValueError:
        raise LabError(f"--mode {mode}: a whole site takes "
                       f"{' or '.join(str(m) for m in SiteFaultMode)}") from None
    with lab.locked():
        state = lab.read_state()
        site_faults = state.setdefault("site_faults", {})
        if site_faults.get(site):
            raise LabError(f"{site} already has fault {', '.join(site_faults[site])}; "
                           f"`crctl lab heal {site}` first")
        busy = [n.name for n in site_nodes(lab, site) if n.name in state.get("faults", {})]
        if busy:
            raise LabError(f"{', '.join(busy)} of {site} already have faults; "
                           f"`crctl lab heal` them first")
        if fault is SiteFaultMode.CRASH:
            record = _crash(lab, site)
        else:
            record = _isolate(lab, site)
        record["since"] = time.time()
        site_faults[site] = {str(fault): record}
        lab.write_state(state)
    return f"{site}: {record['detail']}"


def heal(lab: LabHandle, *, site: str | None = None) -> list[str]:
    done = []
    with lab.locked():
        state = lab.read_state()
        site_faults = state.setdefault("site_faults", {})
        for name in [site] if site else list(site_faults):
            for mode, record in site_faults.pop(name, {}).items():
                if mode == SiteFaultMode.ISOLATE:
                    done.append(f"{name}: " + _unisolate(lab, name))
                else:
                    done.append(f"{name}: " + _uncrash(lab, name, record, state))
        lab.write_state(state)
    return done


# --- crash ------------------------------------------------------------------------------
def _crash(lab: LabHandle, site: str) -> dict:
    nodes = site_nodes(lab, site)
    spaces = [n.namespace for n in nodes]
    # the whole site at once: every process of every node first, then the links
    for ns in spaces:
        netns.signal_pids(netns.ns_pids(ns), signal.SIGKILL)
    for ns in spaces:
        netns.kill_ns_processes(ns)
    netns.reap_children()
    for node in nodes:
        cmds = []
        for lk in node.links:
            cmds += [f"addr flush dev {lk.ifname}", f"link set {lk.ifname} down"]
        netns.ip_batch(cmds, ns=node.namespace)
    names = [n.name for n in nodes]
    return {"nodes": names,
            "detail": f"crashed whole ({', '.join(names)}): every process killed, "
                      "links down, addresses gone"}


def _uncrash(lab: LabHandle, site: str, record: dict, state: dict) -> str:
    pids = state.setdefault("pids", {})
    restarted = []
    for node in [n for n in site_nodes(lab, site) if n.name in record.get("nodes", [])]:
        if node.kind is NodeKind.HOST:
            UNDO[FaultMode.CRASH](lab, node, state)
            continue
        build.configure_node(lab.plan, node)
        pids[f"redis:{node.name}"] = quorum.start_redis(lab.plan, node.name)
        pids[f"sentinel:{node.name}"] = quorum.start_sentinel(lab.plan, node.name)
        spec = state.get("orch_runs", {}).get(node.name)
        if spec:  # crctl run ran there: its service manager starts it at boot
            spec["pid"] = orchnodes.start(lab.plan, node.name, spec)
            restarted.append(f"crctl run on {node.name}")
    return ("rebooted: addresses back, hosts' sshd started (services per start mode), "
            "Redis and sentinel started" + (f", {', '.join(restarted)} started"
                                            if restarted else ""))


# --- isolate --------------------------------------------------------------------------------
def _table(site: str) -> str:
    return f"cr_lab_isolate_{site.replace('-', '_')}"


def _isolate(lab: LabHandle, site: str) -> dict:
    own = ", ".join(n.network for n in lab.plan.site_nets(site))
    others = ", ".join(n.network for n in lab.plan.nets if n.site != site)
    dns = lab.dns_server
    rules = (f"table inet {_table(site)} {{\n"
             " chain forward {\n  type filter hook forward priority -10;\n"
             f"  ip saddr {dns} accept\n  ip daddr {dns} accept\n"
             f"  ip saddr {{ {own} }} ip daddr {{ {others} }} drop\n"
             f"  ip saddr {{ {others} }} ip daddr {{ {own} }} drop\n"
             " }\n}\n")
    netns.run(["ip", "netns", "exec", lab.plan.node("router").namespace, "nft", "-f", "-"],
              input=rules)
    return {"detail": f"isolated at the router: {own} cut off from {others} "
                      f"(the DNS server {dns} still answers both sides)"}


def _unisolate(lab: LabHandle, site: str) -> str:
    netns.run(["ip", "netns", "exec", lab.plan.node("router").namespace, "nft", "delete",
               "table", "inet", _table(site)], check=False)
    return "isolation removed at the router"
