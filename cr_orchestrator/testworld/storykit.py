"""The pieces of a lab story outside pytest: the orchestrator as `crctl run` under a
Redis prefix of its own, the lab reset to "as built" (mail-a serving with the shared IP,
no epochs, every service in manual start mode), a fast timing profile, the lab's DNS
record, and the SMTP load client in the client namespace.

The scenario stories (tests/scenarios/scenario_kit.py) and the chaos campaign
(:mod:`cr_orchestrator.testworld.chaos`) both use them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import redis
import yaml

from cr_orchestrator.state.cluster import ClusterState, connect
from cr_orchestrator.state.freshness import FreshnessStore
from cr_orchestrator.testworld.clientwatch import wait_until
from cr_orchestrator.testworld.lab.mailload import read_attempts

CRCTL = str(Path(sys.executable).with_name("crctl"))
BLOCKER_PID = "/tmp/cr-scenario-port25-{lab}.pid"
MAIL_HOSTS = ("mail-a", "mail-b", "mail-dr")

# Quick stories: a probe every second, a sync every 10 s. Four failed probes call a host
# down (~4-5 s), so a 2 s freeze or one lost probe stays below the threshold.
FAST_POLICY = {"probe_interval": "1s", "probe_timeout": "0.8s", "failures_before_down": 4}
SYNC_EVERY = "10s"


def shared_ip_holder(lab) -> list[str]:
    """Hosts that have the shared IP on eth0 (a crashed host has no addresses at all)."""
    from cr_orchestrator.errors import LabError

    holders = []
    for host in MAIL_HOSTS:
        try:
            if lab.shared_ip in lab.run_on(host, "ip -o addr show dev eth0").stdout:
                holders.append(host)
        except LabError:
            continue
    return holders


def reset_world(lab) -> None:
    """The lab as built: mail-a serving and holding the shared IP, no epoch on any host
    (an earlier scenario may have moved things: this is a fresh cluster)."""
    lab.heal()
    for host in MAIL_HOSTS:
        for record in Path(lab.state_dir_of(host)).glob("*"):
            record.unlink()
        # a lease agent of an earlier story may have left the kernel's part of its lease
        lab.run_on(host, "nft delete table inet cr_lease_mail 2>/dev/null; true")
        lab.run_on(host, [lab.mailctl, "disable"], check=True)  # manual start: the default
        if host != "mail-a":
            lab.run_on(host, [lab.mailctl, "stop"], check=True)  # one node serves
            lab.run_on(host, f"ip addr del {lab.shared_ip}/24 dev eth0")
    if "mail-a" not in shared_ip_holder(lab):
        lab.run_on("mail-a", f"ip addr add {lab.shared_ip}/24 dev eth0", check=True)
        # neighbours still have the last holder's MAC: announce the move (gratuitous ARP)
        lab.run_on("mail-a", f"timeout 3 arping -U -c 1 -I eth0 {lab.shared_ip}")
    else:  # a lease agent of an earlier story may have left it a kernel lifetime
        lab.run_on("mail-a", f"ip addr change {lab.shared_ip}/24 dev eth0 valid_lft forever "
                             "preferred_lft forever", check=True)
    lab.run_on("mail-a", [lab.mailctl, "start"], check=True)
    set_dns(lab, lab.shared_ip)


def _dns_update(lab):
    import dns.tsigkeyring
    import dns.update

    keyring = dns.tsigkeyring.from_text({"cr-lab-key.": ("hmac-sha256", lab.tsig_secret())})
    return dns.update.Update("lab.test.", keyring=keyring, keyname="cr-lab-key.",
                             keyalgorithm="hmac-sha256")


def set_dns(lab, address: str) -> None:
    """Point mail.lab.test at ``address`` (a signed RFC 2136 update, as the lab's DNS wants)."""
    import dns.query

    update = _dns_update(lab)
    update.replace("mail", 5, "A", address)
    response = dns.query.tcp(update, lab.dns_server, timeout=5)
    if response.rcode() != 0:
        raise RuntimeError(f"the lab's DNS refused the update of mail: {response}")


def unblock(lab) -> None:
    """Stop the process a story left holding mail-a's SMTP port (scenario_kit's
    ``break_mail_service``), if any."""
    pidfile = Path(BLOCKER_PID.format(lab=lab.name))
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
        pidfile.unlink()


def scenario_inventory(lab, directory: Path, *, policy: dict | None = None,
                       **cluster_vars) -> str:
    """The lab's inventory with the fast timing profile (plus ``policy`` and extra cluster
    variables such as ``cr_failback="auto"``), written under ``directory``."""
    inventory = yaml.safe_load(open(lab.inventory_path))
    group = inventory["all"]["children"]["cr_cluster_mail"]["vars"]
    group["cr_policy"] = {**FAST_POLICY, **(policy or {})}
    for replica_set in group["cr_replica_sets"]:
        replica_set["every"] = SYNC_EVERY
    group.update(cluster_vars)
    path = Path(directory) / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    os.chmod(path, 0o600)  # it holds the lab's TSIG key
    return str(path)


class Orchestrator:
    """Handle of a running `crctl run`: its Redis state, freshness, prefix, inventory."""

    def __init__(self, *, client: redis.Redis, prefix: str, inventory: str,
                 redis_url: str, log: Path | None = None) -> None:
        self.state = ClusterState(client, prefix)
        self.freshness = FreshnessStore(client, prefix)
        self.prefix = prefix
        self.inventory = inventory
        self.redis_url = redis_url
        self.log_path = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start `crctl run` (again: same prefix, so the same Redis state)."""
        log = open(self.log_path or os.devnull, "a")
        self.proc = subprocess.Popen(
            [CRCTL, "run", "-i", self.inventory, "--redis-url", self.redis_url, "--prefix",
             self.prefix, "--concurrency", "2"], stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def stop(self) -> int | None:
        """Stop `crctl run` as an operator would (SIGTERM: warm stop); its exit code."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill_child(self, which: str) -> int:
        """SIGKILL the ``worker`` (with its pool processes: its process group) or the
        ``beat`` of `crctl run`, as the OOM killer would; returns the killed pid."""
        from cr_orchestrator.testworld.lab import orchnodes

        return orchnodes.kill_child(self.proc.pid if self.proc else None, which)

    def kill_worker(self) -> int:
        """SIGKILL the Celery worker of `crctl run` with its pool processes."""
        return self.kill_child("worker")

    def forget_everything(self) -> int:
        """Delete every Redis key of this orchestrator (a Redis restarted without
        persistence); returns how many there were."""
        client = self.state.redis
        keys = list(client.scan_iter(match=f"{self.prefix}:*"))
        if keys:
            client.delete(*keys)
        return len(keys)

    def crctl(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """An operator command against this orchestrator's state."""
        return subprocess.run([CRCTL, *args, "-i", self.inventory, "--redis-url",
                               self.redis_url, "--prefix", self.prefix],
                              capture_output=True, text=True, timeout=timeout)

    def synced_since(self, host: str, since: float) -> bool:
        record = self.freshness.get(cluster="mail", set_name="maildata", host=host)
        return (record.last_success_started_at or 0) > since

    def decided_since(self, since: float) -> list[dict]:
        """Decisions recorded at or after ``since`` (unix time), oldest first."""
        return [e.data for e in self.state.events("mail", count=1000)
                if e.kind == "decision" and e.at >= since]

    def settle(self) -> None:
        """Wait until mail-b holds a first copy and the cluster decides nothing to do."""
        wait_until("a first sync of mail-b", lambda: self.freshness.get(
            cluster="mail", set_name="maildata", host="mail-b").last_success_at,
            timeout_s=120, every_s=0.3)
        wait_until("the cluster to settle",
                   lambda: (self.state.last_decision("mail") or {}).get("action") == "none",
                   timeout_s=60, every_s=0.3)


@contextlib.contextmanager
def running_orchestrator(lab, inventory: str, *, redis_url: str,
                         prefix: str | None = None) -> Iterator[Orchestrator]:
    """`crctl run` for ``inventory`` under a prefix of its own, in a lab reset to as-built."""
    reset_world(lab)
    prefix = prefix or f"crscn-{uuid.uuid4().hex[:8]}"
    client = connect(redis_url)  # a plain URL, or a Sentinel-named master
    handle = Orchestrator(client=client, prefix=prefix, inventory=inventory,
                          redis_url=redis_url,
                          log=Path(lab.state_dir) / f"crctl-run-{prefix}.log")
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()
        unblock(lab)
        with contextlib.suppress(redis.RedisError):
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)


class Load:
    """The SMTP load client, in the client namespace, for the whole story."""

    def __init__(self, lab, out: Path, *, every_s: float = 0.05, run: str | None = None) -> None:
        self.out, self.run = out, run or uuid.uuid4().hex[:8]
        argv = [sys.executable, "-m", "cr_orchestrator.testworld.lab.mailload", "--to",
                lab.shared_ip, "--every", str(every_s), "--timeout", "1", "--run", self.run,
                "--out", str(out)]
        self.proc = subprocess.Popen(lab.host_argv("client", argv), stdout=subprocess.DEVNULL,
                                     stderr=open(out.with_suffix(".err"), "w"))

    def acked_after(self, t: float) -> list:
        if not self.out.exists():
            return []
        return [a for a in read_attempts(self.out) if a.acknowledged and a.t > t]

    def stop(self) -> list:
        """Stop sending; every attempt logged. A client stuck in a send on a lossy link is
        killed after 20 s (its last line may be cut: read_attempts skips it)."""
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return read_attempts(self.out)
