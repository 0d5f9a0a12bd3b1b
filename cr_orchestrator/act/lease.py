"""Renewing the serving host's lease, and keeping its agent running (the act edge).

Each round, once the round's own state write to Redis succeeded, the live primary's lease
is renewed: a one-line write to ``<dir>/<cluster>.lease`` on the host ("epoch renewed-at
ttl paused"; renewed-at is read from the host's own monotonic clock as the line is
written, so no clock is compared across machines). The renewal is recorded in Redis
first (``state/lease.py``) with the latest moment the host may receive it: an
orchestrator that cannot write its state (a Redis master without its replicas) renews
nothing, and its hosts stop themselves after ``lease_ttl`` (roles/cr_lease_agent).

The same command reports the host's lease agent (alive, and how old its last check is).
An agent found down is recorded in history and restarted through the role, with the
back-off of the other repeated actions.
"""

from __future__ import annotations

import logging
import re
import shlex
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from cr_orchestrator.act.changes import Env, _play
from cr_orchestrator.decide.lease import renewal_target
from cr_orchestrator.decide.rules import ClusterSnapshot
from cr_orchestrator.model import Cluster, Host, Platform
from cr_orchestrator.state.batch import Batch
from cr_orchestrator.state.cluster import EventKind
from cr_orchestrator.state.host_records import FENCE_DIR_LINUX, FENCE_DIR_WINDOWS
from cr_orchestrator.state.lease import LeaseStore

log = logging.getLogger(__name__)

AGENT_STALE_S = 5.0  # an agent whose last check is older has stopped checking
RESTART_ACTION = "restart_lease_agent"  # its back-off key
PLAYBOOK_GUARD_S = 180.0  # a restart's run never takes longer (the playbook's timeout)
_ANSWER = re.compile(r"^renewed (?P<at>[0-9.]+) (?:agent (?P<pid>[0-9]+) (?P<age>-?[0-9.]+)"
                     r"|(?P<none>agent-none)|(?P<down>agent-down)(?: (?P<why>.*))?)$")


@dataclass(frozen=True)
class Renewal:
    """What one renewal gave: whether the host wrote it, and its agent's state."""

    host: str
    renewed: bool
    agent_up: bool | None  # None: not known (the renewal failed), or no agent installed
    detail: str


def linux_renewal_script(*, cluster: str, epoch: int, ttl_s: float, paused: bool,
                         directory: str = FENCE_DIR_LINUX) -> str:
    """The POSIX sh that writes the lease and reports the agent (one line on stdout)."""
    d = shlex.quote(directory)
    lease, beat = (shlex.quote(f"{directory}/{cluster}.{n}") for n in ("lease", "lease-agent"))
    agent = shlex.quote(f"{directory}/cr-lease-agent-{cluster}.sh")
    # the agent's "refresh" extends the kernel's part of the lease (the shared IP's
    # lifetime, the service ports' opening) from the lease just written, also while the
    # agent itself is down; in a session of its own, so that the answer (and the round
    # waiting for it) does not wait for it: it checks the clock itself before acting.
    # The lease is written aside in a file of this shell's own (.new.PID): a promotion's
    # first lease (cr_fence) may be written at the same moment, and with one shared name
    # one writer's mv found the file already moved by the other
    return f"""read up _ </proc/uptime || exit 3
{{ [ -d {d} ] || mkdir -p {d}; }} && printf '%s %s %s %s\\n' {int(epoch)} "$up" {ttl_s:g} {1 if paused else 0} \
>{lease}.new.$$ && mv -f {lease}.new.$$ {lease} || exit 4
[ -r {agent} ] && setsid -f timeout 2 sh {agent} refresh </dev/null >/dev/null 2>&1
why=""
if read -r pid beat _ <{beat} 2>/dev/null; then
  if [ "$(readlink /proc/$pid/ns/net 2>/dev/null)" != "$(readlink /proc/$$/ns/net)" ] \
     || ! tr '\\0' ' ' </proc/$pid/cmdline 2>/dev/null | grep -q cr-lease-agent; then
    why="its process $pid is gone"
  else
    age=$(awk -v a="$up" -v b="$beat" 'BEGIN {{ printf "%.1f", a - b }}')
    if awk -v a="$age" 'BEGIN {{ exit !(a > {AGENT_STALE_S:g}) }}'; then
      why="its last check was $age s ago"
    else
      echo "renewed $up agent $pid $age"; exit 0
    fi
  fi
else
  echo "renewed $up agent-none"; exit 0
fi
echo "renewed $up agent-down $why"
"""


