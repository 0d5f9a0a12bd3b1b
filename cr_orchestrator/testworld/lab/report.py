"""``crctl lab status``: what runs where, who holds the shared IP, where DNS points.

Observation only; prints no secret (the TSIG key stays in its 0600 files).
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

from cr_orchestrator.testworld.lab import netns
from cr_orchestrator.testworld.lab.plan import HostPlatform, NodeKind
from cr_orchestrator.testworld.lab.handle import LabHandle



def _addresses(namespace: str) -> list[str]:
    proc = netns.run(["ip", "-n", namespace, "-o", "-4", "addr", "show"], check=False)
    return [line.split()[3] for line in proc.stdout.splitlines()
            if " inet " in line and line.split()[1] != "lo"]


def _service_state(lab: LabHandle, host: str, platform: str) -> str:
    if platform == HostPlatform.WINDOWS:
        return "running" if netns.pid_alive(lab.pid(f"service:{host}")) else "stopped"
    try:
        proc = lab.run_on(host, [lab.mailctl, "status"], timeout=3)
    except subprocess.TimeoutExpired:
        return "unknown (status timed out)"
    except Exception as exc:  # noqa: BLE001 - a crashed host is a status, not an error
        return f"down ({exc})"
    return "running" if proc.returncode == 0 else "stopped"


def _resolve(lab: LabHandle) -> str:
    import dns.message
    import dns.query

    try:
        reply = dns.query.udp(dns.message.make_query(lab.dns_name, "A"), lab.dns_server,
                              timeout=1.0)
    except Exception as exc:  # noqa: BLE001 - report, don't fail
        return f"no answer ({exc.__class__.__name__})"
    found = [r.address for rrset in reply.answer for r in rrset if hasattr(r, "address")]
    return ", ".join(found) or "no A record"


def _host_row(lab: LabHandle, name: str, faults: dict) -> dict:
    addrs = lab.hosts[name]
    holder_up = netns.pid_alive(lab.pid(f"holder:{name}"))
    row = {"host": name, "site": addrs.site, "role": addrs.role, "platform": addrs.platform,
           "public": addrs.public, "cluster": addrs.cluster,
           "addresses": _addresses(addrs.namespace),
           "up": holder_up, "faults": sorted(faults.get(name, {}))}
    frozen = "freeze" in row["faults"]
    if addrs.platform == HostPlatform.LINUX:
        row["sshd"] = "running" if netns.pid_alive(lab.pid(f"sshd:{name}")) else "stopped"
    row["service"] = ("frozen" if frozen else
                      _service_state(lab, name, addrs.platform) if holder_up else "down")
    return row


def status(lab: LabHandle) -> dict:
    faults = lab.faults()
    with ThreadPoolExecutor(max_workers=4) as pool:
        rows = list(pool.map(lambda h: _host_row(lab, h, faults), lab.hosts))
    holders = [r["host"] for r in rows if any(a.split("/")[0] == lab.shared_ip
                                               for a in r["addresses"])]
    st = {"name": lab.name, "base": lab.plan.base, "state_dir": lab.state_dir,
            "inventory": lab.inventory_path, "hosts": rows,
            "shared_ip": lab.shared_ip, "shared_ip_holders": holders,
            "faults_of_sites": {s: sorted(m) for s, m in faults.items() if s in lab.plan.sites},
            "dns": {"server": lab.dns_server, "name": lab.dns_name, "resolves_to": _resolve(lab)},
            "named": "running" if netns.pid_alive(lab.pid("named")) else "stopped",
            "client": lab.client_address}
    if lab.plan.quorum_nodes():
        st["quorum"] = _quorum_rows(lab)
    return st


def _quorum_rows(lab: LabHandle) -> list[dict]:
    """Per orchestrator node: its Redis's role, the master its sentinel names, crctl run."""
    from cr_orchestrator.testworld.lab import quorum

    views = quorum.views(lab.plan)
    runs = lab.read_state().get("orch_runs", {})
    return [{"node": n.name, "site": n.site, "address": quorum.address(lab.plan, n.name),
             "redis": quorum.role(quorum.address(lab.plan, n.name)),
             "sentinel_names": views[n.name] or "no answer",
             "crctl_run": ("running" if netns.pid_alive((runs.get(n.name) or {}).get("pid"))
                           else "stopped") if n.kind is NodeKind.ORCHESTRATOR else "-"}
            for n in lab.plan.quorum_nodes()]


def format_status(st: dict) -> str:
    lines = [f"lab {st['name']} ({st['base']}), state {st['state_dir']}",
             f"inventory: {st['inventory']}", "",
             f"{'HOST':9} {'SITE':7} {'ROLE':10} {'PUBLIC':15} {'CLUSTER':15} "
             f"{'SSHD':8} {'SERVICE':9} FAULTS"]
    for r in st["hosts"]:
        lines.append(f"{r['host']:9} {r['site']:7} {r['role']:10} {r['public']:15} "
                     f"{r['cluster']:15} {r.get('sshd', '-'):8} {r['service']:9} "
                     f"{','.join(r['faults']) or '-'}")
    holders = ", ".join(st["shared_ip_holders"]) or "nobody"
    if len(st["shared_ip_holders"]) > 1:
        holders += "  (CONFLICT: more than one host)"
    lines += ["", f"shared IP {st['shared_ip']}: held by {holders}",
              f"DNS {st['dns']['name']} @ {st['dns']['server']} ({st['named']}): "
              f"{st['dns']['resolves_to']}",
              f"client namespace: {st['client']}"]
    if st.get("quorum"):
        lines += ["", f"{'NODE':9} {'SITE':8} {'ADDRESS':15} {'REDIS':20} {'SENTINEL NAMES':15} "
                  "CRCTL RUN"]
        lines += [f"{r['node']:9} {r['site']:8} {r['address']:15} {r['redis']:20} "
                  f"{r['sentinel_names']:15} {r['crctl_run']}" for r in st["quorum"]]
    if st["faults_of_sites"]:
        lines += ["", "site faults: " + "; ".join(f"{site}: {', '.join(modes)}" for site, modes
                                                  in st["faults_of_sites"].items())]
    return "\n".join(lines)
