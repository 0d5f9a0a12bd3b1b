"""The main job, shown end to end in the lab: a primary crashes and clients barely notice.

Steps: build the lab → start the orchestrator on the lab's inventory → send mail through
the shared IP → wait until it is replicated → watch from the client → crash the primary →
the failover, as a timeline (detected, decided why, playbook steps, service answering
again, outage the client saw) → read the mail back through the shared IP → heal the old
primary → it rejoins as secondary and is resynced → clean up.

Everything here is I/O and presentation; the decisions are the orchestrator's own, read
back from its event stream in Redis.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from cr_orchestrator.testworld.clientwatch import WatchProcess, outage_around, summarise, wait_until
from cr_orchestrator.errors import LabError

CLUSTER = "mail"
PRIMARY, SECONDARY = "mail-a", "mail-b"


@dataclass(frozen=True)
class DemoOptions:
    name: str = "demo"
    base: str = "198.18.112.0/20"
    keep: bool = False
    failover_timeout_s: float = 90.0
    rejoin_timeout_s: float = 120.0
    messages: int = 5


class Printer:
    """Progress lines stamped with the seconds since the demo started."""

    def __init__(self) -> None:
        self.t0 = time.time()

    def __call__(self, text: str) -> None:
        print(f"[{time.time() - self.t0:6.1f}s] {text}", flush=True)

    def at(self, t: float) -> str:
        return f"+{t - self.t0:6.2f}s"


def _client_python(lab, code: str, *, timeout: float = 30.0) -> str:
    proc = lab.client([sys.executable, "-c", code], timeout=timeout)
    if proc.returncode != 0:
        raise LabError(f"demo: client command failed: {proc.stderr.strip()[-300:]}")
    return proc.stdout


def send_mail(lab, *, token: str, count: int) -> None:
    code = (
        "import smtplib\n"
        f"with smtplib.SMTP('{lab.shared_ip}', 25, timeout=10) as s:\n"
        f"    for i in range({count}):\n"
        "        s.sendmail('alice@lab.test', ['bob@lab.test'],\n"
        f"            'Subject: {token} #%d\\r\\n\\r\\nmessage %d before the crash\\r\\n' % (i, i))\n"
    )
    _client_python(lab, code)


def count_mail(lab, *, token: str) -> int:
    """Messages with ``token`` in their subject, read over POP3 through the shared IP."""
    code = (
        "import poplib\n"
        f"p = poplib.POP3('{lab.shared_ip}', 110, timeout=10)\n"
        "p.user('bob'); p.pass_('lab')\n"
        "n = 0\n"
        "for i in range(1, len(p.list()[1]) + 1):\n"
        f"    n += any(b'{token}' in line for line in p.top(i, 0)[1])\n"
        "p.quit(); print(n)\n"
    )
    return int(_client_python(lab, code).strip() or 0)


def playbook_steps(artifact_dir: str | None) -> list[tuple[float, str, str, str]]:
    """(time, host, task, outcome) of every task result a playbook run recorded."""
    outcomes = {"runner_on_ok": "ok", "runner_on_failed": "failed",
                "runner_on_unreachable": "unreachable"}
    steps = []
    for path in sorted(Path(artifact_dir or "/nonexistent").glob("job_events/*.json")):
        try:
            event = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        outcome = outcomes.get(event.get("event"))
        if outcome is None:
            continue
        data = event.get("event_data", {})
        if data.get("res", {}).get("changed"):
            outcome = "changed"
        created = time.mktime(time.strptime(event["created"][:19], "%Y-%m-%dT%H:%M:%S"))
        created += float("0." + event["created"][20:26]) if len(event["created"]) > 20 else 0
        created -= time.timezone  # runner stamps UTC
        steps.append((created, data.get("host", "?"), data.get("task", "?"), outcome))
    return sorted(steps)


class Orchestrator:
    """``crctl run`` for the lab inventory, in the background, logging to a file."""

    def __init__(self, *, inventory: str, prefix: str, log_path: Path) -> None:
        self.log_path = log_path
        env = {**os.environ, "CR_PREFIX": prefix}
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cr_orchestrator.cli", "run", "-i", inventory,
             "--prefix", prefix, "--loglevel", "INFO"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def _events_since(state, t: float) -> list:
    return [e for e in state.events(CLUSTER, count=500) if e.at >= t]


def _describe(event) -> str:
    data = event.data
    if event.kind == "decision":
        return f"decided {data.get('action')}: {data.get('reason')}"
    if event.kind == "playbook":
        verdict = "ok" if data.get("ok") else f"FAILED ({data.get('status')})"
        return (f"playbook {data.get('playbook')} {verdict} in {data.get('duration_s')} s: "
                f"{data.get('summary')}")
    if event.kind == "sync":
        verdict = "ok" if data.get("ok") else "FAILED"
        return (f"sync {data.get('replica_set')} {data.get('source')} -> {data.get('target')} "
                f"{verdict} (epoch {data.get('epoch')}): {data.get('reason')}")
    if event.kind == "promotion":
        return f"promoted {data.get('new_primary')} at epoch {data.get('epoch')}"
    return f"{event.kind}: " + ", ".join(f"{k}={v}" for k, v in data.items()
                                         if k not in ("artifact_dir",))


def print_timeline(say: Printer, *, state, crash_at: float, samples: list[dict]) -> None:
    """The failover as a readable timeline, from the event stream and the client watch."""
    lines = [(crash_at, "primary mail-a crashed (every process killed, addresses gone)")]
    for event in _events_since(state, crash_at - 0.5):
        lines.append((event.at, _describe(event)))
        if event.kind == "playbook":
            for at, host, task, outcome in playbook_steps(event.data.get("artifact_dir")):
                if not task.startswith("Validating arguments"):
                    lines.append((at, f"    {host}: {task} -> {outcome}"))
    outage = outage_around(samples, crash_at)
    if outage is not None:
        back = min(s["t"] for s in samples if s["t"] > crash_at and s["shared_ip_serves"])
        lines.append((back, "client: the service answers through the shared IP again"))
    print("\n  Timeline (seconds after the crash):")
    for at, text in sorted(lines, key=lambda item: item[0]):
        print(f"    {at - crash_at:+7.2f}  {text}")
    if outage is not None:
        print(f"\n  Outage the client saw: {outage:.2f} s "
              "(last answer through the shared IP before the crash to the first after it)")
    summary = summarise(samples)
    print(f"  Client watch: {summary.sentence()}\n")


def run_demo(options: DemoOptions) -> int:
    from cr_orchestrator.errors import LabError
    from cr_orchestrator.testworld.lab import Lab
    from cr_orchestrator.state.cluster import ClusterState, connect

    say = Printer()
    prefix = f"crdemo-{uuid.uuid4().hex[:6]}"
    redis_client = connect()
    state = ClusterState(redis_client, prefix)
    say(f"building the lab {options.name!r} ({options.base}): two sites, three mail hosts, "
        "a client, a DNS server")
    try:
        left_up = Lab.load(name=options.name)
    except LabError:
        left_up = None
    if left_up is not None:
        # A lab left up (--keep, or by hand) holds an earlier story's state: its primary
        # elsewhere and epoch records on the hosts that fence a fresh cluster's syncs.
        say(f"lab {options.name!r} is already up from an earlier run: rebuilding it afresh")
        left_up.down()
    lab = Lab.up(name=options.name, base=options.base)
    orchestrator = watch = None
    try:
        for host, addr in lab.hosts.items():
            say(f"  {host:8} {addr.role:9} {addr.site:7} service {addr.public:15} "
                f"cluster {addr.cluster}")
        say(f"  shared IP {lab.shared_ip}; DNS {lab.dns_name} at {lab.dns_server}")
        log_path = Path(tempfile.gettempdir()) / f"crctl-demo-{prefix}.log"
        say(f"starting the orchestrator (crctl run: Celery worker + RedBeat beat), log {log_path}")
        orchestrator = Orchestrator(inventory=lab.inventory_path, prefix=prefix,
                                    log_path=log_path)
        wait_until("the first probe round", lambda: state.last_decision(CLUSTER), timeout_s=60)
        say(f"first decision: {state.last_decision(CLUSTER)['reason']}")

        token = f"demo-{uuid.uuid4().hex[:8]}"
        say(f"sending {options.messages} messages through the shared IP {lab.shared_ip}")
        send_mail(lab, token=token, count=options.messages)
        sent_at = time.time()
        say("waiting for the scheduled replication to carry them to mail-b and mail-dr")
        wait_until("a sync to mail-b after the mail was sent", lambda: any(
            e.kind == "sync" and e.data.get("target") == SECONDARY and e.data.get("ok")
            for e in _events_since(state, sent_at)),
            timeout_s=90, every_s=0.5)
        say("replicated")

        watch = WatchProcess(lab, Path(tempfile.gettempdir()) / f"crctl-demo-{prefix}.jsonl")
        crash_at = time.time()
        say("crashing the primary mail-a")
        lab.fail(PRIMARY, "crash")
        wait_until("the failover to mail-b", lambda: state.primary(CLUSTER) == SECONDARY,
                   timeout_s=options.failover_timeout_s)
        say(f"mail-b is primary (epoch {state.epoch(CLUSTER)})")
        watch.outage_after(crash_at, timeout_s=60)
        time.sleep(1.0)  # let the playbook's last events land
        print_timeline(say, state=state, crash_at=crash_at, samples=watch.samples())

        found = count_mail(lab, token=token)
        say(f"reading the mail back through the shared IP (POP3, now served by mail-b): "
            f"{found} of {options.messages} messages")

        healed_at = time.time()
        say("healing mail-a: it reboots; its mail service, set to manual start as every "
            "cluster-managed service must be, stays stopped")
        lab.heal(PRIMARY)
        wait_until("mail-a to rejoin and be resynced", lambda: any(
            e.kind == "sync" and e.data.get("target") == PRIMARY and e.data.get("ok")
            for e in _events_since(state, healed_at)),
            timeout_s=options.rejoin_timeout_s, every_s=0.5)
        for event in _events_since(state, healed_at):
            say(f"  {_describe(event)}")
        summary = summarise(watch.samples())
        say(f"done: {summary.sentence()}")
        ok = found == options.messages and summary.split_brain_samples == 0
        return 0 if ok else 1
    finally:
        if watch is not None:
            watch.stop()
        if orchestrator is not None:
            say("stopping the orchestrator")
            orchestrator.stop()
        if options.keep:
            say(f"lab {options.name!r} left up (--keep): `crctl lab down --name {options.name}`")
        else:
            say("removing the lab")
            lab.down()
        if options.keep:
            say(f"its state stays in Redis under the prefix {prefix!r} "
                f"(crctl history mail --prefix {prefix})")
        else:
            for key in redis_client.scan_iter(match=f"{prefix}:*", count=1000):
                redis_client.delete(key)
