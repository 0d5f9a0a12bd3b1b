"""The site-loss story outside pytest (the scenario test and bench/site_loss_bench.py).

The lab with its orchestrator nodes (``crctl lab up --orchestrators``): ``crctl run
--site X`` on orch-a and orch-b through the lab's Sentinel quorum, under a Redis prefix of
its own. Site A crashes whole under SMTP load through the shared IP; site B's node
promotes mail-dr (``cr_dr: auto``), or holds until an operator does (``manual``). The
result says how long clients were without the service (until mail.lab.test pointed at a
serving mail-dr) and which acknowledged messages were kept or lost with site A.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from cr_orchestrator.state.cluster import ClusterState
from cr_orchestrator.state.freshness import FreshnessStore
from cr_orchestrator.testworld.lab.mailcheck import scan
from cr_orchestrator.testworld.lab.mailload import Attempt
from cr_orchestrator.testworld.clientwatch import wait_until
from cr_orchestrator.testworld.storykit import Load, reset_world, scenario_inventory, unblock

CRCTL = str(Path(sys.executable).with_name("crctl"))
NODES = ("orch-a", "orch-b")


def resolve(lab) -> list[str]:
    """What the lab's DNS answers for mail.lab.test now."""
    import dns.message
    import dns.query

    answer = dns.query.udp(dns.message.make_query(lab.dns_name, "A"), lab.dns_server, timeout=3)
    return sorted(r.address for rrset in answer.answer for r in rrset)


def smtp_greets(lab, address: str) -> bool:
    """A client (site A's client namespace) gets an SMTP greeting from ``address``."""
    out = lab.client([sys.executable, "-c", (
        "import socket,sys; s=socket.create_connection((sys.argv[1], 25), timeout=1); "
        "print(s.recv(64).decode(errors='replace'))"), address], timeout=5)
    return out.stdout.startswith("220")


def wait(predicate, timeout_s: float, what: str, *, every_s: float = 0.5):
    return wait_until(what, predicate, timeout_s=timeout_s, every_s=every_s)


class Site:
    """One story's brain: ``crctl run`` on both site nodes, and its state as the Redis
    master that a majority of the sentinels names holds it (read from the root namespace,
    which reaches every segment, also during an isolation)."""

    def __init__(self, olab, directory: Path, *, dr: str) -> None:
        self.lab, self.prefix = olab, f"crsite-{uuid.uuid4().hex[:8]}"
        reset_world(olab)
        # the master back at site A (a story before may have left it at B); a node that
        # came back from a crash first resyncs, which takes a while on a loaded machine
        olab.move_redis_master("orch-a", timeout=120)
        # the hosts' lease agents run as lab processes (the lab has no init system)
        self.inventory = scenario_inventory(olab, directory, cr_dr=dr,
                                            cr_lease_agent_supervisor="lab")
        for node in NODES:
            with contextlib.suppress(Exception):
                olab.stop_orchestrator(node)
            olab.start_orchestrator(node, inventory=self.inventory,
                                    env={"CR_PREFIX": self.prefix})

    def client(self) -> redis.Redis:
        master = self.lab.redis_master()
        if master is None:
            raise redis.ConnectionError("the sentinels name no master")
        return redis.Redis(host=self.lab.quorum_address(master), port=6379,
                           socket_timeout=3, socket_connect_timeout=2)

    def state(self) -> ClusterState:
        return ClusterState(self.client(), self.prefix)

    def freshness(self, host: str):
        return FreshnessStore(self.client(), self.prefix).get(
            cluster="mail", set_name="maildata", host=host)

    def read(self, what: Callable[[ClusterState], object]):
        """``what(state)``, or None while the master is being replaced."""
        try:
            return what(self.state())
        except redis.RedisError:
            return None

    def settle(self) -> None:
        def settled() -> bool:
            try:
                return (self.read(lambda s: (s.last_decision("mail") or {}).get("action"))
                        == "none" and bool(self.freshness("mail-dr").last_success_at))
            except redis.RedisError:
                return False
        wait(settled, 180, "the cluster to settle with mail-dr synced")

    def crctl(self, *args: str) -> subprocess.CompletedProcess:
        """An operator's command on orch-b (site B's node, through its sentinels)."""
        return self.lab.run_in("orch-b", [
            "env", f"CR_REDIS_SENTINELS={','.join(self.lab.sentinels)}", "CR_REDIS_MASTER=cr",
            f"CR_PREFIX={self.prefix}", CRCTL, *args, "-i", self.inventory], timeout=300)

    def events(self, kind: str) -> list:
        return [e for e in self.state().events("mail", count=5000) if e.kind == kind]

    def stop(self) -> None:
        for node in NODES:
            with contextlib.suppress(Exception):
                self.lab.stop_orchestrator(node)
        unblock(self.lab)


