"""One schedule in the lab: the cluster under load, the faults on time, heal, wait for
convergence, collect the evidence, judge it.

Schedules run one after the other on one cluster (`crctl run` under a Redis prefix of
its own on the campaign's Sentinel quorum, the lease agents running on every member),
each from the converged state the last one left: role targets ("primary") make a seed's
story the same whichever host is primary then. A replay (``--replay SEED``) runs it on a
fresh cluster (the lab as built: mail-a primary, empty mailboxes, no epochs). Load
meanwhile: the SMTP load client (a numbered message every ``load_every_s``), POP3 and
IMAP readers, and the client-side watch, all in the lab's client namespace.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

from cr_orchestrator.act.playbook_runner import run_playbook
from cr_orchestrator.errors import LabError
from cr_orchestrator.state.lease import LeaseStore
from cr_orchestrator.testworld import storykit
from cr_orchestrator.testworld.chaos import inject
from cr_orchestrator.testworld.chaos.checker import (CONVERGENCE_BOUND_S, Evidence, Verdict,
                                                     judge_schedule)
from cr_orchestrator.testworld.chaos.schedule import Schedule
from cr_orchestrator.testworld.clientwatch import WatchProcess, wait_until
from cr_orchestrator.testworld.lab.mailcheck import scan
from cr_orchestrator.testworld.lab.mailread import read_tries
from cr_orchestrator.testworld.storykit import MAIL_HOSTS, Load, shared_ip_holder

# how long after the last heal convergence is waited for (beyond the bound: measured)
CONVERGENCE_WAIT_S = CONVERGENCE_BOUND_S * 2
AGENT = "cr-lease-agent-mail[.]sh"


@dataclass
class CampaignWorld:
    """What every schedule of a campaign shares: the lab, the Redis quorum, a directory,
    and the cluster (`crctl run` with its lease agents) that schedules run on one after
    the other, each starting from the converged state the last one left. A fresh cluster
    (the lab reset to as built, a new Redis prefix) is made at the start, every
    ``fresh_every`` schedules, and after a schedule that lost a disk, did not converge or
    broke."""

    lab: object
    quorum: object
    directory: Path
    load_every_s: float = 0.1
    fresh_every: int = 10
    orch: object = None
    stack: contextlib.ExitStack | None = None
    runs: int = 0

    def inventory(self) -> str:
        # a campaign fails over far more often than a cluster's flap budget allows in an
        # hour: the budget (a policy, not a safety invariant) would hold every schedule
        # after the second and hide what the faults do
        return storykit.scenario_inventory(self.lab, self.directory,
                                           policy={"max_failovers": 1000},
                                           cr_lease_agent_supervisor="lab")

    def cluster(self, say) -> object:
        if self.orch is not None and self.runs < self.fresh_every:
            return self.orch
        self.close()
        say("  fresh cluster: lab as built, new crctl run, lease agents")
        lab = self.lab
        lab.heal()  # a crash left by the last schedule (disk lost) reboots first
        stop_agents(lab)
        fresh_mail(lab)
        inventory = self.inventory()
        self.stack = contextlib.ExitStack()
        self.stack.callback(stop_agents, lab)
        orch = self.stack.enter_context(storykit.running_orchestrator(
            lab, inventory, redis_url=self.quorum.url,
            prefix=f"chaos-{uuid.uuid4().hex[:8]}"))
        start_agents(lab, inventory)
        orch.settle()
        leases = LeaseStore(orch.state.redis, orch.prefix)
        try:
            wait_until("a renewal finding mail-a's lease agent up",
                       lambda: (leases.agent("mail") or {}).get("state") == "up",
                       timeout_s=60, every_s=0.3)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; the last report: {leases.agent('mail')}") from None
        self.orch, self.runs = orch, 0
        return orch

    def close(self) -> None:
        if self.stack is not None:
            self.stack.close()
        self.stack, self.orch = None, None


def run(world: CampaignWorld, schedule: Schedule, *, say=print) -> Verdict | str:
    """The verdict of ``schedule``, or a sentence saying why it could not run."""
    out = world.directory / f"seed-{schedule.seed}"
    out.mkdir(parents=True, exist_ok=True)
    verdict: Verdict | str
    try:
        orch = world.cluster(say)
        world.runs += 1
        log_from = orch.log_path.stat().st_size if orch.log_path.exists() else 0
        try:
            verdict = _under_load(world, orch, schedule, out, say)
        finally:
            with open(orch.log_path, "rb") as log:  # this schedule's part of crctl run's log
                log.seek(log_from)
                (out / "crctl-run.log").write_bytes(log.read())
    except Exception as exc:  # noqa: BLE001 - one broken schedule must not end a campaign
        (out / "error.txt").write_text(traceback.format_exc())
        verdict = f"{type(exc).__name__}: {exc}"
    if isinstance(verdict, str) or verdict.disk_lost or verdict.convergence_s is None:
        world.runs = world.fresh_every  # the next schedule gets a fresh cluster
    return verdict


def fresh_mail(lab) -> None:
    """Every host's mailbox and quarantines emptied (each schedule counts its own run)."""
    for host in MAIL_HOSTS:
        root = Path(lab.data_dir(host)) / "mail"
        for sub in ("new", "cur", "tmp"):
            for path in (root / "Maildir" / sub).glob("*"):
                path.unlink(missing_ok=True)
        shutil.rmtree(Path(lab.data_dir(host)) / "mail.cr-quarantine", ignore_errors=True)


