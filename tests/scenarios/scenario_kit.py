"""Helpers of the lab stories: the orchestrator as `crctl run`, a client's mail, the
lab's world reset to "as built" (mail-a serving with the shared IP, no epochs, every
service in manual start mode), a fast timing profile, and a client watching for split
brain during the whole story (fixture ``split_brain_watch``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from cr_orchestrator.testworld.clientwatch import read_samples, summarise
from cr_orchestrator.testworld.lab.mailload import read_attempts
from cr_orchestrator.state.cluster import ClusterState, connect
from cr_orchestrator.testworld.clientwatch import wait_until
from redis_dump import redis_text  # noqa: F401 - re-exported for the stories
from cr_orchestrator.state.freshness import FreshnessStore

REDIS_URL = os.environ.get("CR_REDIS_URL", "redis://127.0.0.1:6379/0")
CRCTL = str(Path(sys.executable).with_name("crctl"))
BLOCKER_PID = "/tmp/cr-scenario-port25-{lab}.pid"


def wait_for(predicate, timeout_s: float, what: str, *, every_s: float = 0.5):
    try:
        return wait_until(what, predicate, timeout_s=timeout_s, every_s=every_s)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def client_script(lab, body: str) -> str:
    proc = lab.client([sys.executable, "-c", textwrap.dedent(body)], timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def send_mail(lab, subject: str) -> None:
    client_script(lab, f"""
        import smtplib
        from email.message import EmailMessage
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "alice@lab.test", "bob@lab.test", {subject!r}
        msg.set_content("sent through the shared IP before the failure")
        with smtplib.SMTP({lab.shared_ip!r}, 25, timeout=5) as smtp:
            smtp.send_message(msg)
    """)


def count_mail(lab, subject: str, *, address: str | None = None) -> str:
    """What a client reading over IMAP and POP3 at ``address`` (default: the shared IP)
    finds ("IMAP 1", "POP3 1"), or the error it got."""
    try:
        return _count_mail(lab, subject, address or lab.shared_ip)
    except AssertionError as exc:
        return f"client error: {exc}"


def _count_mail(lab, subject: str, address: str) -> str:
    return client_script(lab, f"""
        import imaplib, poplib
        imap = imaplib.IMAP4({address!r}, 143, timeout=5)
        imap.login("lab", "lab")
        imap.select("INBOX")
        typ, found = imap.search(None, "SUBJECT", {subject!r})
        print("IMAP", len(found[0].split()))
        imap.logout()
        pop = poplib.POP3({address!r}, 110, timeout=5)
        pop.user("lab"); pop.pass_("lab")
        hits = sum(any({subject!r}.encode() in line for line in pop.retr(i)[1])
                   for i in range(1, len(pop.list()[1]) + 1))
        print("POP3", hits)
        pop.quit()
    """)


def shared_ip_holder(lab) -> list[str]:
    """Hosts that have the shared IP on eth0 (a crashed host has no addresses at all)."""
    from cr_orchestrator.errors import LabError

    holders = []
    for host in ("mail-a", "mail-b", "mail-dr"):
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
    for host in ("mail-a", "mail-b", "mail-dr"):
        for record in Path(lab.state_dir_of(host)).glob("*"):
            record.unlink()
        lab.run_on(host, [lab.mailctl, "disable"], check=True)  # manual start: the default
        if host != "mail-a":
            lab.run_on(host, [lab.mailctl, "stop"], check=True)  # one node serves
            lab.run_on(host, f"ip addr del {lab.shared_ip}/24 dev eth0")
    if "mail-a" not in shared_ip_holder(lab):
        lab.run_on("mail-a", f"ip addr add {lab.shared_ip}/24 dev eth0", check=True)
        # neighbours still have the last holder's MAC: announce the move (gratuitous ARP)
        lab.run_on("mail-a", f"timeout 3 arping -U -c 1 -I eth0 {lab.shared_ip}")
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
    assert response.rcode() == 0, response


def resolve(lab) -> list[str]:
    """What the lab's DNS answers for mail.lab.test now."""
    import dns.message
    import dns.query

    answer = dns.query.udp(dns.message.make_query(lab.dns_name, "A"), lab.dns_server, timeout=3)
    return sorted(r.address for rrset in answer.answer for r in rrset)