@dataclass
class SiteLoss:
    dr: str
    outage_s: float  # crash -> mail.lab.test points at mail-dr, which greets
    acknowledged: list[Attempt]
    kept: list[Attempt]  # acknowledged before mail-dr's last copy started
    lost: list[Attempt]  # acknowledged after it: they were only at site A
    missing: list[int]  # kept, but not on mail-dr (must be empty)
    lost_window_s: float  # how long before the crash the lost ones were acknowledged
    promotions: list[dict] = field(default_factory=list)
    held: str | None = None  # manual: the hold's reason before the operator acted

    def sentence(self) -> str:
        return (f"site A crash (cr_dr {self.dr}): mail-dr serving through DNS "
                f"{self.outage_s:.1f} s after the crash; {len(self.acknowledged)} acknowledged, "
                f"{len(self.kept)} before mail-dr's last copy (missing on mail-dr: "
                f"{len(self.missing)}), {len(self.lost)} lost with site A (acknowledged in the "
                f"last {self.lost_window_s:.1f} s before the crash: the replication interval)")


def site_crash(olab, directory: Path, *, dr: str) -> SiteLoss:
    """Crash site A under load and wait until clients reach mail-dr through the name."""
    site = Site(olab, directory, dr=dr)
    dr_address = olab.hosts["mail-dr"].public
    held = None
    try:
        site.settle()
        load = Load(olab, directory / "load.jsonl")
        try:
            started = time.time()
            wait(lambda: len(load.acked_after(started)) >= 20, 30, "the load's first mail")
            wait(lambda: (site.freshness("mail-dr").last_success_started_at or 0) > started + 1,
                 60, "a copy to mail-dr during the load", every_s=0.3)
            olab.fail("site-a", "crash")
            crashed_at = time.time()
            if dr == "manual":
                held = wait(lambda: site.read(lambda s: (d := s.last_decision("mail"))
                                              and d["action"] == "hold"
                                              and "cr_dr is manual" in d["reason"]
                                              and d["reason"]),
                            120, "site B's orchestrator to hold, naming the command")
                done = site.crctl("failover", "mail", "--to", "mail-dr")
                if done.returncode != 0:
                    raise AssertionError(f"crctl failover failed: {done.stdout}{done.stderr}")
            wait(lambda: resolve(olab) == [dr_address] and smtp_greets(olab, dr_address),
                 180, "mail.lab.test to point at mail-dr, serving", every_s=0.3)
            outage_s = time.time() - crashed_at
        finally:
            attempts = load.stop()
        copied_from = site.freshness("mail-dr").last_success_started_at or 0.0
        acked = [a for a in attempts if a.acknowledged]
        kept = [a for a in acked if a.done < copied_from]
        lost = [a for a in acked if a.done >= copied_from]
        maildir = Path(olab.data_dir("mail-dr")) / "mail" / "Maildir"
        on_dr = {f.seq for sub in ("new", "cur") for f in scan(maildir / sub, load.run)}
        return SiteLoss(
            dr=dr, outage_s=outage_s, acknowledged=acked, kept=kept, lost=lost,
            missing=[a.seq for a in kept if a.seq not in on_dr],
            lost_window_s=max(0.0, crashed_at - copied_from) if lost else 0.0,
            promotions=[e.data for e in site.events("promotion")], held=held)
    finally:
        site.stop()
        olab.heal("site-a")
