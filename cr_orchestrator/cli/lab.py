"""``crctl lab up|down|status|fail|heal|orch``: the namespace lab (see docs/lab.md).

Name and address base come from ``--name``/``--base``, else CR_LAB_NAME/CR_LAB_BASE, else
``crlab`` / 198.18.0.0/20.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time

from cr_orchestrator.testworld.lab import FaultMode, Lab, lab_from_env
from cr_orchestrator.testworld.lab.build import destroy
from cr_orchestrator.testworld.lab.netns import check_prerequisites
from cr_orchestrator.testworld.lab.plan import LAB_ROOT, validate_name


def register(subparsers: argparse._SubParsersAction) -> None:
    name, base = lab_from_env()
    lab = subparsers.add_parser("lab", help="build, break and remove the namespace lab",
                                description=__doc__.splitlines()[0])
    sub = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)

    def with_name(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--name", default=name, help=f"lab name, <= 5 chars (default {name})")
        return p

    up = with_name(sub.add_parser("up", help="build the lab (idempotent)"))
    up.add_argument("--base", default=base, help=f"a /20 inside 198.18.0.0/15 (default {base})")
    up.add_argument("--secondaries", type=int, default=1,
                    help="site-a secondaries besides mail-a (default 1: mail-b)")
    up.add_argument("--windows", type=int, default=0,
                    help="'Windows' hosts serving WS-Man (python -m cr_orchestrator.testworld.wsman_sim)")
    up.add_argument("--windows-command",
                    help="run this command as the Windows hosts' service instead (placeholders "
                         "{host} {address} {cluster_address} {hostdir} {data})")
    up.add_argument("--orchestrators", action="store_true",
                    help="also orchestrator nodes orch-a, orch-b and a witness running Redis "
                         "+ Sentinel, and client-b at site-b (added to a running lab)")
    up.set_defaults(handler=_up)

    down = with_name(sub.add_parser("down", help="remove everything the lab created"))
    down.set_defaults(handler=_down)

    st = with_name(sub.add_parser("status", help="hosts, addresses, shared IP, DNS, services"))
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(handler=_status)

    fail = with_name(sub.add_parser("fail", help="inject a fault into a host, or a site "
                                    "(site-a, site-b: --mode crash|isolate)"))
    fail.add_argument("host", metavar="HOST|SITE")
    fail.add_argument("--mode", required=True, choices=[str(m) for m in FaultMode])
    fail.add_argument("--for", dest="for_s", type=float, metavar="SECONDS",
                      help="heal this fault by itself after SECONDS (background)")
    fail.add_argument("--loss", type=int, default=30, metavar="PCT", help="loss mode: percent")
    fail.add_argument("--delay", type=int, default=100, metavar="MS",
                      help="loss mode: added latency (needs sch_netem)")
    fail.set_defaults(handler=_fail)

    heal = with_name(sub.add_parser("heal", help="undo faults (of HOST, or of every host)"))
    heal.add_argument("host", nargs="?")
    heal.add_argument("--mode", choices=[str(m) for m in FaultMode], help="only this fault")
    heal.set_defaults(handler=_heal)

    orch = with_name(sub.add_parser("orch", help="orchestrator nodes: crctl run, Redis, "
                                    "Sentinel (lab up --orchestrators)"))
    orch.add_argument("action", choices=["start", "stop", "kill", "master"],
                      help="start|stop crctl run on NODE; kill NODE's worker, beat or redis; "
                           "master: what each sentinel names master")
    orch.add_argument("node", nargs="?", help="orch-a, orch-b (kill redis: also witness)")
    orch.add_argument("what", nargs="?", choices=["worker", "beat", "redis"],
                      help="kill: which process")
    orch.add_argument("--inventory", help="start: inventory (default: the lab's)")
    orch.add_argument("--env", action="append", default=[], metavar="VAR=VALUE",
                      help="start: environment override (repeatable)")
    orch.set_defaults(handler=_orch)


def _up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    argv = shlex.split(args.windows_command) if args.windows_command else None
    lab = Lab.up(name=args.name, base=args.base, secondaries=args.secondaries,
                 windows=args.windows, service_argv=argv, orchestrators=args.orchestrators)
    print(f"lab {lab.name} is up ({time.monotonic() - started:.1f} s)")
    if args.windows and not lab.service_argv:
        print("note: no WS-Man simulator installed: the Windows hosts run no service")
    print(f"inventory: {lab.inventory_path}\nssh key:   {lab.ssh_key}")
    print(f"try: crctl lab status --name {lab.name}")
    return 0


def _down(args: argparse.Namespace) -> int:
    validate_name(args.name)
    check_prerequisites()
    started = time.monotonic()
    removed = destroy(args.name, f"{LAB_ROOT}/{args.name}", base=_recorded_base(args.name))
    if not removed:
        print(f"lab {args.name}: nothing to remove")
        return 0
    print(f"lab {args.name} removed ({len(removed)} items, {time.monotonic() - started:.1f} s)")
    return 0


def _recorded_base(name: str) -> str | None:
    try:
        with open(f"{LAB_ROOT}/{name}/lab.json") as f:
            return json.load(f).get("base")
    except (OSError, ValueError):
        return None


def _status(args: argparse.Namespace) -> int:
    from cr_orchestrator.testworld.lab.report import format_status

    check_prerequisites()
    st = Lab.load(name=args.name).status()
    print(json.dumps(st, indent=2) if args.json else format_status(st))
    return 0


def _fail(args: argparse.Namespace) -> int:
    check_prerequisites()
    lab = Lab.load(name=args.name)
    print(lab.fail(args.host, args.mode, for_s=args.for_s, loss_pct=args.loss,
                   delay_ms=args.delay))
    return 0


def _heal(args: argparse.Namespace) -> int:
    check_prerequisites()
    lab = Lab.load(name=args.name)
    done = lab.heal(args.host, modes=[args.mode] if args.mode else None)
    print("\n".join(done) if done else "nothing to heal")
    return 0


def _orch(args: argparse.Namespace) -> int:
    from cr_orchestrator.errors import LabError

    check_prerequisites()
    lab = Lab.load(name=args.name)
    if args.action == "master":
        views = lab.sentinel_views()
        for node, master in views.items():
            print(f"sentinel on {node:8} names master: {master or 'no answer'}")
        print(f"majority: {lab.redis_master() or 'none'}")
        return 0
    if not args.node:
        raise LabError(f"crctl lab orch {args.action}: name the node (orch-a, orch-b)")
    if args.action == "start":
        env = dict(pair.split("=", 1) for pair in args.env if "=" in pair)
        if len(env) != len(args.env):
            raise LabError(f"--env {args.env}: give VAR=VALUE")
        pid = lab.start_orchestrator(args.node, inventory=args.inventory, env=env)
        print(f"crctl run started on {args.node} (pid {pid})")
    elif args.action == "stop":
        lab.stop_orchestrator(args.node)
        print(f"crctl run stopped on {args.node}")
    elif args.what == "redis":
        print(f"killed the Redis of {args.node} (pid {lab.kill_redis(args.node)})")
    elif args.what:
        pid = lab.kill_orchestrator_child(args.node, args.what)
        print(f"killed the {args.what} of crctl run on {args.node} (pid {pid})")
    else:
        raise LabError("crctl lab orch kill NODE worker|beat|redis")
    return 0