def windows_renewal_script(*, cluster: str, epoch: int, ttl_s: float, paused: bool,
                           directory: str = FENCE_DIR_WINDOWS) -> str:
    """The PowerShell twin of :func:`linux_renewal_script` (TickCount64: milliseconds
    since boot, Windows' monotonic clock)."""
    d = directory.replace("'", "''")
    return f"""$ErrorActionPreference = 'Stop'
$dir = '{d}'
$up = [Environment]::TickCount64 / 1000.0
$lease = Join-Path $dir '{cluster}.lease'
$beat = Join-Path $dir '{cluster}.lease-agent'
New-Item -ItemType Directory -Force -Path $dir | Out-Null
$invariant = [Globalization.CultureInfo]::InvariantCulture
$line = '{int(epoch)} {{0}} {ttl_s:g} {1 if paused else 0}' -f $up.ToString($invariant)
Set-Content -Path ($lease + '.new') -Value $line -Encoding ascii
Move-Item -Force -Path ($lease + '.new') -Destination $lease
$why = ''
if (Test-Path $beat) {{
    $fields = (Get-Content -Path $beat -TotalCount 1) -split ' '
    $agentPid = [int]$fields[0]
    $age = $up - [double]::Parse($fields[1], $invariant)
    if (-not (Get-Process -Id $agentPid -ErrorAction SilentlyContinue)) {{
        $why = "its process $agentPid is gone"
    }} elseif ($age -gt {AGENT_STALE_S:g}) {{
        $why = [string]::Format($invariant, 'its last check was {{0:F1}} s ago', $age)
    }} else {{
        [string]::Format($invariant, 'renewed {{0}} agent {{1}} {{2:F1}}', $up, $agentPid, $age)
        exit 0
    }}
}} else {{
    [string]::Format($invariant, 'renewed {{0}} agent-none', $up)
    exit 0
}}
[string]::Format($invariant, 'renewed {{0}} agent-down {{1}}', $up, $why)
"""


def parse_answer(host: str, text: str) -> Renewal:
    """The host's one-line answer (its last line) as a :class:`Renewal`."""
    last = (text.strip().splitlines() or [""])[-1].strip()
    m = _ANSWER.match(last)
    if m is None:
        return Renewal(host, False, None, f"unusable answer: {last[:120]!r}")
    if m["none"]:
        return Renewal(host, True, None, "no lease agent installed (it never ran here)")
    if m["down"]:
        return Renewal(host, True, False, f"the lease agent is down: {m['why'] or 'not running'}")
    return Renewal(host, True, True, f"the lease agent (pid {m['pid']}) checked {m['age']} s ago")


@dataclass(frozen=True)
class RenewalOrder:
    """One cluster's lease renewal, as a host receives it."""

    cluster: str
    epoch: int
    ttl_s: float
    paused: bool


def send_renewal(*, host: Host, cluster: str, epoch: int, ttl_s: float, paused: bool,
                 deadline_s: float) -> Renewal:
    """Write the lease on ``host`` within ``deadline_s``; never raises."""
    return send_renewals(host=host, orders=[RenewalOrder(cluster, epoch, ttl_s, paused)],
                         deadline_s=deadline_s)[0]


NOT_WRITTEN = "not-written exit"


def linux_renewals_script(orders: list[RenewalOrder]) -> str:
    """Several clusters' renewals on one host, in one command: each
    :func:`linux_renewal_script` in a subshell after a ``CRPART <index>`` line, with its
    exit status said when it failed (the command's own status is the last part's)."""
    from cr_orchestrator.observe.linux_host import PART_MARK

    return "".join(
        f"echo '{PART_MARK} {i}'\n(\n" + linux_renewal_script(
            cluster=o.cluster, epoch=o.epoch, ttl_s=o.ttl_s, paused=o.paused)
        + f') || echo "{NOT_WRITTEN} $?"\n' for i, o in enumerate(orders))


