"""``crctl run`` on the lab's orchestrator nodes (orch-a, orch-b), started on request.

Nothing starts at ``lab up``: a scenario starts a node's orchestrator with the inventory
and environment it wants. It runs inside the node's network namespace, for the node's
site only (``--site``), through the lab's Sentinel quorum (``CR_REDIS_SENTINELS``,
``CR_REDIS_MASTER``), with its own ssh control dir and artifacts dir under
``nodes/NODE/``; its output goes to ``nodes/NODE/log/crctl-run.log``.

What was started is recorded in lab.json (``orch_runs``): a site crash kills it, and
the heal starts it again as a rebooted server's service manager would.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from cr_orchestrator.errors import LabError
from cr_orchestrator.testworld.lab import netns, quorum
from cr_orchestrator.testworld.lab.inventory import inventory_path
from cr_orchestrator.testworld.lab.plan import LabPlan

CRCTL = str(Path(sys.executable).with_name("crctl"))
CHILDREN = ("worker", "beat")
STOP_WAIT_S = 30.0  # crctl run's own --stop-timeout is 20 s


def environment(plan: LabPlan, node: str, overrides: Mapping[str, str]) -> dict[str, str]:
    d = quorum.node_dir(plan, node)
    # its own site's sentinel first, as a real node would list them: redis-py asks them in
    # order, and a cut-off remote one would cost a connect timeout on every discovery
    own = f"{quorum.address(plan, node)}:{quorum.SENTINEL_PORT}"
    sentinels = [own] + [s for s in quorum.sentinel_addresses(plan) if s != own]
    env = {"CR_REDIS_SENTINELS": ",".join(sentinels),
           "CR_REDIS_MASTER": quorum.MASTER_NAME, "CR_PREFIX": "cr",
           "CR_SSH_CONTROL_DIR": f"{d}/ssh", "CR_ARTIFACTS": f"{d}/runs",
           "CR_LAB_NAME": plan.name}
    env.update(overrides)
    return env


def argv(plan: LabPlan, node: str, *, inventory: str | None,
         args: Sequence[str] = ()) -> list[str]:
    site = plan.quorum_node(node).site
    return ["ip", "netns", "exec", plan.quorum_node(node).namespace, CRCTL, "run",
            "--inventory", inventory or inventory_path(plan), "--site", str(site), *args]


def start(plan: LabPlan, node: str, spec: dict) -> int:
    """Start crctl run on NODE as ``spec`` says ({inventory, env, args}); its pid."""
    if node not in {n.name for n in plan.orchestrator_nodes()}:
        raise LabError(f"{node} runs no orchestrator: only "
                       f"{', '.join(n.name for n in plan.orchestrator_nodes())} do")
    d = quorum.node_dir(plan, node)
    for sub in ("ssh", "runs", "log"):
        os.makedirs(f"{d}/{sub}", mode=0o700, exist_ok=True)
    return netns.start_daemon(argv(plan, node, inventory=spec.get("inventory"),
                                   args=spec.get("args", ())),
                              log_path=f"{d}/log/crctl-run.log",
                              env=environment(plan, node, spec.get("env", {})))


def stop(plan: LabPlan, node: str, pid: int | None, *, keep: Sequence[int]) -> None:
    """SIGTERM crctl run (it stops its worker and beat), then SIGKILL whatever else is left
    in NODE's namespace except ``keep`` (the node's Redis and sentinel): ssh masters, a
    worker that outlived its parent."""
    if netns.pid_alive(pid):
        netns.signal_pids([pid], signal.SIGTERM)  # type: ignore[list-item]
        deadline = time.monotonic() + STOP_WAIT_S
        while netns.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
            netns.reap_children()
    ns = plan.quorum_node(node).namespace
    leftovers = [p for p in netns.ns_pids(ns) if p not in keep]
    netns.signal_pids(leftovers, signal.SIGKILL)
    netns.reap_children()


def child_pid(parent: int | None, which: str) -> int | None:
    """The pid of crctl run's ``worker`` or ``beat`` child (None when not running)."""
    if which not in CHILDREN:
        raise LabError(f"{which!r}: crctl run's children are {', '.join(CHILDREN)}")
    if not netns.pid_alive(parent):
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f"\0{which}\0".encode() in f.read():
                    return int(entry)
        except (OSError, ValueError, IndexError):
            continue
    return None


def kill_child(parent: int | None, which: str) -> int:
    """SIGKILL crctl run's worker (with its pool: its process group) or beat, as the OOM
    killer would; crctl run starts it again. Returns the killed pid."""
    pid = child_pid(parent, which)
    if pid is None:
        raise LabError(f"no running {which} under crctl run (pid {parent})")
    try:
        os.killpg(pid, signal.SIGKILL)  # each child leads its own session and group
    except ProcessLookupError:
        pass
    netns.wait_until(lambda: not netns.pid_alive(pid), timeout=5, what=f"the killed {which}")
    return pid
