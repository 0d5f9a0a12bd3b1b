"""crctl run's watcher supervisor against real Redis: one watcher per continuous set
across orchestrator nodes, stopped when the inventory no longer asks for it."""

from __future__ import annotations

import dataclasses
import threading
import uuid

from cr_orchestrator.act.sync.watcher import WatcherSupervisor
from cr_orchestrator.model import ReplicaSet, ReplicaTarget

from .test_windows_sim import topology


class FakeWatcher:
    """Stands for a SetWatcher: runs until stopped (the watch itself is tested in the lab)."""

    def __init__(self) -> None:
        self.stopping = threading.Event()

    def run(self) -> None:
        self.stopping.wait()

    def stop(self) -> None:
        self.stopping.set()


def with_sets(topo, *sets):
    cluster = dataclasses.replace(topo.clusters["mail"], replica_sets=sets)
    return dataclasses.replace(topo, clusters={"mail": cluster})


def test_one_watcher_per_continuous_set_across_nodes_and_none_once_it_is_gone(redis_client):
    class Sim:  # topology() wants a WS-Man address per host; none is contacted here
        address, port = "127.0.0.1", 5985

    base = topology({"mail-a": Sim()})
    watched = ReplicaSet(name="mail", path=r"D:\MDaemon", every_s=300, continuous=True,
                         targets=(ReplicaTarget("mail-b", r"D:\MDaemon"),))
    periodic = dataclasses.replace(watched, name="logs", path=r"D:\Logs", continuous=False)
    current = {"topo": with_sets(base, watched, periodic)}
    prefix = f"crtest-{uuid.uuid4().hex[:8]}"
    made: list[tuple[str, str]] = []

    def make(topo, cluster, rs):
        made.append((node_of[0], rs.name))
        return FakeWatcher()

    node_of = ["orch-a"]
    a = WatcherSupervisor(topology_of=lambda: current["topo"], make_watcher=make,
                          redis_client=redis_client, prefix=prefix, node="orch-a")
    b = WatcherSupervisor(topology_of=lambda: current["topo"], make_watcher=make,
                          redis_client=redis_client, prefix=prefix, node="orch-b")
    try:
        a.tick()
        node_of[0] = "orch-b"
        b.tick()
        a.tick()
        assert made == [("orch-a", "mail")]  # not the periodic set, and not twice
        assert set(a.running) == {("mail", "mail")} and not b.running
        current["topo"] = with_sets(base, periodic)  # the inventory drops continuous
        a.tick()
        assert not a.running
        a.stop()
        current["topo"] = with_sets(base, watched)
        b.tick()  # the lease was given back: the other node takes the set
        assert made[-1] == ("orch-b", "mail") and set(b.running) == {("mail", "mail")}
    finally:
        a.stop()
        b.stop()
        for key in redis_client.scan_iter(match=f"{prefix}:*"):
            redis_client.delete(key)