def agents_running(lab) -> list[str]:
    return [h for h in MAIL_HOSTS if lab.run_on(
        h, f"pgrep --ns $$ --nslist net -f '^sh /var/lib/cr-orchestrator/{AGENT}$'").returncode == 0]


def start_agents(lab, inventory: str) -> None:
    """The lease agents running on every member, installed through the role as an
    operator would (an agent the role reports started but that is gone is an error: the
    first campaign runs found that, roles/cr_lease_agent now starts it under nohup)."""
    result = run_playbook(playbook="lease_agent", inventory=inventory, timeout_s=120,
                          extravars={"cr_cluster": "mail", "cr_lease_agent_state": "started"})
    if not result.ok:
        raise RuntimeError(f"lease agents not installed: {result.summary}")
    try:
        wait_until("a lease agent running on every member",
                   lambda: len(agents_running(lab)) == len(MAIL_HOSTS), timeout_s=5)
    except TimeoutError:
        raise RuntimeError(f"the role started the lease agents, but only "
                           f"{agents_running(lab)} run a moment later") from None


def stop_agents(lab) -> None:
    for host in MAIL_HOSTS:
        try:
            lab.run_on(host, f"pkill --ns $$ --nslist net -f '^sh /var/lib/cr-orchestrator/{AGENT}$'")
        except LabError:
            continue  # a crashed host (a lost disk) runs nothing