def break_mail_service(lab) -> None:
    """Stop mail-a's mail service and hold its SMTP port, so it cannot start again."""
    from cr_orchestrator.errors import LabError

    try:
        lab.fail("mail-a", "service")
    except LabError:  # `mailctl stop` once timed out on a loaded machine: one more try
        if lab.faults():
            lab.heal("mail-a")
        lab.fail("mail-a", "service")
    pidfile = BLOCKER_PID.format(lab=lab.name)
    lab.run_on("mail-a", "nohup timeout 600 python3 -c 'import socket,time; s=socket.socket(); "
               "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
               "s.bind((\"0.0.0.0\", 25)); s.listen(1); time.sleep(600)' "
               f">/dev/null 2>&1 & echo $! > {pidfile}", check=True)


def unblock(lab) -> None:
    pidfile = Path(BLOCKER_PID.format(lab=lab.name))
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
        pidfile.unlink()


# Quick stories: a probe every second, a sync every 10 s. Four failed probes call a host
# down (~4-5 s), so a 2 s freeze or one lost probe stays below the threshold.
FAST_POLICY = {"probe_interval": "1s", "probe_timeout": "0.8s", "failures_before_down": 4}
SYNC_EVERY = "10s"


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


class SplitBrainWatch:
    """`python -m cr_orchestrator.testworld.clientwatch` in the client namespace for a whole story:
    who answers ARP for the shared IP and which hosts greet SMTP on their own address."""

    def __init__(self, lab, out: Path, *, interval_s: float = 0.15) -> None:
        hosts = [f"--host={name}={a.public}" for name, a in sorted(lab.hosts.items())]
        argv = [sys.executable, "-m", "cr_orchestrator.testworld.clientwatch", "--shared-ip",
                lab.shared_ip, *hosts, "--interval", str(interval_s), "--out", str(out),
                "--duration", "1200"]
        self.out = out
        self.two_serving_allowed_s: float | None = None
        self.proc = subprocess.Popen(lab.host_argv("client", argv), stdout=subprocess.DEVNULL,
                                     stderr=open(out.with_suffix(".err"), "w"))
        wait_for(lambda: len(self.samples()) >= 2, 30, "the client watch's first samples",
                 every_s=0.2)

    def allow_two_serving(self, *, for_at_most_s: float) -> None:
        """Accept two hosts greeting on their own addresses (never two shared-IP holders)
        within one window of at most ``for_at_most_s`` (an autostarted old primary before
        its demotion)."""
        self.two_serving_allowed_s = for_at_most_s

    def samples(self) -> list[dict]:
        return read_samples(self.out) if self.out.exists() else []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def verdict(self) -> str:
        """Assert no split brain was seen; return the summary sentence."""
        samples = self.samples()
        summary = summarise(samples)
        gaps = [b["t"] - a["t"] for a, b in zip(samples, samples[1:])]
        two_arp = [s for s in samples if len(s["arp_holders"]) > 1]
        runs = _runs(samples, lambda s: len(s["serving_hosts"]) > 1)
        sentence = (f"client watch: {summary.sentence()}; two ARP holders: {len(two_arp)} "
                    f"samples; two serving: {len(runs)} stretch(es) "
                    f"{', '.join(f'{r:.2f} s' for r in runs) or ''}; "
                    f"largest gap between samples {max(gaps, default=0):.2f} s")
        print(sentence)
        assert summary.samples >= 10, sentence
        # the watch saw the shared IP answer ARP (it is not blind)
        assert any(len(s["arp_holders"]) == 1 for s in samples), sentence
        assert not two_arp, f"the shared IP had two holders: {two_arp[:3]}; {sentence}"
        if self.two_serving_allowed_s is None:
            assert not runs, f"two hosts served at once: {sentence}"
        else:
            # One window, from the first sample with two serving to the last: samples
            # overlap, so one check that timed out in the middle (a loaded host slow to
            # greet) can split that window into two stretches without a second event.
            both = [s["t"] for s in samples if len(s["serving_hosts"]) > 1]
            window = max(both) - min(both) if both else 0.0
            assert window <= self.two_serving_allowed_s, \
                (f"two hosts served over a window of {window:.2f} s, longer than "
                 f"{self.two_serving_allowed_s} s: {sentence}")
            assert not samples or len(samples[-1]["serving_hosts"]) <= 1, sentence
        return sentence


