"""``crctl serve``: the web console, ``/metrics`` and the notifier, in one process.

Binds 127.0.0.1 unless told otherwise (``--host``). Read-only without the token file
(``--token-file`` or ``CR_CONSOLE_TOKEN_FILE``): actions need the token it holds. The
notifier (``cr_notify`` of the inventory) runs in the same process unless ``--no-notify``;
several ``crctl serve`` share the work (each notification is sent once).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def register(subparsers) -> None:
    from cr_orchestrator.cli.control import add_redis_options
    from cr_orchestrator.cli.validate import add_inventory_options

    parser = subparsers.add_parser(
        "serve", help="web console, /metrics for Prometheus, and the notifier",
        description=__doc__.split("\n\n")[1])
    add_inventory_options(parser)
    add_redis_options(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (127.0.0.1; 0.0.0.0 exposes it to the network)")
    parser.add_argument("--port", type=int, default=8470, help="port (8470)")
    parser.add_argument("--token-file", type=Path, default=None,
                        help="file holding the token actions need (default: "
                             "$CR_CONSOLE_TOKEN_FILE; none: read-only)")
    parser.add_argument("--no-notify", action="store_true",
                        help="do not run the notifier here (another crctl serve does)")
    parser.add_argument("--loglevel", default="INFO")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from cr_orchestrator.cli.control import prefix_of, redis_of
    from cr_orchestrator.cli.validate import inventory_of
    from cr_orchestrator.console.app import ConsoleConfig, make_app
    from cr_orchestrator.runtime.config import runtime
    from cr_orchestrator.runtime.tasks import topology_for

    logging.basicConfig(level=args.loglevel.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    inventory = str(Path(inventory_of(args)).resolve())
    topology_for(inventory)  # a broken inventory stops here, with its errors
    token_file = args.token_file or runtime().console_token_file
    config = ConsoleConfig(inventory=inventory, redis_url=args.redis_url, prefix=prefix_of(args),
                           token_file=token_file, vault_password_file=args.vault_password_file)
    client = redis_of(args)
    notifier = None
    if not args.no_notify:
        from cr_orchestrator.notify.notifier import Notifier

        notifier = Notifier(client=client, prefix=config.prefix,
                            topology_of=lambda: topology_for(inventory))
        notifier.start()
    logging.getLogger("crctl.serve").info(
        "console on http://%s:%d/ (%s)", args.host, args.port,
        "actions need the token" if token_file else "read-only: no token file")
    try:
        uvicorn.run(make_app(config, client=client), host=args.host, port=args.port,
                    log_level=args.loglevel.lower(), access_log=False)
    finally:
        if notifier is not None:
            notifier.stop()
    return 0