def _under_load(world: CampaignWorld, orch, schedule: Schedule, out: Path, say) -> Verdict:
    lab = world.lab
    target = inject.World(lab=lab, orch=orch, quorum=world.quorum)
    watch = WatchProcess(lab, out / "watch.jsonl", interval_s=0.15)
    load = Load(lab, out / "load.jsonl", every_s=world.load_every_s, run=f"s{schedule.seed}")
    readers = subprocess.Popen(
        lab.host_argv("client", [sys.executable, "-m", "cr_orchestrator.testworld.lab.mailread",
                                 "--at", lab.shared_ip, "--every", "1", "--timeout", "1",
                                 "--out", str(out / "read.jsonl")]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    primaries: list[tuple[float, str | None]] = []
    applied: list[inject.Applied] = []
    lost_host = None
    converged_at = None
    try:
        wait_until("the load's first acknowledgements",
                   lambda: len(load.acked_after(0)) >= 10, timeout_s=30, every_s=0.2)
        t0 = time.time()
        steps = sorted([(f.start_s, 0, i) for i, f in enumerate(schedule.faults)] +
                       [(f.start_s + f.duration_s, 1, i) for i, f in enumerate(schedule.faults)
                        if f.duration_s is not None])
        by_index: dict[int, inject.Applied] = {}
        for at, heal, index in steps:
            _sample_until(orch, primaries, t0 + at)
            if heal:
                if index in by_index:
                    inject.heal(target, by_index[index])
                    say(f"  +{time.time() - t0:5.1f} s healed {by_index[index].fault.kind} "
                        f"{by_index[index].victim}")
                continue
            record = inject.apply(target, schedule.faults[index])
            by_index[index] = record
            applied.append(record)
            say(f"  +{record.applied_at - t0:5.1f} s {record.fault.kind} {record.victim}: "
                f"{record.refused or record.detail}")
            if schedule.disk_lost and index == 0 and not record.refused:
                lost_host = record.victim
        last_heal_at = max([r.healed_at or r.applied_at or t0 for r in applied] + [t0])
        converged_at = _wait_converged(orch, lab, watch, primaries, since=last_heal_at,
                                       lost=lost_host)
        say(f"  converged {converged_at - last_heal_at:.1f} s after the last heal"
            if converged_at else f"  not converged {CONVERGENCE_WAIT_S:.0f} s after the last heal")
        _sample_until(orch, primaries, time.time() + 2)  # mail after convergence too
    finally:
        attempts = load.stop()
        _ended(readers)
        _ended(watch.proc)
        for record in applied:  # whatever an error left broken (never the lost disk)
            if record.victim != lost_host:
                inject.heal(target, record)
    primary = _primary(orch)
    found_on = primary if primary and primary != lost_host else None
    maildir = Path(lab.data_dir(found_on)) / "mail" / "Maildir" if found_on else None
    on_primary = (scan(maildir / "new", load.run) + scan(maildir / "cur", load.run)
                  if maildir else [])
    # a lost disk's quarantine went with it
    quarantined = [f for host in MAIL_HOSTS if host != lost_host
                   for f in scan(Path(lab.data_dir(host)) / "mail.cr-quarantine", load.run)]
    evidence = Evidence(
        seed=schedule.seed, profile=schedule.profile, disk_lost=schedule.disk_lost,
        schedule=schedule.sentence(), started_at=t0, faults=[r.as_dict() for r in applied],
        attempts=attempts, samples=watch.samples(),
        reads=read_tries(out / "read.jsonl") if (out / "read.jsonl").exists() else [],
        on_primary=on_primary, quarantined=quarantined, primary=primary,
        last_heal_at=last_heal_at, converged_at=converged_at, lost_host=lost_host,
        primaries=primaries)
    return judge_schedule(evidence)


def _ended(proc: subprocess.Popen) -> None:
    """Stop a client of the schedule, for sure (one left running would blur the next)."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _primary(orch) -> str | None:
    try:
        return orch.state.primary("mail")
    except Exception:  # noqa: BLE001 - Redis mid-failover: unknown for this sample
        return None


def _sample_until(orch, primaries: list, until: float) -> None:
    while True:
        primaries.append((time.time(), _primary(orch)))
        left = until - time.time()
        if left <= 0:
            return
        time.sleep(min(0.5, left))


def _converged(orch, lab, watch, *, since: float, lost: str | None) -> bool:
    """One primary serving through the shared IP alone, the failover's journal closed,
    and every other member (but a lost one) synced from a copy started after ``since``."""
    primary = _primary(orch)
    if primary is None or primary == lost:
        return False
    try:
        if orch.state.change("mail") is not None:
            return False
        others = [h for h in MAIL_HOSTS if h not in (primary, lost)]
        if not all(orch.synced_since(h, since) for h in others):
            return False
    except Exception:  # noqa: BLE001 - Redis mid-failover: not yet
        return False
    recent = [s for s in watch.samples() if s["t"] > time.time() - 1.5]
    if not recent or not all(s["shared_ip_serves"] and s["serving_hosts"] == [primary]
                             for s in recent):
        return False
    return shared_ip_holder(lab) == [primary]


def _wait_converged(orch, lab, watch, primaries: list, *, since: float,
                    lost: str | None) -> float | None:
    deadline = since + CONVERGENCE_WAIT_S
    while time.time() < deadline:
        primaries.append((time.time(), _primary(orch)))
        if _converged(orch, lab, watch, since=since, lost=lost):
            return time.time()
        time.sleep(0.5)
    return None
