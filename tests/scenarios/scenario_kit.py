"""Helpers of the lab stories: the orchestrator as `crctl run`, a client's mail, the
lab's world reset to "as built" (mail-a serving with the shared IP, no epochs, every
service in manual start mode), a fast timing profile, and a client watching for split
brain during the whole story (fixture ``split_brain_watch``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cr_orchestrator.testworld.clientwatch import read_samples, summarise
from cr_orchestrator.state.cluster import ClusterState
from cr_orchestrator.testworld.clientwatch import wait_until
from redis_dump import redis_text  # noqa: F401 - re-exported for the stories
from cr_orchestrator.testworld import storykit
# moved to cr_orchestrator.testworld.storykit (the chaos campaign uses them too); the
# stories keep importing them from here
from cr_orchestrator.testworld.storykit import (  # noqa: F401 - re-exported
    BLOCKER_PID, CRCTL, FAST_POLICY, SYNC_EVERY, Load, Orchestrator, _dns_update, reset_world,
    scenario_inventory, set_dns, shared_ip_holder, unblock)

REDIS_URL = os.environ.get("CR_REDIS_URL", "redis://127.0.0.1:6379/0")


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


def running_orchestrator(lab, inventory: str, *, redis_url: str = REDIS_URL):
    """`crctl run` for ``inventory`` under a prefix of its own, in a lab reset to as-built."""
    return storykit.running_orchestrator(lab, inventory, redis_url=redis_url)


@pytest.fixture
def orchestrator(lab, split_brain_watch, tmp_path):
    """`crctl run` for the lab's inventory with the fast profile, watched by a client."""
    with running_orchestrator(lab, scenario_inventory(lab, tmp_path)) as handle:
        yield handle


def decisions(state: ClusterState) -> list[tuple[str, str | None]]:
    return [(e.data["action"], e.data.get("target")) for e in state.events("mail", count=1000)
            if e.kind == "decision"]
