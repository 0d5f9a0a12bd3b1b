"""Site A is lost, or cut off, with its orchestrator node: the brain survives.

The lab grows its orchestrator nodes (`crctl lab up --orchestrators`): orch-a at site A,
orch-b at site B and a witness on a third segment, each running redis-server and
redis-sentinel (master on orch-a, `min-replicas-to-write 1`); `crctl run --site X` runs on
orch-a and orch-b through the sentinels. mail-a (primary) and mail-b are at site A,
mail-dr (replica) at site B. The client sends mail through the shared IP (site A) and reads
it back through the DNS name.

1. **Site crash, cr_dr: auto**: site A dies whole (mail-a, mail-b, orch-a with the Redis
   master, a sentinel, a worker and the active beat) under load. orch-b's Redis is
   promoted by the sentinels (with the witness: a majority), orch-b's worker gets the
   cluster's rounds (site A's node no longer says it is alive), its beat takes the lock,
   and the round promotes mail-dr (majority side, within max_replica_lag). DNS points at
   mail-dr; every message acknowledged before mail-dr's last copy started is read back
   there; the outage and the messages lost (the replication interval) are printed.
2. **Site crash, cr_dr: manual**: the same loss ends in a HOLD that names the command;
   the operator runs it (`crctl failover mail --to mail-dr`) and the end state is the same.
3. **Site isolated, cr_dr: auto**: site A is cut off from site B and the witness (its
   hosts still serve its own clients). orch-a's master refuses writes, so it takes no
   action and grants no lease; mail-a's lease agent stops it; orch-b waits for that lease
   and promotes mail-dr. Watched from a client in each site: never two hosts serving at
   once. After the heal, mail-a is demoted (never serving again) and resynced from mail-dr.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from scenario_kit import count_mail, wait_for

from cr_orchestrator.act.playbook_runner import run_playbook
from cr_orchestrator.testworld.clientwatch import read_samples
from cr_orchestrator.testworld.lab import Lab
from cr_orchestrator.testworld.sitestory import Site, resolve, site_crash, smtp_greets

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def olab(lab):
    handle = Lab.up(name=lab.name, base=lab.plan.base, orchestrators=True)
    yield handle
    for node in ("orch-a", "orch-b"):
        with contextlib.suppress(Exception):
            handle.stop_orchestrator(node)
    if handle.faults():
        handle.heal()
    handle.move_redis_master("orch-a", timeout=120)


def _read_back_through_the_name(olab) -> None:
    subject = f"after-site-loss-{uuid.uuid4().hex[:8]}"
    olab.client([sys.executable, "-c", (
        "import smtplib,sys; s=smtplib.SMTP(sys.argv[1], 25, timeout=5); "
        "s.sendmail('a@lab.test', ['lab@lab.test'], 'Subject: ' + sys.argv[2] + '\\r\\n\\r\\nx'); "
        "s.quit()"), olab.dns_name, subject], timeout=15, check=True)
    out = wait_for(lambda: (o := count_mail(olab, subject, address=olab.dns_name))
                   and "IMAP 1" in o and o, 30, "the new mail through the DNS name")
    assert "POP3 1" in out, out


def test_site_a_crash_with_dr_auto_promotes_mail_dr_from_site_b(olab, tmp_path):
    loss = site_crash(olab, tmp_path, dr="auto")
    print("\n" + loss.sentence())
    assert not loss.missing, f"acknowledged before mail-dr's last copy, not there: {loss.missing[:10]}"
    assert [(p["new_primary"], p["epoch"]) for p in loss.promotions] == [("mail-dr", 1)]
    assert "cr_dr is auto and this orchestrator is on the Redis quorum's majority side" \
        in loss.promotions[0]["reason"], loss.promotions[0]["reason"]
    _read_back_through_the_name(olab)


def test_site_a_crash_with_dr_manual_holds_then_the_operator_promotes(olab, tmp_path):
    loss = site_crash(olab, tmp_path, dr="manual")
    print(f"\nheld: {loss.held}\n{loss.sentence()}")
    assert "run `crctl failover mail --to mail-dr`" in (loss.held or "")
    assert not loss.missing, f"acknowledged before mail-dr's last copy, not there: {loss.missing[:10]}"
    assert [(p["new_primary"], p["epoch"]) for p in loss.promotions] == [("mail-dr", 1)]
    assert loss.promotions[0]["kind"] == "operator failover"
    _read_back_through_the_name(olab)


class TwoSiteWatch:
    """The client watch in both sites' client namespaces: during an isolation each sees
    its own side only, so split brain is the union of what they see at the same time."""

    def __init__(self, olab, out: Path) -> None:
        hosts = [f"--host={n}={a.public}" for n, a in sorted(olab.hosts.items())]
        self.outs = {c: out.with_name(f"{out.stem}-{c}.jsonl") for c in ("client", "client-b")}
        self.procs = [subprocess.Popen(olab.host_argv(c, [
            sys.executable, "-m", "cr_orchestrator.testworld.clientwatch", "--shared-ip",
            olab.shared_ip, *hosts, "--interval", "0.15", "--out", str(path),
            "--duration", "900"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for c, path in self.outs.items()]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def overlaps(self, *, bucket_s: float = 0.5) -> list[tuple[float, set]]:
        """Moments (to ``bucket_s``) when the two clients together saw two hosts serve."""
        seen: dict[int, set] = {}
        for path in self.outs.values():
            for sample in read_samples(path) if path.exists() else []:
                seen.setdefault(int(sample["t"] / bucket_s), set()).update(sample["serving_hosts"])
        return [(k * bucket_s, hosts) for k, hosts in sorted(seen.items()) if len(hosts) > 1]

    def samples(self) -> int:
        return sum(len(read_samples(p)) for p in self.outs.values() if p.exists())


def _lease_agents(olab, inventory: str, state: str) -> None:
    """The hosts' lease agents (roles/cr_lease_agent), started or stopped through the role."""
    result = run_playbook(playbook="lease_agent", inventory=inventory, timeout_s=120,
                          extravars={"cr_cluster": "mail", "cr_lease_agent_state": state})
    assert result.ok, result.summary


