"""Redis and Redis Sentinel on the lab's orchestrator nodes (``crctl lab up --orchestrators``).

Each of orch-a, orch-b and the witness runs a real ``redis-server`` and ``redis-sentinel``
(the Debian packages) in its own network namespace, on its cluster address:

- orch-a's Redis is the first master; orch-b's and the witness's replicate it; the
  witness's has ``replica-priority 0``, so Sentinel never promotes it (it only votes and
  acknowledges writes);
- every Redis runs as a production master would: ``appendonly yes``,
  ``min-replicas-to-write 1`` and ``min-replicas-max-lag`` 3 s, so a master cut off from
  every replica refuses writes (NOREPLICAS) within a few seconds;
- the sentinels monitor master ``cr`` with quorum 2 and announce their lab address.

Files, under the state dir: ``nodes/NODE/redis.conf`` and ``nodes/NODE/sentinel.conf``
(both rewritten by Sentinel as roles change, like on a real server: a node that comes
back after a crash starts with what it last knew), ``nodes/NODE/redis/`` (the append-only
file), ``nodes/NODE/log/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import Counter

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cr_orchestrator.errors import LabError
from cr_orchestrator.testworld.lab import netns
from cr_orchestrator.testworld.lab.plan import LabPlan, Node, NodeKind

MASTER_NAME = "cr"
REDIS_PORT = 6379
SENTINEL_PORT = 26379
FIRST_MASTER = "orch-a"
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 6000  # also how long a sentinel waits before retrying a failover
MIN_REPLICAS_MAX_LAG_S = 3
PROBE_TIMEOUT_S = 0.5  # a lab address answers in ms; longer means cut off or crashed


def node_dir(plan: LabPlan, node: str) -> str:
    return f"{plan.state_dir}/nodes/{node}"


def address(plan: LabPlan, node: str) -> str:
    """Where NODE's Redis and sentinel listen (and what they announce)."""
    return plan.cluster_address(plan.quorum_node(node).name)


def sentinel_addresses(plan: LabPlan) -> tuple[str, ...]:
    """``ip:26379`` of every sentinel (what CR_REDIS_SENTINELS takes, comma-joined)."""
    return tuple(f"{address(plan, n.name)}:{SENTINEL_PORT}" for n in plan.quorum_nodes())


def redis_config(plan: LabPlan, node: Node) -> str:
    own = address(plan, node.name)
    lines = [f"# Redis of lab node {node.name} (lab {plan.name}); written by crctl lab up,",
             "# rewritten by Sentinel (CONFIG REWRITE) when it changes this server's role",
             f"bind {own} 127.0.0.1", "protected-mode no", f"port {REDIS_PORT}",
             f"dir {node_dir(plan, node.name)}/redis", 'save ""',
             "appendonly yes", "appendfsync everysec",
             # a master cut off from every replica stops taking writes
             "min-replicas-to-write 1", f"min-replicas-max-lag {MIN_REPLICAS_MAX_LAG_S}",
             f"replica-announce-ip {own}",
             # Redis 7 waits 5 s to batch replicas before a full sync: not in a lab of three
             "repl-diskless-sync-delay 0"]
    if node.kind is NodeKind.WITNESS:
        lines.append("replica-priority 0")  # votes and acknowledges, never promoted
    if node.name != FIRST_MASTER:
        lines.append(f"replicaof {address(plan, FIRST_MASTER)} {REDIS_PORT}")
    return "\n".join(lines) + "\n"


def sentinel_config(plan: LabPlan, node: Node) -> str:
    own = address(plan, node.name)
    return "\n".join([
        f"# Sentinel of lab node {node.name} (lab {plan.name}); Sentinel rewrites this file",
        f"port {SENTINEL_PORT}", f"bind {own} 127.0.0.1", "protected-mode no",
        f"dir {node_dir(plan, node.name)}", f"sentinel announce-ip {own}",
        f"sentinel monitor {MASTER_NAME} {address(plan, FIRST_MASTER)} {REDIS_PORT} 2",
        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
        f"sentinel parallel-syncs {MASTER_NAME} 2"]) + "\n"