def send_renewals(*, host: Host, orders: list[RenewalOrder],
                  deadline_s: float) -> list[Renewal]:
    """Write several clusters' leases on ``host`` within ``deadline_s``, in one command
    on Linux (one per order on Windows); what each gave, in order. Never raises."""
    def failed(why: str) -> list[Renewal]:
        return [Renewal(host.name, False, None, why) for _ in orders]

    try:
        if host.platform is Platform.WINDOWS:
            from cr_orchestrator.observe.windows_host import DEFAULT_POOL

            if host.winrm is None:
                return failed("no WinRM settings for this host")
            shell = DEFAULT_POOL.get(address=host.management_address, settings=host.winrm)
            out = []
            for o in orders:
                result = shell.run_ps(windows_renewal_script(
                    cluster=o.cluster, epoch=o.epoch, ttl_s=o.ttl_s, paused=o.paused),
                    deadline_s=deadline_s)
                out.append(parse_answer(host.name, result.stdout) if result.error is None
                           else Renewal(host.name, False, None,
                                        f"renewal not written: {result.error}"))
            return out
        from cr_orchestrator.observe import linux_host

        if host.ssh is None:
            return failed("no SSH settings for this host")
        control_dir = linux_host.default_control_dir()
        control_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv = linux_host.build_ssh_command(host=host, control_dir=control_dir,
                                            connect_timeout_s=deadline_s,
                                            remote_command="sh -s")
        one = len(orders) == 1
        script = (linux_renewal_script(cluster=orders[0].cluster, epoch=orders[0].epoch,
                                       ttl_s=orders[0].ttl_s, paused=orders[0].paused)
                  if one else linux_renewals_script(orders))
        run = linux_host.run_ssh(argv=argv, deadline_s=deadline_s, stdin=script)
        if run.timed_out or run.rc is None or run.rc == 255 or (one and run.rc != 0):
            why = f"no answer within {deadline_s:.1f} s" if run.timed_out else \
                (run.stderr.strip().splitlines() or [f"exit {run.rc}"])[-1]
            return failed(f"renewal not written: {why}"[:200])
        if one:
            return [parse_answer(host.name, run.stdout)]
        return [_part_answer(host.name, text)
                for text in linux_host.split_parts(run.stdout, len(orders))]
    except Exception as exc:  # noqa: BLE001 - the edge returns values, never raises
        return failed(f"renewal failed: {type(exc).__name__}")


def _part_answer(host: str, text: str) -> Renewal:
    last = (text.strip().splitlines() or [""])[-1].strip()
    if last.startswith(NOT_WRITTEN):
        return Renewal(host, False, None, f"renewal not written: exit {last.split()[-1]}")
    return parse_answer(host, text)


class RenewalBatch:
    """One tick's renewals of a group of clusters (``runtime/cycle.py``, probe_rounds),
    sent to each host in one command: at 100 clusters over 9 hosts, 100 SSH sessions a
    second became ~9 (each session is a login on the host: sshd's work, not ours).

    The first round to renew on a host waits, up to :attr:`gather_s`, for the other
    rounds of the group whose primary the host is (``expected``) to ask too, or to be
    over without a renewal, then sends every order gathered. Whoever asks later sends
    with the next batch. The wait is part of the renewal's budget: the grant recorded
    before sending covers it (:func:`renew`)."""

    def __init__(self, expected: dict[str, set[str]], gather_s: float = 0.1) -> None:
        self.expected = expected  # host -> the clusters of the group whose primary it is
        self.gather_s = gather_s
        self._cond = threading.Condition()
        self._open: dict[str, list] = {}  # host -> [orders, future] of the batch gathering
        self._asked: set[str] = set()

    def over(self, cluster: str) -> None:
        """``cluster``'s round renews nothing (more) this tick: nobody waits for it."""
        with self._cond:
            self._asked.add(cluster)
            self._cond.notify_all()

    def send(self, *, host: Host, order: RenewalOrder, deadline_s: float) -> Renewal:
        with self._cond:
            self._asked.add(order.cluster)
            pending = self._open.get(host.name)
            leader = pending is None
            if pending is None:
                pending = self._open[host.name] = [[], Future()]
            index = len(pending[0])
            pending[0].append(order)
            self._cond.notify_all()
            if leader:
                ends = time.monotonic() + self.gather_s
                while not self.expected.get(host.name, set()) <= self._asked:
                    left = ends - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                del self._open[host.name]  # later orders go with a new batch
        if leader:
            try:
                pending[1].set_result(send_renewals(host=host, orders=pending[0],
                                                    deadline_s=deadline_s))
            except BaseException as exc:  # the others must not wait for ever
                pending[1].set_exception(exc)
        return pending[1].result()[index]


def renewal_deadline(host: Host, timeout_s: float) -> float:
    """The probe timeout, plus the allowance of a new ssh connection when none is open
    (as the host probe gives itself): a renewal must not fail for a slow handshake."""
    if host.platform is Platform.WINDOWS or host.ssh is None:
        return timeout_s
    from cr_orchestrator.observe import linux_host

    try:
        return linux_host.session_deadline(host=host, control_dir=linux_host.default_control_dir(),
                                           timeout_s=timeout_s)
    except Exception:  # noqa: BLE001 - the allowance is a refinement; never fail on it
        return timeout_s + linux_host.COLD_ALLOWANCE_S


def renew(env: Env, cluster: Cluster, snapshot: ClusterSnapshot,
          batch: RenewalBatch | None = None) -> Renewal | None:
    """Renew the live primary's lease after this round's state write; record the renewal
    and what it said of the agent. None: no renewal this round (decide/lease.py).
    ``batch``: the tick's renewals of the group this round runs with."""
    host = renewal_target(snapshot)
    try:
        return None if host is None else _renew(env, cluster, snapshot, host, batch)
    finally:
        if batch is not None:  # renewed or not, nobody waits for it any more
            batch.over(cluster.name)


