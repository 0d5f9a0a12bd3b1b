"""A real Redis Sentinel quorum on this machine's loopback: three redis-servers (one
master, two replicas) and three redis-sentinels, as the Debian packages install them.

For tests of the orchestrator's clients (state, Celery broker and results, RedBeat) going
through a Sentinel failover without the namespace lab: same programs, same settings as a
production quorum (``min-replicas-to-write``), only the addresses are local.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cr_orchestrator.testworld.clientwatch import wait_until

MASTER_NAME = "cr"
DOWN_AFTER_MS = 1500
FAILOVER_TIMEOUT_MS = 6000
MIN_REPLICAS_MAX_LAG_S = 3


@dataclass
class LocalQuorum:
    """``base_port``: redis on base, base+1, base+2; sentinels on base+100 .. base+102."""

    directory: Path
    base_port: int
    host: str = "127.0.0.1"
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def redis_ports(self) -> list[int]:
        return [self.base_port + i for i in range(3)]

    @property
    def sentinel_ports(self) -> list[int]:
        return [self.base_port + 100 + i for i in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"{self.host}:{p}" for p in self.sentinel_ports)
        return f"redis-sentinel://{hosts}/{MASTER_NAME}"

    def start(self) -> LocalQuorum:
        for binary in ("redis-server", "redis-sentinel"):
            if shutil.which(binary) is None:
                raise RuntimeError(f"{binary} is not installed (Debian package {binary}; "
                                   "dev/bootstrap.sh installs it)")
        self.directory.mkdir(parents=True, exist_ok=True)
        master = self.redis_ports[0]
        for port in self.redis_ports:
            self.start_redis(port, replica_of=None if port == master else master)
        self._wait(lambda: self.replicas_of(master) >= 2, 10, "both replicas to attach")
        # attached is not yet "good" for min-replicas-to-write (their first ACK counts)
        self._wait(lambda: self._cli(master, "SET", "quorum-ready", "1") == "OK", 10,
                   "the master to take writes")
        for port in self.sentinel_ports:
            conf = self.directory / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind {self.host}\ndir {self.directory}\n"
                f"sentinel monitor {MASTER_NAME} {self.host} {master} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 2\n")
            self.procs[f"sentinel-{port}"] = subprocess.Popen(
                ["redis-sentinel", str(conf)], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, cwd=self.directory)
        self._wait(lambda: all(self._sentinel_sees_all(p) for p in self.sentinel_ports), 15,
                   "the sentinels to find each other and the replicas")
        return self

    def start_redis(self, port: int, *, replica_of: int | None) -> None:
        data = self.directory / f"redis-{port}"
        data.mkdir(exist_ok=True)
        argv = ["redis-server", "--port", str(port), "--bind", self.host, "--dir", str(data),
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                "--maxmemory-policy", "noeviction",
                # a replica moved to a new master syncs now, not after 5 s of waiting
                # for others (the default): until then the new master has no good
                # replica and min-replicas-to-write refuses every write
                "--repl-diskless-sync-delay", "0",
                # a master cut off from every replica stops taking writes
                "--min-replicas-to-write", "1",
                "--min-replicas-max-lag", str(MIN_REPLICAS_MAX_LAG_S)]
        if replica_of is not None:
            argv += ["--replicaof", self.host, str(replica_of)]
        self.procs[f"redis-{port}"] = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait(lambda: self._cli(port, "PING") == "PONG", 10, f"redis on {port}")

    def master_port(self) -> int | None:
        """The master as a majority of the sentinels names it (None while they disagree)."""
        seen: dict[int, int] = {}
        for port in self.sentinel_ports:
            out = self._cli(port, "SENTINEL", "get-master-addr-by-name", MASTER_NAME)
            lines = out.split()
            if len(lines) == 2 and lines[1].isdigit():
                seen[int(lines[1])] = seen.get(int(lines[1]), 0) + 1
        best = max(seen.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best and best[1] >= 2 else None

    def replicas_of(self, port: int) -> int:
        info = self._cli(port, "INFO", "replication")
        for line in info.splitlines():
            if line.startswith("connected_slaves:"):
                return int(line.split(":")[1])
        return 0

    def role(self, port: int) -> str:
        out = self._cli(port, "ROLE").split()
        return out[0] if out else "down"

    def kill(self, port: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(f"redis-{port}")
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            if sig == signal.SIGKILL:
                proc.wait(5)

    def wait_for_new_master(self, old: int, timeout_s: float = 30) -> int:
        return self._wait(lambda: (m := self.master_port()) not in (None, old) and
                          self.role(m) == "master" and m, timeout_s,
                          f"the sentinels to promote a replica of {old}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()

    def _sentinel_sees_all(self, port: int) -> bool:
        out = self._cli(port, "SENTINEL", "master", MASTER_NAME).split()
        fields = dict(zip(out[::2], out[1::2], strict=False))
        return fields.get("num-slaves") == "2" and fields.get("num-other-sentinels") == "2"

    def _cli(self, port: int, *args: str) -> str:
        try:
            done = subprocess.run(["redis-cli", "-h", self.host, "-p", str(port), *args],
                                  capture_output=True, text=True, timeout=3,
                                  env={**os.environ, "REDISCLI_AUTH": ""})
        except subprocess.TimeoutExpired:
            return ""
        return done.stdout.strip()

    @staticmethod
    def _wait(predicate, timeout_s: float, what: str):
        return wait_until(what, predicate, timeout_s=timeout_s, every_s=0.1)
