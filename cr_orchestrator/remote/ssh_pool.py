"""Commands over one kept SSH connection per host, in-process (asyncssh).

A probe round used to fork one OpenSSH client per host probe and per peer check (about
55 ms of client CPU per lab cluster round, most of it those forks). Here every command
is a new channel on a connection the process keeps per host: no fork, no handshake.

- **The same settings OpenSSH would use.** The pool takes the exact ssh argv the caller
  built for OpenSSH (:func:`cr_orchestrator.observe.linux_host.build_ssh_command`: the
  inventory's user, port, key, ``ansible_ssh_common_args``) and asks ``ssh -G`` what that
  command line resolves to (user, host name, port, identity files, IdentitiesOnly, known
  hosts files, StrictHostKeyChecking, key exchange, ServerAlive*), once per argv and
  process. A host key mismatch is refused; an unknown host key is refused too unless
  StrictHostKeyChecking is ``no`` (then nothing is checked, as OpenSSH does) or
  ``accept-new`` (then it is accepted and appended to the user's known hosts file, as
  OpenSSH does). A setting the pool does not reproduce (ProxyCommand, ProxyJump) makes
  :func:`run` hand the command to OpenSSH (:func:`cr_orchestrator.remote.ssh.run`).
- **One asyncio loop per process**, in one daemon thread, owns the connections. A Celery
  prefork child makes its own on first use (the pool is per pid). Nothing lives per
  cluster: connections are per host and shared by every cluster and round of the process.
- **Never raises, hard deadline.** :func:`run` returns an :class:`~cr_orchestrator.remote.ssh.SshRun`
  like the OpenSSH path: ``rc`` 255 and a ``ssh: ...`` stderr line for a connection
  failure (what OpenSSH's client exits with), ``timed_out`` when the deadline passed.
- **Reconnect on failure.** A connection that closes (host gone, sshd restarted,
  keepalive unanswered) leaves the pool; the next command connects again. A command
  whose channel cannot be opened on a kept connection tries once more on a new one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from cr_orchestrator.remote import ssh
from cr_orchestrator.remote.ssh import SshRun

log = logging.getLogger(__name__)

# asyncssh logs at INFO five lines per channel (session requested, command, exit status,
# channel close, closed) and more per connection: ~20 lines a probe round, formatted and
# written by every worker process (a visible part of a round's CPU in bench/scale.py's
# logs), and nothing an operator reads: a failure reaches the probe's own result. Its
# warnings and errors still show; a level set explicitly (logging config) is kept.
if logging.getLogger("asyncssh").level == logging.NOTSET:
    logging.getLogger("asyncssh").setLevel(logging.WARNING)

COLLECT_MARGIN_S = 1.0  # the caller's own wait beyond the deadline (loop busy, thread start)
UNSUPPORTED = ("proxycommand", "proxyjump")


@dataclass(frozen=True)
class Target:
    """Where and how to connect, as ``ssh -G`` resolved the caller's argv."""

    host: str
    port: int
    user: str
    client_keys: tuple[str, ...]
    use_agent: bool
    strict: str  # "yes" | "no" | "accept-new"
    known_hosts: tuple[str, ...]  # user files first, then global ones
    kex_algs: tuple[str, ...]
    ciphers: tuple[str, ...]
    keepalive_s: float
    keepalive_count: int

    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def parse_g_output(text: str) -> Target | str:
    """A :class:`Target` from ``ssh -G`` output, or why the pool cannot reproduce it."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            values.setdefault(key.lower(), []).append(value.strip())

    def one(key: str, default: str = "") -> str:
        return values.get(key, [default])[0]

    for key in UNSUPPORTED:
        if one(key, "none").lower() not in ("none", ""):
            return f"{key} is set"
    strict = {"false": "no", "no": "no", "off": "no", "accept-new": "accept-new"}.get(
        one("stricthostkeychecking", "ask").lower(), "yes")  # "ask" in batch mode refuses
    known: list[str] = []
    for key in ("userknownhostsfile", "globalknownhostsfile"):
        for entry in values.get(key, []):
            known += [os.path.expanduser(p) for p in entry.split() if p != "none"]
    keys = tuple(p for p in (os.path.expanduser(v) for v in values.get("identityfile", []))
                 if os.path.isfile(p))
    supported = {a.decode() for a in asyncssh.kex.get_kex_algs()}
    kex = tuple(a for a in one("kexalgorithms").split(",") if a in supported)
    if not kex:
        return f"no key exchange algorithm in common: {one('kexalgorithms')}"
    # Among the ciphers the command line allows, AES-GCM first: it runs in OpenSSL with
    # the CPU's AES instructions, while chacha20-poly1305 (OpenSSH's first) cost asyncssh
    # about twice the CPU per command here (~1.8 ms against ~1.0 ms, lab host, loaded).
    known_ciphers = {a.decode() for a in asyncssh.encryption.get_encryption_algs()}
    allowed = [a for a in one("ciphers").split(",") if a in known_ciphers]
    ciphers = tuple(sorted(allowed, key=lambda a: 0 if a.endswith("-gcm@openssh.com") else 1))
    if not ciphers:
        return f"no cipher in common: {one('ciphers')}"
    try:
        return Target(host=one("hostname"), port=int(one("port", "22")),
                      user=one("user", "root"), client_keys=keys,
                      use_agent=one("identitiesonly", "no").lower() not in ("yes", "true"),
                      strict=strict, known_hosts=tuple(known), kex_algs=kex, ciphers=ciphers,
                      keepalive_s=float(one("serveraliveinterval", "0")),
                      keepalive_count=int(one("serveralivecountmax", "3")))
    except ValueError as exc:
        return f"unreadable ssh -G output: {exc}"


@functools.lru_cache(maxsize=1024)
def _resolve(options: tuple[str, ...]) -> Target | str:
    """``ssh -G`` of an argv without its remote command (no network; cached)."""
    try:
        out = subprocess.run(["ssh", "-G", *options], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ssh -G failed: {exc}"
    if out.returncode != 0:
        return f"ssh -G failed: {out.stderr.strip()[:200]}"
    return parse_g_output(out.stdout)


def target_of(argv: list[str]) -> Target | str:
    """The :class:`Target` of an ssh argv (``ssh [options] HOST COMMAND``), or why not.

    ConnectTimeout is left out of the key: callers differ only in it, and it does not
    change which connection fits."""
    options: list[str] = []
    for arg in argv[1:-1]:
        if arg.startswith("ConnectTimeout="):
            if options and options[-1] == "-o":
                options.pop()
            continue
        options.append(arg)
    return _resolve(tuple(options))


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _Output(asyncssh.SSHClientSession[str]):
    """One command's output and exit, collected as the channel delivers them: the lean
    twin of ``conn.run()``, whose process and stream layers (readers, writers,
    redirection) cost about a third of a command's CPU here (bench/profile_round.py)."""

    def __init__(self) -> None:
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.exit_status: int | None = None
        self.exit_signal: tuple[str, bool, str, str] | None = None
        self.lost: Exception | None = None

    def data_received(self, data: str, datatype: asyncssh.DataType) -> None:
        (self.stderr if datatype == asyncssh.EXTENDED_DATA_STDERR else self.stdout).append(data)

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str,
                             lang: str) -> None:
        self.exit_signal = (signal, core_dumped, msg, lang)
        self.exit_status = -1  # as asyncssh reports a signalled command's status

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc


async def _command(conn: asyncssh.SSHClientConnection, command: str,
                   stdin: str | None) -> _Output:
    """Run ``command`` on a new channel of ``conn``: its stdin then EOF (as ``conn.run``:
    only when there is input), then wait for the channel to close. Raises what opening
    the channel raises, and the connection's loss when it goes while the command runs."""
    chan, out = await conn.create_session(_Output, command, encoding="utf-8",
                                          errors="replace")
    if stdin:
        chan.write(stdin)
        chan.write_eof()
    await chan.wait_closed()
    if out.lost is not None:
        raise out.lost
    return out


class _Client(asyncssh.SSHClient):
    """Tells the pool when its connection is gone, so the next command reconnects."""

    def __init__(self, on_lost) -> None:
        self._on_lost = on_lost

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()


class SshPool:
    """Kept connections of one process and the loop that drives them."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._loop = asyncio.new_event_loop()
        self._conns: dict[Target, asyncssh.SSHClientConnection] = {}
        self._connecting: dict[Target, asyncio.Task] = {}
        self._thread = threading.Thread(target=self._loop.run_forever, name="cr-ssh-pool",
                                        daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- called from any thread
    def warm(self, target: Target) -> bool:
        """True when a connection to ``target`` is open now (a command needs no handshake)."""
        return target in self._conns

    def run(self, target: Target, command: str, *, deadline_s: float, connect_timeout_s: float,
            stdin: str | None = None) -> SshRun:
        """Run ``command`` on ``target`` within ``deadline_s``; never raises."""
        started = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(
            self._run(target, command, stdin, deadline_s, connect_timeout_s, started), self._loop)
        try:
            return future.result(timeout=deadline_s + COLLECT_MARGIN_S)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return SshRun(None, "", "", time.monotonic() - started, True)
        except Exception as exc:  # noqa: BLE001 - the transport reports, it never raises
            return SshRun(255, "", f"ssh: {type(exc).__name__}: {exc}"[:300],
                          time.monotonic() - started, False)

    def close_all(self) -> None:
        """Close every connection (tests, benches; a worker just exits)."""
        async def close() -> None:
            for conn in list(self._conns.values()):
                conn.close()
            self._conns.clear()
        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass

    # ---------------------------------------------------------------- on the loop
    async def _run(self, target: Target, command: str, stdin: str | None, deadline_s: float,
                   connect_timeout_s: float, started: float) -> SshRun:
        def done(rc: int | None, out: str = "", err: str = "", timed_out: bool = False) -> SshRun:
            return SshRun(rc, out, err, time.monotonic() - started, timed_out)

        try:
            async with asyncio.timeout(deadline_s):
                conn, reused = await self._connection(target, connect_timeout_s)
                try:
                    result = await _command(conn, command, stdin)
                except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, ConnectionError):
                    if not reused:
                        raise
                    # A kept connection that died unnoticed: one more try on a new one.
                    self._drop(target, conn)
                    conn, _ = await self._connection(target, connect_timeout_s)
                    result = await _command(conn, command, stdin)
        except TimeoutError:
            return done(None, timed_out=True)
        except asyncssh.HostKeyNotVerifiable as exc:
            return done(255, err=f"ssh: host key verification failed for {target.label()}: "
                                 f"{exc.reason}")
        except asyncssh.PermissionDenied:
            return done(255, err=f"ssh: {target.label()}: Permission denied (publickey)")
        except asyncssh.Error as exc:
            return done(255, err=f"ssh: {target.label()}: {exc.reason}")
        except ConnectionRefusedError:
            return done(255, err=f"ssh: connect to host {target.host} port {target.port}: "
                                 "Connection refused")
        except OSError as exc:
            return done(255, err=f"ssh: connect to host {target.host} port {target.port}: "
                                 f"{exc.strerror or exc}")
        stdout, stderr = "".join(result.stdout), "".join(result.stderr)
        if result.exit_status is None or result.exit_status < 0:
            why = f"remote command ended by signal {result.exit_signal[0]}" \
                if result.exit_signal else "remote command ended without an exit status"
            return done(255, stdout, f"{stderr}ssh: {why}")
        return done(result.exit_status, stdout, stderr)

    async def _connection(self, target: Target,
                          connect_timeout_s: float) -> tuple[asyncssh.SSHClientConnection, bool]:
        conn = self._conns.get(target)
        if conn is not None:
            return conn, True
        task = self._connecting.get(target)
        if task is None:
            # One handshake per host however many probes wait for it; a waiter that gives
            # up (its deadline) does not cancel it for the others (shield).
            task = asyncio.ensure_future(self._connect(target, connect_timeout_s))
            self._connecting[target] = task
            task.add_done_callback(lambda _t: self._connecting.pop(target, None))
        return await asyncio.shield(task), False

    async def _connect(self, target: Target, connect_timeout_s: float) -> asyncssh.SSHClientConnection:
        known_hosts: object
        existing = [p for p in target.known_hosts if os.path.isfile(p) and os.access(p, os.R_OK)]
        new_host = False
        if target.strict == "no":
            known_hosts = None  # StrictHostKeyChecking=no: OpenSSH checks nothing either
        elif target.strict == "accept-new" and not self._known(target, existing):
            known_hosts, new_host = None, True  # first contact: learn the key below
        else:
            known_hosts = existing or b""  # no file: nothing is trusted, the key is refused
        holder: list[asyncssh.SSHClientConnection] = []
        conn, _client = await asyncssh.create_connection(
            lambda: _Client(lambda: holder and self._drop(target, holder[0])),
            target.host, target.port, username=target.user,
            client_keys=list(target.client_keys),
            agent_path=() if target.use_agent else None,
            known_hosts=known_hosts, config=[], kex_algs=list(target.kex_algs),
            encryption_algs=list(target.ciphers),
            connect_timeout=max(1.0, connect_timeout_s), login_timeout=max(1.0, connect_timeout_s) + 2,
            keepalive_interval=target.keepalive_s or 0, keepalive_count_max=target.keepalive_count,
            preferred_auth="publickey", x509_trusted_certs=None, gss_host=None)
        holder.append(conn)
        if new_host:
            self._learn(target, conn)
        self._conns[target] = conn
        return conn

    def _drop(self, target: Target, conn: asyncssh.SSHClientConnection) -> None:
        if self._conns.get(target) is conn:
            del self._conns[target]
        conn.abort()

    @staticmethod
    def _known(target: Target, files: list[str]) -> bool:
        """Whether any known hosts file names ``target`` (its key may still differ)."""
        for path in files:
            try:
                trusted, cas, *_ = asyncssh.match_known_hosts(
                    path, target.host, target.host, None if target.port == 22 else target.port)
            except (OSError, ValueError, asyncssh.KeyImportError) as exc:
                log.warning("cannot read known hosts file %s: %s", path, exc)
                continue
            if trusted or cas:
                return True
        return False

    @staticmethod
    def _learn(target: Target, conn: asyncssh.SSHClientConnection) -> None:
        """StrictHostKeyChecking=accept-new: remember a new host's key like OpenSSH."""
        key = conn.get_server_host_key()
        user_files = [p for p in target.known_hosts if not p.startswith("/etc/")]
        if key is None or not user_files or user_files[0] == os.devnull:
            return
        path = Path(user_files[0])
        line = f"{_known_hosts_name(target.host, target.port)} " \
               f"{key.export_public_key('openssh').decode().strip()}\n"
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with path.open("a") as fh:
                fh.write(line)
        except OSError as exc:
            log.warning("cannot add %s to %s: %s", target.label(), path, exc)


_LOCK = threading.Lock()
_POOL: SshPool | None = None


def pool() -> SshPool:
    """This process's pool (a forked child makes its own: threads do not survive fork)."""
    global _POOL
    with _LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            _POOL = SshPool()
        return _POOL


def warm(argv: list[str]) -> bool | None:
    """Whether the pool holds a connection for ``argv``; None when the pool cannot serve it."""
    target = target_of(argv)
    return pool().warm(target) if isinstance(target, Target) else None


def run(argv: list[str], *, deadline_s: float, stdin: str | None = None) -> SshRun:
    """:func:`cr_orchestrator.remote.ssh.run` through the pool; OpenSSH for what it cannot
    reproduce. ``argv`` is ``ssh [options] HOST COMMAND``; never raises."""
    target = target_of(argv)
    if not isinstance(target, Target):
        log.debug("ssh pool: %s; using OpenSSH", target)
        return ssh.run(argv, deadline_s=deadline_s, stdin=stdin)
    connect_timeout = next((float(a.split("=", 1)[1]) for a in argv
                            if a.startswith("ConnectTimeout=")), deadline_s)
    return pool().run(target, argv[-1], deadline_s=deadline_s,
                      connect_timeout_s=connect_timeout, stdin=stdin)