def test_site_a_isolated_never_two_serving_and_mail_a_rejoins_demoted(olab, tmp_path):
    site = Site(olab, tmp_path, dr="auto")
    watch = None
    try:
        _lease_agents(olab, site.inventory, "started")
        site.settle()
        watch = TwoSiteWatch(olab, tmp_path / "watch")
        time.sleep(2)
        olab.fail("site-a", "isolate")
        isolated_at = time.time()
        wait_for(lambda: olab.redis_write_refusal("orch-a") is not None, 30,
                 "orch-a's master to refuse writes (min-replicas-to-write)")
        print(f"\norch-a refuses writes: {olab.redis_write_refusal('orch-a')}")
        promoted = wait_for(lambda: site.read(lambda s: s.primary("mail") == "mail-dr"), 120,
                            "site B to promote mail-dr", every_s=0.3)
        assert promoted
        promotion = site.events("promotion")[0].data
        print(f"promoted mail-dr {time.time() - isolated_at:.1f} s after the isolation: "
              f"{promotion['reason']}")
        assert "lease" in promotion["reason"], promotion["reason"]
        wait_for(lambda: resolve(olab) == [olab.hosts["mail-dr"].public], 60,
                 "the DNS name to point at mail-dr")
        time.sleep(3)
        healed_at = time.time()
        olab.heal("site-a")
        wait_for(lambda: olab.redis_role("orch-a") == "slave", 60, "orch-a to rejoin as replica")
        wait_for(lambda: (site.freshness("mail-a").last_success_started_at or 0) > healed_at,
                 180, "mail-a to be resynced from mail-dr", every_s=0.5)
        state = site.state()
        assert (state.primary("mail"), state.epoch("mail")) == ("mail-dr", 1)
        assert not smtp_greets(olab, olab.hosts["mail-a"].public), "mail-a serves again"
    finally:
        if watch is not None:
            watch.stop()
        site.stop()
        if olab.faults():
            olab.heal()
        with contextlib.suppress(Exception):
            _lease_agents(olab, site.inventory, "stopped")
    overlaps = watch.overlaps()
    print(f"two-site watch: {watch.samples()} samples; moments with two hosts serving: "
          f"{len(overlaps)}")
    assert watch.samples() > 50
    assert not overlaps, f"two hosts served at once: {overlaps[:5]}"