def _renew(env: Env, cluster: Cluster, snapshot: ClusterSnapshot, host: str,
           batch: RenewalBatch | None) -> Renewal:
    policy, store = cluster.policy, LeaseStore(env.redis, env.prefix)
    deadline = renewal_deadline(env.topology.hosts[host], policy.probe_timeout_s)
    gather = batch.gather_s if batch is not None else 0.0
    # Recorded (and replicated, where the Redis quorum asks for it) before it is sent:
    # a renewal nobody recorded would be one no orchestrator waits for. The agent's last
    # report (to tell a change) is read in the same round trip.
    reads = Batch(env.redis)
    store.record_grant(cluster=cluster.name, host=host, epoch=snapshot.epoch,
                       at=env.clock() + gather + deadline, paused=snapshot.paused,
                       pipe=reads.pipe)
    agent_before = store.read_agent(reads, cluster.name)
    paused_host = store.read_paused_host(reads, cluster.name)
    reads.run()
    env.state.replicated(f"the lease renewal of {host}")
    order = RenewalOrder(cluster.name, snapshot.epoch, policy.lease_ttl, snapshot.paused)
    renewal = (batch.send(host=env.topology.hosts[host], order=order, deadline_s=deadline)
               if batch is not None else
               send_renewal(host=env.topology.hosts[host], cluster=cluster.name,
                            epoch=snapshot.epoch, ttl_s=policy.lease_ttl,
                            paused=snapshot.paused, deadline_s=deadline))
    # what the answer says, in one round trip
    now, pipe = env.clock(), env.redis.pipeline(transaction=False)
    if renewal.renewed:  # answered: it got the renewal before now
        store.record_grant(cluster=cluster.name, host=host, epoch=snapshot.epoch, at=now,
                           paused=snapshot.paused, pipe=pipe)
        if not snapshot.paused:
            store.ordinary_answered(cluster=cluster.name, host=host,
                                    paused_host=paused_host.value, pipe=pipe)
    changed = renewal.agent_up is not None and store.set_agent(
        cluster=cluster.name, host=renewal.host, up=bool(renewal.agent_up),
        detail=renewal.detail, now=now, before=agent_before.value, pipe=pipe)
    if len(pipe):
        pipe.execute()
    if changed:
        _agent_changed(env, cluster, renewal, now)
    return renewal


def _agent_changed(env: Env, cluster: Cluster, renewal: Renewal, now: float) -> None:
    if not renewal.agent_up:
        env.state.append_event(cluster=cluster.name, kind=EventKind.ERROR, at=now, data={
            "lease_agent": "down", "host": renewal.host,
            "reason": f"the lease agent of {cluster.name} on {renewal.host} is down "
                      f"({renewal.detail.split(': ', 1)[-1]}): its lease is not kept on the "
                      "host; restarting it through the role cr_lease_agent"})
    else:
        log.info("%s: the lease agent on %s runs: %s", cluster.name, renewal.host,
                 renewal.detail)


def restart_agent(env: Env, cluster: Cluster, host: str) -> str:
    """Run the role cr_lease_agent on ``host`` (with the back-off of repeated actions);
    returns what was done, as a sentence."""
    key = dict(cluster=cluster.name, action=RESTART_ACTION, target=host)
    failures, retry_at = env.state.backoff(**key)
    if retry_at > env.clock():
        return (f"not restarting the lease agent on {host} yet: it failed {failures} "
                f"time(s); next try in {retry_at - env.clock():.0f} s")
    # one restart at a time: the rounds on other workers keep renewing meanwhile
    guard = f"{env.prefix}:cluster:{cluster.name}:lease-agent-restart:{host}"
    if not env.redis.set(guard, "1", nx=True, ex=int(PLAYBOOK_GUARD_S)):
        return f"the lease agent on {host} is being restarted by another round"
    try:
        result = _run_role(env, cluster, host)
    finally:
        env.redis.delete(guard)
    env.state.record_action(**key, ok=bool(result.ok), now=env.clock(),
                            base_s=2 * cluster.policy.probe_interval_s)
    word = "restarted" if result.ok else "could not restart"
    return f"{word} the lease agent on {host}: {result.summary}"


def _run_role(env: Env, cluster: Cluster, host: str):
    return _play(env, cluster, "lease_agent", limit=host,
                 extravars={"cr_cluster": cluster.name, "cr_lease_agent_state": "started"},
                 why=f"the lease agent of {cluster.name} on {host} is down")
