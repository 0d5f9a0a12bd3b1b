"""WinRM host probes per second: reused shell (our probe) vs one winrm.Session.run_ps per check.

N scripted Windows hosts (WS-Man simulators) run in a SEPARATE process, so the client's
figures are not eaten by the Python server sharing its interpreter. One client thread
(= one worker core) probes the hosts round-robin for a fixed time in each mode:

- reused:  probe_windows_host() through a WinRMShellPool: one shell per host, one
           PowerShell script per probe (Command, Receive, Signal = 3 round trips).
- naive:   the straightforward way: for each of the 4 checks (services, boot time, free
           space, clock) one winrm.Session.run_ps (Create, Command, Receive, Signal,
           Delete, and a new TCP connection + authentication each time).

Usage: .venv/bin/python bench/probe_throughput.py [--hosts 10] [--seconds 5] [--transport basic|ntlm]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

PASSWORD = "bench-Passw0rd"
USER = "Administrator"
SERVICES = ["MDaemon", "W3SVC"]
PATHS = ["D:\\MDaemon"]
NAIVE_CHECKS = {  # one PowerShell per check, each printing a little JSON
    "services": "Get-Service -Name MDaemon,W3SVC | Select-Object Name,Status | ConvertTo-Json -Compress",
    "boot": "(Get-CimInstance Win32_OperatingSystem).LastBootUpTime.ToUniversalTime().ToString('o')",
    "disk": "(New-Object System.IO.DriveInfo 'D:\\').AvailableFreeSpace",
    "clock": "[DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds()",
}


def serve(n: int) -> None:
    """Child process: run n simulators, print their ports, serve until stdin closes."""
    from cr_orchestrator.testworld.wsman_sim import HostState, Reply, WsmanSim

    sims = []
    for i in range(n):
        state = HostState(hostname=f"WIN{i}", services={s: "Running" for s in SERVICES},
                          volumes={"D:\\": {"free": 1 << 40, "size": 2 << 40}})
        sim = WsmanSim(users={USER: PASSWORD}, state=state).start()
        sim.register(r"^Get-Service -Name",
                     Reply(stdout='[{"Name":"MDaemon","Status":4},{"Name":"W3SVC","Status":4}]\n'))
        sim.register(r"^\(Get-CimInstance Win32_OperatingSystem\)", Reply(stdout="2026-11-21T02:00:00.0000000Z\n"))
        sim.register(r"^\(New-Object System.IO.DriveInfo", Reply(stdout=f"{1 << 40}\n"))
        sim.register(r"^\[DateTimeOffset\]::UtcNow", Reply(stdout=f"{int(time.time() * 1000)}\n"))
        sims.append(sim)
    print(json.dumps([s.port for s in sims]), flush=True)
    sys.stdin.read()
    for sim in sims:
        sim.stop()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_mode(name: str, probe_once, hosts: list, seconds: float, server_pid: int) -> dict:
    probe_once(hosts[0])  # warm-up (first shell, first connection)
    count, i = 0, 0
    wall0, cpu0, srv0 = time.perf_counter(), time.process_time(), cpu_seconds(server_pid)
    while time.perf_counter() - wall0 < seconds:
        probe_once(hosts[i % len(hosts)])
        count, i = count + 1, i + 1
    wall, cpu, srv = time.perf_counter() - wall0, time.process_time() - cpu0, cpu_seconds(server_pid) - srv0
    return {"mode": name, "probes": count, "per_s": count / wall, "per_client_cpu_s": count / cpu,
            "client_cpu_ms": 1000 * cpu / count, "server_cpu_ms": 1000 * srv / count}


def print_results(args: argparse.Namespace, results: list[dict]) -> None:
    print(f"{args.hosts} simulated Windows hosts (server in a separate process), transport {args.transport}, "
          f"{args.seconds:.0f} s per mode, one client thread")
    print(f"{'mode':<26}{'probes':>8}{'probes/s':>10}{'per client CPU-s':>18}{'client ms':>11}{'server ms':>11}")
    for r in results:
        print(f"{r['mode']:<26}{r['probes']:>8}{r['per_s']:>10.1f}{r['per_client_cpu_s']:>18.1f}"
              f"{r['client_cpu_ms']:>11.2f}{r['server_cpu_ms']:>11.2f}")
    print(f"speed-up reused vs naive: {results[0]['per_s'] / results[1]['per_s']:.1f}x (goal >= 5x); "
          f"reused probes per client CPU-second: {results[0]['per_client_cpu_s']:.0f} (goal >= 150)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--transport", default="basic", choices=["basic", "ntlm"])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0

    import winrm

    from cr_orchestrator import model
    from cr_orchestrator.observe.health import Health
    from cr_orchestrator.observe.windows_host import probe_windows_host
    from cr_orchestrator.remote.winrm import WinRMShellPool

    server = subprocess.Popen([sys.executable, __file__, "--serve", str(args.hosts)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ports = json.loads(server.stdout.readline())
        hosts = [model.Host(name=f"win{i}", site="a", platform=model.Platform.WINDOWS,
                            management_address="127.0.0.1", cluster_address="127.0.0.1",
                            service_address="127.0.0.1",
                            winrm=model.WinRMSettings(user=USER, password=model.Secret(PASSWORD),
                                                      transport=args.transport, port=port, scheme="http",
                                                      path="/wsman", server_cert_validation=True))
                 for i, port in enumerate(ports)]
        pool = WinRMShellPool()

        def reused(host):
            obs = probe_windows_host(host=host, services=SERVICES, data_paths=PATHS, timeout_s=5, pool=pool)
            assert obs[0].health is Health.OK, obs[0]

        sessions = {h.name: winrm.Session(h.winrm.endpoint(h.management_address), auth=(USER, PASSWORD),
                                          transport=args.transport) for h in hosts}

        def naive(host):
            for script in NAIVE_CHECKS.values():
                result = sessions[host.name].run_ps(script)
                assert result.status_code == 0, result.std_err

        results = [run_mode("reused shell, 1 script", reused, hosts, args.seconds, server.pid),
                   run_mode("naive Session.run_ps x4", naive, hosts, args.seconds, server.pid)]
        pool.close_all()
    finally:
        server.stdin.close()
        server.wait(10)

    print_results(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
