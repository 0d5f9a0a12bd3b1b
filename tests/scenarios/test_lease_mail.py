"""The serving host's lease in the lab (roles/cr_lease_agent, act/lease.py): split brain
ruled out by the hosts themselves.

Each story runs `crctl run` (fast profile: a probe a second, four failed probes call a
host down; lease defaults: renewed each round, ttl 3.8 s, promotion wait 4.1 s) with the
lease agents installed on every member through the role (lab supervisor: a process in the
host's namespaces), under the client watch (never two serving hosts, never two holders of
the shared IP).

- asymmetric partition: mail-a stays reachable from the client but is cut off from the
  orchestrator and its peers. Its agent starts stopping it (shared IP released, then the
  service stopped) once no renewal came for the ttl, and only after that is mail-b
  promoted; the failover's reason names the lease; the client never sees both serve.
  ``CR_LEASE_RUNS`` runs (1 in CI; bench/lease_partition_bench.py
  runs 10 and prints the figures).
- short blip: a partition and a freeze of 1 s each (below the ttl minus two renewals and
  a round, 1.5 s here: the longest silence one renewal a round can leave): no self-fence,
  no failover.
- paused: the renewals say so, and a partition longer than the ttl does not fence; a
  primary cut off across the resume is held, not failed over, until an ordinary renewal
  reaches it (its agent keeps the paused lease without end).
- killed agent: SIGKILL of mail-a's agent: the service keeps running, the orchestrator
  reports the agent down (history, crctl status) and restarts it through the role; the
  restarted agent finds its lease renewed all along and keeps serving.

Run: CR_LAB_NAME=lea CR_LAB_BASE=198.18.48.0/20 pytest -m lab tests/scenarios/test_lease_mail.py
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import time
from pathlib import Path

import pytest
from scenario_kit import (  # noqa: F401 - fixtures
    CRCTL, running_orchestrator, scenario_inventory, shared_ip_holder, split_brain_watch,
    wait_for,
)

from cr_orchestrator.act.playbook_runner import run_playbook
from cr_orchestrator.state.lease import LeaseStore

pytestmark = pytest.mark.lab

RUNS = int(os.environ.get("CR_LEASE_RUNS", "1"))
FENCE = re.compile(r"^(?P<at>\S+) cr-lease-agent mail: lease of epoch (?P<epoch>\d+) ran out: "
                   r"no renewal for (?P<silent>[0-9.]+) s \(ttl (?P<ttl>[0-9.]+) s\)")
RELEASED = re.compile(r"^(?P<at>\S+) cr-lease-agent mail: released the shared IP")
STOPPED = re.compile(r"^(?P<at>\S+) cr-lease-agent mail: stopped service mail")


def install_agents(lab, inventory: str, state: str = "started") -> None:
    result = run_playbook(playbook="lease_agent", inventory=inventory, timeout_s=120,
                          extravars={"cr_cluster": "mail", "cr_lease_agent_state": state})
    assert result.ok, result.summary


def stop_agents(lab) -> None:
    """The agents of every host of this lab gone: a leftover agent would fence the next
    story's hosts (found by its script in the host's network namespace)."""
    for host in ("mail-a", "mail-b", "mail-dr"):
        lab.run_on(host, "pkill --ns $$ --nslist net -f '^sh /var/lib/cr-orchestrator/"
                         "cr-lease-agent-mail[.]sh$'")


def agent_log(lab, host: str) -> list[str]:
    path = Path(lab.state_dir_of(host)) / "mail.lease-agent.log"
    return path.read_text().splitlines() if path.exists() else []


def address_lifetime(lab, host: str) -> int | None:
    """Seconds the kernel still keeps the shared IP on ``host``; None: forever or not held."""
    listing = lab.run_on(host, "ip -o addr show dev eth0").stdout
    line = next((line for line in listing.splitlines() if f" {lab.shared_ip}/" in line), "")
    m = re.search(r"valid_lft (\d+)sec", line)
    return int(m[1]) if m else None


def greets(lab, host: str) -> bool:
    """An SMTP greeting from ``host``'s own address, seen from the client."""
    address = lab.hosts[host].public
    probe = (f"import socket; s = socket.create_connection(({address!r}, 25), timeout=1); "
             "print(s.recv(64).decode())")
    done = lab.run_on("client", ["python3", "-c", probe])
    return done.returncode == 0 and done.stdout.startswith("220")