def write_files(plan: LabPlan) -> None:
    """Fresh configuration and empty data for every quorum node (a new lab's first start)."""
    for node in plan.quorum_nodes():
        d = node_dir(plan, node.name)
        shutil.rmtree(d, ignore_errors=True)
        for sub in ("redis", "log", "run"):
            os.makedirs(f"{d}/{sub}", exist_ok=True)
        with open(f"{d}/redis.conf", "w") as f:
            f.write(redis_config(plan, node))
        with open(f"{d}/sentinel.conf", "w") as f:
            f.write(sentinel_config(plan, node))


def check_installed() -> None:
    missing = [b for b in ("redis-server", "redis-sentinel") if netns.which(b) is None]
    if missing:
        raise LabError(f"--orchestrators needs {' and '.join(missing)}: `apt-get install "
                       "redis-server redis-sentinel` (dev/bootstrap.sh installs them)")


def start_redis(plan: LabPlan, node: str) -> int:
    d = node_dir(plan, node)
    argv = ["ip", "netns", "exec", plan.quorum_node(node).namespace,
            "redis-server", f"{d}/redis.conf"]
    return netns.start_daemon(argv, log_path=f"{d}/log/redis.log")


def start_sentinel(plan: LabPlan, node: str) -> int:
    d = node_dir(plan, node)
    argv = ["ip", "netns", "exec", plan.quorum_node(node).namespace,
            "redis-sentinel", f"{d}/sentinel.conf"]
    return netns.start_daemon(argv, log_path=f"{d}/log/sentinel.log")


def start_all(plan: LabPlan, *, timeout: float = 30.0) -> dict[str, int]:
    """Every Redis, then every sentinel; returns their pids once the quorum is whole:
    the master takes writes and each sentinel knows both replicas and both other sentinels."""
    pids = {f"redis:{n.name}": start_redis(plan, n.name) for n in plan.quorum_nodes()}
    master = address(plan, FIRST_MASTER)
    # attached is not yet good for min-replicas-to-write: that takes a first ACK
    netns.wait_until(lambda: write_refusal(master) is None, timeout=timeout, interval=0.1,
                     what=f"the Redis master on {FIRST_MASTER} to take writes (see "
                          f"{node_dir(plan, FIRST_MASTER)}/log/redis.log)")
    pids.update({f"sentinel:{n.name}": start_sentinel(plan, n.name)
                 for n in plan.quorum_nodes()})
    wait_until_whole(plan, timeout=timeout)
    return pids


def wait_until_whole(plan: LabPlan, *, timeout: float) -> None:
    def whole() -> bool:
        return all(_sentinel_sees_all(address(plan, n.name)) for n in plan.quorum_nodes())

    netns.wait_until(whole, timeout=timeout, interval=0.2,
                     what="the sentinels to find each other and both replicas (see "
                          f"{plan.state_dir}/nodes/*/log/sentinel.log)")


def _client(host: str, port: int) -> redis.Redis:
    # one try: redis-py 6 retries 3 times with back-off by default, which made a probe of
    # a crashed node take seconds instead of PROBE_TIMEOUT_S
    return redis.Redis(host=host, port=port, socket_timeout=PROBE_TIMEOUT_S,
                       socket_connect_timeout=PROBE_TIMEOUT_S, decode_responses=True,
                       retry=Retry(NoBackoff(), 0))


def _sentinel_sees_all(host: str) -> bool:
    try:
        fields = _client(host, SENTINEL_PORT).execute_command("SENTINEL", "MASTER", MASTER_NAME)
    except redis.RedisError:
        return False
    if isinstance(fields, list):  # RESP2 without the response callback: a flat list
        fields = dict(zip(fields[::2], fields[1::2], strict=False))
    return str(fields.get("num-slaves")) == "2" and str(fields.get("num-other-sentinels")) == "2"


def write_refusal(host: str) -> str | None:
    """None when the Redis at HOST takes a write now, else why not (NOREPLICAS ...,
    READONLY ..., or the connection error): a probe, never raises."""
    try:
        _client(host, REDIS_PORT).set("cr-lab:probe", "1")
    except redis.exceptions.ReadOnlyError as exc:  # redis-py strips the server's code
        return f"READONLY {exc}"
    except redis.RedisError as exc:
        return f"{exc.__class__.__name__}: {exc}"
    return None