def _runs(samples: list[dict], bad) -> list[float]:
    """Durations of the stretches of consecutive ``bad`` samples, each from its first bad
    sample to the next good one (or the last sample)."""
    runs, start = [], None
    for sample in samples:
        if bad(sample):
            start = sample["t"] if start is None else start
        elif start is not None:
            runs.append(sample["t"] - start)
            start = None
    if start is not None:
        runs.append(samples[-1]["t"] - start)
    return runs


@pytest.fixture
def split_brain_watch(lab, tmp_path):
    """The lab reset to as-built, then a client watching it until the story ends; at
    the end, asserts no sample saw two shared-IP holders or two serving hosts."""
    reset_world(lab)
    watch = SplitBrainWatch(lab, tmp_path / "watch.jsonl")
    yield watch  # pytest runs the rest also when the story failed
    watch.stop()
    watch.verdict()


class Orchestrator:
    """Handle of a running `crctl run`: its Redis state, freshness, prefix, inventory."""

    def __init__(self, *, client: redis.Redis, prefix: str, inventory: str,
                 redis_url: str = REDIS_URL, log: Path | None = None) -> None:
        self.state = ClusterState(client, prefix)
        self.freshness = FreshnessStore(client, prefix)
        self.prefix = prefix
        self.inventory = inventory
        self.redis_url = redis_url
        self.log_path = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start `crctl run` (again: same prefix, so the same Redis state)."""
        log = open(self.log_path, "a")
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

    def kill_worker(self) -> int:
        """SIGKILL the Celery worker of `crctl run` with its pool processes (its process
        group), as the OOM killer would; returns the worker's pid."""
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
                                  capture_output=True, text=True).stdout.split()
        worker = next(int(pid) for pid in children
                      if b"\0worker\0" in Path(f"/proc/{pid}/cmdline").read_bytes())
        os.killpg(worker, signal.SIGKILL)
        return worker

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
        wait_for(lambda: self.freshness.get(cluster="mail", set_name="maildata",
                                            host="mail-b").last_success_at, 120,
                 "a first sync of mail-b", every_s=0.3)
        wait_for(lambda: (self.state.last_decision("mail") or {}).get("action") == "none", 60,
                 "the cluster to settle", every_s=0.3)


@contextlib.contextmanager
def running_orchestrator(lab, inventory: str, *,
                         redis_url: str = REDIS_URL) -> Iterator[Orchestrator]:
    """`crctl run` for ``inventory`` under a prefix of its own, in a lab reset to as-built."""
    reset_world(lab)
    prefix = f"crscn-{uuid.uuid4().hex[:8]}"
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


@pytest.fixture
def orchestrator(lab, split_brain_watch, tmp_path):
    """`crctl run` for the lab's inventory with the fast profile, watched by a client."""
    with running_orchestrator(lab, scenario_inventory(lab, tmp_path)) as handle:
        yield handle


def decisions(state: ClusterState) -> list[tuple[str, str | None]]:
    return [(e.data["action"], e.data.get("target")) for e in state.events("mail", count=1000)
            if e.kind == "decision"]


class Load:
    """The SMTP load client, in the client namespace, for the whole story."""

    def __init__(self, lab, out: Path) -> None:
        self.out, self.run = out, uuid.uuid4().hex[:8]
        argv = [sys.executable, "-m", "cr_orchestrator.testworld.lab.mailload", "--to", lab.shared_ip,
                "--every", "0.05", "--timeout", "1", "--run", self.run, "--out", str(out)]
        self.proc = subprocess.Popen(lab.host_argv("client", argv), stdout=subprocess.DEVNULL,
                                     stderr=open(out.with_suffix(".err"), "w"))

    def acked_after(self, t: float) -> list:
        if not self.out.exists():
            return []
        return [a for a in read_attempts(self.out) if a.acknowledged and a.t > t]

    def stop(self) -> list:
        self.proc.terminate()
        self.proc.wait(20)
        return read_attempts(self.out)