def log_time(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def serving(lab, host: str) -> bool:
    return lab.run_on(host, [lab.mailctl, "status"]).returncode == 0


@pytest.fixture
def leased(lab, split_brain_watch, tmp_path):
    """`crctl run` with the lease agents running on every member, settled."""
    inventory = scenario_inventory(lab, tmp_path, cr_lease_agent_supervisor="lab")
    with running_orchestrator(lab, inventory) as orch:
        try:
            stop_agents(lab)
            install_agents(lab, inventory)
            orch.settle()
            store = LeaseStore(orch.state.redis, orch.prefix)
            wait_for(lambda: (store.agent("mail") or {}).get("state") == "up", 30,
                     "a renewal of mail-a's lease that finds its agent running", every_s=0.3)
            orch.lease = store
            yield orch
        finally:
            stop_agents(lab)


@pytest.mark.parametrize("run", range(RUNS))
def test_asymmetric_partition_the_old_primary_stops_before_the_new_one_starts(
        lab, leased, run):
    orch = leased
    before = len(agent_log(lab, "mail-a"))
    cut = time.time()
    lab.fail("mail-a", "asymmetric")
    # the shared IP goes first: its kernel lifetime ends over a second before the lease
    # runs out, or the agent releases it when the lease does
    wait_for(lambda: "mail-a" not in shared_ip_holder(lab), 30,
             "mail-a's shared IP to go", every_s=0.1)
    dropped = time.time()
    wait_for(lambda: orch.state.primary("mail") == "mail-b", 90, "mail-b promoted",
             every_s=0.2)
    promotion = next(e for e in orch.state.events("mail", count=200)
                     if e.kind == "promotion" and e.data.get("new_primary") == "mail-b")
    # what its agent did, in its own words (its service's stop may still be under way)
    wait_for(lambda: any(STOPPED.match(line) for line in agent_log(lab, "mail-a")[before:]),
             30, "mail-a's agent to say it stopped the service", every_s=0.2)
    lines = agent_log(lab, "mail-a")[before:]
    fence = next((FENCE.match(line) for line in lines if FENCE.match(line)), None)
    assert fence is not None, "\n".join(lines)
    stopped = next(STOPPED.match(line) for line in lines if STOPPED.match(line))
    figures = (f"lease run {run}: cut at 0; mail-a's shared IP gone at {dropped - cut:.2f} s "
               f"(released by the agent: {any(RELEASED.match(line) for line in lines)}), "
               f"service stopped at "
               f"{log_time(stopped['at']) - cut:.2f} s after {fence['silent']} s without "
               f"renewal (ttl {fence['ttl']} s); mail-b promoted at "
               f"{promotion.at - cut:.2f} s")
    print(figures)
    # its agent stopped it once its lease ran out, not before: nothing renewed it for the
    # ttl. Clients had lost it earlier, through its kernel: the address's lifetime and
    # the ports' opening end before the lease (the agent's own check may come a little
    # after the ttl on a loaded machine: it is the clean-up, the kernel is the fence)
    assert float(fence["ttl"]) <= float(fence["silent"]), figures
    renewed_at = log_time(fence["at"]) - float(fence["silent"])  # its last renewal
    # gone by the end of the lease (seen by polling every 0.1 s, hence the allowance)
    assert dropped < renewed_at + float(fence["ttl"]) + 0.3, figures
    # and mail-b was promoted only after: clients had lost mail-a's shared IP and its
    # service was stopping (the watch says they never saw both serve)
    assert dropped < promotion.at and log_time(fence["at"]) < promotion.at, figures
    assert not serving(lab, "mail-a") and "mail-a" not in shared_ip_holder(lab)
    decision = next(e.data["reason"] for e in reversed(orch.state.events("mail", count=200))
                    if e.kind == "decision" and e.data.get("action") == "failover")
    assert "mail-a's lease has run out" in decision or "mail-a's lease may still hold" in \
        decision, decision
    wait_for(lambda: serving(lab, "mail-b") and shared_ip_holder(lab) == ["mail-b"], 60,
             "mail-b serving with the shared IP", every_s=0.3)
    lab.heal("mail-a")
    # back, it stays stopped: the orchestrator sees it and does not demote a server
    wait_for(lambda: (orch.state.last_decision("mail") or {}).get("members", {}).get("mail-a")
             not in (None, "host down", "host suspect"), 60, "mail-a seen again", every_s=0.5)
    assert not serving(lab, "mail-a")


def test_a_frozen_primary_loses_the_shared_ip_in_its_own_kernel(lab, leased):
    """Every process of mail-a stopped for 20 s (its agent too: a host whose userspace
    hangs while its kernel runs). Nothing on mail-a can release the shared IP, but the
    address only lives as long as the lease: the kernel drops it before mail-b is
    promoted, so clients never see two hosts answer ARP for it (the watch checks)."""
    orch = leased
    ttl = float((Path(lab.state_dir_of("mail-a")) / "mail.lease").read_text().split()[2])
    lifetime = address_lifetime(lab, "mail-a")
    assert lifetime is not None and lifetime < ttl, lifetime
    frozen = time.time()
    lab.fail("mail-a", "freeze", for_s=20)
    wait_for(lambda: "mail-a" not in shared_ip_holder(lab), ttl + 2,
             "mail-a's kernel to drop the shared IP", every_s=0.1)
    dropped = time.time() - frozen
    wait_for(lambda: orch.state.primary("mail") == "mail-b", 60, "mail-b promoted",
             every_s=0.2)
    promotion = next(e for e in orch.state.events("mail", count=200)
                     if e.kind == "promotion" and e.data.get("new_primary") == "mail-b")
    print(f"freeze at 0: mail-a's address gone at {dropped:.2f} s, mail-b promoted at "
          f"{promotion.at - frozen:.2f} s")
    assert dropped < promotion.at - frozen
    wait_for(lambda: shared_ip_holder(lab) == ["mail-b"], 30, "mail-b holding the shared IP",
             every_s=0.2)
    assert lab.faults(), "the freeze ended before the check"  # still frozen: the kernel did it
    wait_for(lambda: not lab.faults(), 40, "the freeze to end", every_s=0.5)
    # thawed, its agent finds the lease run out and stops the service
    wait_for(lambda: not serving(lab, "mail-a"), 30, "mail-a's agent to stop its service",
             every_s=0.3)
    assert shared_ip_holder(lab) == ["mail-b"]


def test_a_new_primary_cut_off_before_its_first_renewal_stops_after_the_ttl(
        lab, split_brain_watch, tmp_path):
    """A switchover to mail-b (what the orchestrator runs, with its lease_ttl), then no
    renewal ever (no orchestrator runs: as if mail-b were cut off right after its
    promotion). The promotion wrote mail-b's first lease beside its role record, so its
    agent stops it once the ttl has passed: before, a host that had never received a
    renewal was not leased at all and kept serving (chaos campaign, seed 890593)."""
    # no renewal comes: the first lease must outlast the switchover's own run, up to its
    # check that clients get an answer (the orchestrator renews meanwhile, not here)
    ttl = "25"
    inventory = scenario_inventory(lab, tmp_path, cr_lease_agent_supervisor="lab")
    try:
        stop_agents(lab)
        install_agents(lab, inventory)
        moved = time.time()
        result = run_playbook(playbook="switchover", inventory=inventory, timeout_s=120,
                              extravars={"cr_cluster": "mail", "cr_old_primary": "mail-a",
                                         "cr_new_primary": "mail-b", "cr_epoch": 1,
                                         "cr_lease_ttl": ttl})
        assert result.ok, result.summary  # its check that clients get an answer included
        lease = (Path(lab.state_dir_of("mail-b")) / "mail.lease").read_text().split()
        assert lease[0] == "1" and lease[2] == ttl, lease
        wait_for(lambda: not serving(lab, "mail-b") and not shared_ip_holder(lab), 60,
                 "mail-b's agent to stop serving once its first lease ran out", every_s=0.2)
        lines = agent_log(lab, "mail-b")
        fence = next((FENCE.match(line) for line in lines if FENCE.match(line)), None)
        assert fence is not None and fence["epoch"] == "1", "\n".join(lines)
        print(f"first lease: mail-b fenced {log_time(fence['at']) - moved:.1f} s after the "
              f"switchover began ({fence['silent']} s without renewal)")
        assert not serving(lab, "mail-a")  # demoted by the switchover: nobody serves
    finally:
        stop_agents(lab)


def test_a_restart_in_place_after_a_crash_is_not_fenced_by_the_old_lease(
        lab, split_brain_watch, tmp_path):
    """mail-a back from a crash: its lease file is the one from before (run out), its
    service down. The orchestrator restarts the service in place (service.yml, with its
    lease_ttl) before any renewal reached the host. The order itself is a lease: the
    agent keeps the service running (before, it found the old lease run out and stopped
    the service it had just seen start: chaos campaign, seed 241758, 27 s of outage)."""
    inventory = scenario_inventory(lab, tmp_path, cr_lease_agent_supervisor="lab")
    state = Path(lab.state_dir_of("mail-a"))
    try:
        stop_agents(lab)
        lab.run_on("mail-a", [lab.mailctl, "stop"], check=True)
        up = float(lab.run_on("mail-a", "cut -d' ' -f1 /proc/uptime").stdout)
        (state / "mail.role").write_text("primary 0\n")
        (state / "mail.lease").write_text(f"0 {up - 60:.2f} 3.8 0\n")  # ran out long ago
        install_agents(lab, inventory)
        before = len(agent_log(lab, "mail-a"))
        result = run_playbook(playbook="service", inventory=inventory, timeout_s=120,
                              limit="mail-a",
                              extravars={"cr_cluster": "mail", "cr_new_primary": "mail-a",
                                         "cr_epoch": 0, "cr_lease_ttl": "25",
                                         "cr_service_action": "restarted"})
        assert result.ok, result.summary
        time.sleep(3)  # a dozen of the agent's checks
        lines = agent_log(lab, "mail-a")[before:]
        assert not any("ran out" in line for line in lines), "\n".join(lines)
        assert serving(lab, "mail-a") and greets(lab, "mail-a")
        assert (state / "mail.lease").read_text().split()[2] == "25"
    finally:
        stop_agents(lab)


def test_a_short_blip_neither_fences_nor_fails_over(lab, leased):
    orch = leased
    before = len(agent_log(lab, "mail-a"))
    started = time.time()
    for mode in ("asymmetric", "freeze"):
        lab.fail("mail-a", mode, for_s=1.0)
        wait_for(lambda: not lab.faults(), 30, f"the {mode} blip to heal", every_s=0.2)
        time.sleep(6)  # longer than the promotion wait: a fence or failover would show
    lines = agent_log(lab, "mail-a")[before:]
    assert not any("ran out" in line for line in lines), "\n".join(lines)
    assert serving(lab, "mail-a") and shared_ip_holder(lab) == ["mail-a"]
    assert (orch.state.primary("mail"), orch.state.epoch("mail")) == ("mail-a", 0)
    moves = [e.data for e in orch.state.events("mail", count=300)
             if e.at >= started and e.kind == "decision"
             and e.data.get("action") not in ("none", "hold")]
    assert not moves, moves


def test_a_primary_cut_off_across_the_resume_is_not_failed_over_while_its_paused_lease_holds(
        lab, leased):
    """Its agent keeps the paused lease without end: counting the ttl from the last
    renewal would promote mail-b while mail-a still serves the clients that reach it."""
    orch = leased
    lease_file = Path(lab.state_dir_of("mail-a")) / "mail.lease"
    assert orch.crctl("pause", "mail").returncode == 0
    wait_for(lambda: lease_file.read_text().split()[3] == "1", 30,
             "a renewal that says the cluster is paused", every_s=0.2)
    lab.fail("mail-a", "asymmetric")
    resumed = orch.crctl("resume", "mail")
    assert resumed.returncode == 0, resumed.stderr
    resumed_at = time.time()
    # detection (4 probes) + the promotion wait, and more: a failover would have come
    wait_for(lambda: "given while the cluster was paused" in
             ((orch.state.last_decision("mail") or {}).get("reason") or ""), 30,
             "the hold that names the paused lease", every_s=0.3)
    time.sleep(6)
    assert serving(lab, "mail-a") and shared_ip_holder(lab) == ["mail-a"]
    assert orch.state.primary("mail") == "mail-a"
    moves = [e.data for e in orch.state.events("mail", count=300)
             if e.at >= resumed_at and e.kind == "decision" and e.data.get("action") == "failover"]
    assert not moves, moves
    assert orch.lease.last_grant("mail")[3], "the record no longer says mail-a holds it paused"
    status = orch.crctl("status")
    assert "mail-a may hold a paused lease (kept without end)" in status.stdout, status.stdout
    lab.heal("mail-a")
    wait_for(lambda: lease_file.read_text().split()[3] == "0" and
             not orch.lease.last_grant("mail")[3], 30,
             "an ordinary renewal answered by mail-a", every_s=0.2)
    assert orch.state.primary("mail") == "mail-a" and serving(lab, "mail-a")


def test_a_killed_agent_is_reported_and_restarted_through_the_role(lab, leased,
                                                                    split_brain_watch):
    import subprocess

    from cr_orchestrator.testworld.clientwatch import summarise

    orch = leased
    pidfile = Path(lab.state_dir_of("mail-a")) / "mail.lease-agent.pid"
    old = int(pidfile.read_text())
    assert address_lifetime(lab, "mail-a") is not None  # the kernel keeps the lease too
    killed = time.time()
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: orch.lease.agent("mail")["state"] == "down", 30,
             "the orchestrator to see mail-a's agent down", every_s=0.2)
    # the service keeps running: nobody fences it, its lease is kept by the orchestrator
    assert serving(lab, "mail-a")
    status = subprocess.run([CRCTL, "status", "-i", orch.inventory, "--redis-url",
                             orch.redis_url, "--prefix", orch.prefix],
                            capture_output=True, text=True, timeout=60)
    assert "lease agent on mail-a: down" in status.stdout, status.stdout + status.stderr
    assert "its process" in status.stdout and "is gone" in status.stdout, status.stdout
    wait_for(lambda: orch.lease.agent("mail")["state"] == "up", 90,
             "mail-a's agent restarted through the role", every_s=0.5)
    new = int(pidfile.read_text())
    assert new != old
    events = [e for e in orch.state.events("mail", count=300) if e.at >= killed]
    down = [e.data["reason"] for e in events if e.kind == "error"
            and e.data.get("lease_agent") == "down"]
    assert down and "the lease agent of mail on mail-a is down" in down[0], down

    def restarts() -> list[dict]:  # recorded when the role's run ends, after the agent runs
        return [e.data for e in orch.state.events("mail", count=300) if e.at >= killed
                and e.kind == "playbook" and e.data.get("playbook") == "lease_agent"]

    wait_for(restarts, 60, "the record of the role's run", every_s=0.5)
    assert restarts()[-1]["ok"] and restarts()[-1]["limit"] == "mail-a", restarts()
    assert serving(lab, "mail-a") and orch.state.primary("mail") == "mail-a"
    assert shared_ip_holder(lab) == ["mail-a"] and greets(lab, "mail-a")
    assert not any(e.kind == "promotion" for e in events)
    assert not any("ran out" in line for line in agent_log(lab, "mail-a"))
    # and clients never lost it: the renewals extended the kernel's part of the lease
    # (the shared IP's lifetime, the ports' opening) while the agent was down
    watched = [s for s in split_brain_watch.samples() if s["t"] >= killed]
    assert summarise(watched).longest_outage_s < 1.0, summarise(watched).sentence()