def role(host: str) -> str:
    """``master``, ``slave``, or ``down (...)`` for the Redis at HOST."""
    try:
        return str(_client(host, REDIS_PORT).execute_command("ROLE")[0])
    except redis.RedisError as exc:
        return f"down ({exc.__class__.__name__})"


def sentinel_view(host: str) -> str | None:
    """The master's address as the sentinel at HOST names it now (None: no answer)."""
    try:
        found = _client(host, SENTINEL_PORT).execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
    except redis.RedisError:
        return None
    return str(found[0]) if found else None


def views(plan: LabPlan) -> dict[str, str | None]:
    """node -> the node its sentinel names as master (None: no answer or unknown address)."""
    by_address = {address(plan, n.name): n.name for n in plan.quorum_nodes()}
    return {n.name: by_address.get(sentinel_view(address(plan, n.name)) or "")
            for n in plan.quorum_nodes()}


def master(plan: LabPlan) -> str | None:
    """The master node as a majority of the sentinels name it (None without a majority)."""
    counts = Counter(v for v in views(plan).values() if v)
    best = counts.most_common(1)
    return best[0][0] if best and best[0][1] * 2 > len(plan.quorum_nodes()) else None


def move_master(plan: LabPlan, node: str, *, timeout: float = 60.0) -> None:
    """A graceful Sentinel failover (``SENTINEL FAILOVER``) until NODE is the master that
    takes writes and every other Redis is its replica. With the witness never promoted
    there is one candidate: the other site's node.

    A replica Sentinel has only just turned from an old master may not be promoted in
    time (``-failover-abort-slave-timeout``): wait until its link is up, and ask again
    after an abort."""
    target = plan.quorum_node(node)
    if target.kind is NodeKind.WITNESS:
        raise LabError("the witness's Redis is never promoted (replica-priority 0)")
    own = address(plan, node)

    def settled() -> bool:
        return (master(plan) == node and write_refusal(own) is None
                and all(role(address(plan, n.name)) == "slave"
                        for n in plan.quorum_nodes() if n.name != node))

    deadline = time.monotonic() + timeout
    while not settled():
        if master(plan) != node:
            netns.wait_until(lambda: _link_up(own), timeout=max(0.1, deadline - time.monotonic()),
                             what=f"the Redis of {node} to be an in-sync replica", interval=0.1)
            _ask_failover(plan)
        attempt_ends = min(deadline, time.monotonic() + FAILOVER_TIMEOUT_MS / 1000 + 2)
        while not settled() and time.monotonic() < attempt_ends:
            time.sleep(0.1)
        if time.monotonic() >= deadline and not settled():
            raise LabError(f"timed out after {timeout:g} s waiting for the Redis of {node} "
                           "to be master with every other as its replica (see "
                           f"{plan.state_dir}/nodes/*/log/sentinel.log)")


def _link_up(host: str) -> bool:
    try:
        info = _client(host, REDIS_PORT).info("replication")
    except redis.RedisError:
        return False
    return (info.get("role") == "slave" and info.get("master_link_status") == "up"
            and not info.get("master_sync_in_progress"))


def _ask_failover(plan: LabPlan) -> None:
    for n in plan.quorum_nodes():
        try:
            _client(address(plan, n.name), SENTINEL_PORT).execute_command(
                "SENTINEL", "FAILOVER", MASTER_NAME)
            return
        except redis.RedisError:  # INPROG, or no answer: the next sentinel
            continue


def run_cli(plan: LabPlan, node: str, *args: str, timeout: float = 5.0
            ) -> subprocess.CompletedProcess[str]:
    """``redis-cli`` inside NODE against its own Redis (127.0.0.1)."""
    return netns.run(["ip", "netns", "exec", plan.quorum_node(node).namespace, "redis-cli",
                      "-p", str(REDIS_PORT), *args], check=False, timeout=timeout)