def test_a_hung_agent_leaves_the_kernel_lease_to_the_renewals(lab, leased, split_brain_watch):
    """mail-a's agent stopped (SIGSTOP) for longer than the address's lifetime and the
    ports' opening, the host itself fine: the orchestrator's renewals extend both (the
    renewal runs the agent's script once, "refresh"), so clients see no outage."""
    from cr_orchestrator.testworld.clientwatch import summarise

    pid = int((Path(lab.state_dir_of("mail-a")) / "mail.lease-agent.pid").read_text())
    lifetime = address_lifetime(lab, "mail-a")
    assert lifetime is not None
    hung = time.time()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(lifetime + 3)
        assert shared_ip_holder(lab) == ["mail-a"] and greets(lab, "mail-a")
        assert address_lifetime(lab, "mail-a") is not None  # still bounded by the lease
    finally:
        os.kill(pid, signal.SIGCONT)
    watched = [s for s in split_brain_watch.samples() if s["t"] >= hung]
    assert summarise(watched).longest_outage_s < 1.0, summarise(watched).sentence()
    assert not any("ran out" in line for line in agent_log(lab, "mail-a"))
    assert orch_primary_is(leased, "mail-a")


def orch_primary_is(orch, host: str) -> bool:
    return orch.state.primary("mail") == host and not [
        e for e in orch.state.events("mail", count=100) if e.kind == "promotion"]


def test_a_paused_cluster_is_not_fenced_by_its_own_agent(lab, leased):
    orch = leased
    lease_file = Path(lab.state_dir_of("mail-a")) / "mail.lease"
    paused = orch.crctl("pause", "mail")
    assert paused.returncode == 0, paused.stderr
    wait_for(lambda: lease_file.read_text().split()[3] == "1", 30,
             "a renewal that says the cluster is paused", every_s=0.2)
    before = len(agent_log(lab, "mail-a"))
    ttl = float(lease_file.read_text().split()[2])
    lab.fail("mail-a", "asymmetric")
    time.sleep(ttl + 3)  # well past the lease: an unpaused agent would have fenced
    lab.heal("mail-a")
    lines = agent_log(lab, "mail-a")[before:]
    assert not any("ran out" in line for line in lines), "\n".join(lines)
    assert serving(lab, "mail-a") and shared_ip_holder(lab) == ["mail-a"]
    assert orch.state.primary("mail") == "mail-a"
    resumed = orch.crctl("resume", "mail")
    assert resumed.returncode == 0, resumed.stderr
    wait_for(lambda: lease_file.read_text().split()[3] == "0", 30,
             "an ordinary renewal after the resume", every_s=0.2)
