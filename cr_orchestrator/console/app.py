"""``crctl serve``'s web application (Starlette): pages, JSON, actions and ``/metrics``.

- Read-only without login: the pages, ``/api/clusters``, the timelines, a playbook
  run's task list, the preview of an action, ``/metrics``.
- An action (switchover, failback, pause, resume) needs the token held in the file of
  ``CR_CONSOLE_TOKEN_FILE`` (``--token-file``), sent in the ``X-CR-Token`` header; the
  file is read at each action (a rotated token takes effect at once), the token is
  compared in constant time and never logged, stored or echoed.
- CSRF: every POST carries the per-browser token of the page it came from
  (``X-CSRF-Token`` equal to the ``cr_csrf`` cookie, SameSite=Strict), and an
  ``Origin``, when the browser sends one, must be this server.
- Live: the pages poll the JSON every second (no JavaScript build step).
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from cr_orchestrator.console import data
from cr_orchestrator.errors import CrError

log = logging.getLogger("crctl.serve")
HERE = Path(__file__).parent
CSRF_COOKIE = "cr_csrf"
_NAME = re.compile(r"[^\w .@-]")


@dataclass(frozen=True)
class ConsoleConfig:
    inventory: str
    redis_url: str | None
    prefix: str
    token_file: Path | None  # None: read-only console
    vault_password_file: str | None = None


class TokenError(Exception):
    """Why an action was refused for want of a valid token (never the token itself)."""


def check_token(token_file: Path | None, offered: str | None) -> None:
    if token_file is None:
        raise TokenError("this console is read-only: it was started without a token file "
                         "(CR_CONSOLE_TOKEN_FILE or --token-file)")
    try:
        expected = token_file.read_text().strip()
    except OSError as exc:
        raise TokenError(f"the console cannot read its token file ({exc.strerror})") from None
    if not expected:
        raise TokenError("the console's token file is empty: actions are disabled")
    if not offered or not hmac.compare_digest(offered.strip().encode(), expected.encode()):
        raise TokenError("refused: the console token is missing or wrong; nothing was done")


def make_app(config: ConsoleConfig, *, client: redis.Redis | None = None,
             topology_of=None) -> Starlette:
    """The application; ``topology_of()`` gives the inventory's topology (default: loaded
    from ``config.inventory``, again whenever one of its files changes)."""
    from cr_orchestrator.metrics import registry_for
    from cr_orchestrator.runtime.tasks import topology_for
    from cr_orchestrator.state.cluster import connect

    client = client or connect(config.redis_url)
    templates = Jinja2Templates(directory=str(HERE / "templates"))

    def topology():
        return topology_of() if topology_of is not None else topology_for(config.inventory)

    registry = registry_for(topology_of=topology, client=client, prefix=config.prefix)

    def page(request: Request, name: str, **context) -> Response:
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        response = templates.TemplateResponse(request, name, {
            "csrf": csrf, "actions": config.token_file is not None, **context})
        response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/")
        return response

    def csrf_ok(request: Request) -> bool:
        cookie, header = request.cookies.get(CSRF_COOKIE), request.headers.get("x-csrf-token")
        if not cookie or not header or not hmac.compare_digest(cookie, header):
            return False
        origin = request.headers.get("origin")
        if origin and origin != "null":
            here = f"{request.url.scheme}://{request.headers.get('host', '')}"
            return urlsplit(origin)._replace(path="").geturl() == here
        return True

    def refuse(status: int, summary: str) -> JSONResponse:
        return JSONResponse({"ok": False, "summary": summary}, status_code=status)

    def cluster_of(request: Request):
        name = request.path_params["name"]
        topo = topology()
        if name not in topo.clusters:
            return topo, None
        return topo, topo.clusters[name]

    # -- pages --------------------------------------------------------------------------
    def index(request: Request) -> Response:
        return page(request, "index.html", clusters=sorted(topology().clusters), cluster=None)

    def cluster_page(request: Request) -> Response:
        _, cluster = cluster_of(request)
        if cluster is None:
            return HTMLResponse("no such cluster", status_code=404)
        from cr_orchestrator.state.cluster import EventKind

        return page(request, "cluster.html", cluster=cluster.name,
                    clusters=sorted(topology().clusters),
                    members=[m.host for m in cluster.members],
                    kinds=[k.value for k in EventKind])

    def run_page(request: Request) -> Response:
        _, cluster = cluster_of(request)
        event = None if cluster is None else data.playbook_event(
            client, config.prefix, cluster.name, request.path_params["event_id"])
        if event is None:
            return HTMLResponse("no such playbook run", status_code=404)
        tasks = data.playbook_tasks(event["artifact_dir"]) if event.get("artifact_dir") else []
        return page(request, "run.html", cluster=cluster.name, event=event, tasks=tasks,
                    clusters=sorted(topology().clusters))

    # -- JSON ---------------------------------------------------------------------------
    def api_clusters(request: Request) -> Response:
        try:
            return JSONResponse({"ok": True, "clusters": data.clusters_view(topology(), client,
                                                                             config.prefix)})
        except (redis.RedisError, CrError) as exc:
            return refuse(503, f"state unreadable: {type(exc).__name__}: {exc}")

    def api_events(request: Request) -> Response:
        _, cluster = cluster_of(request)
        if cluster is None:
            return refuse(404, "no such cluster")
        kinds = [k for k in request.query_params.getlist("kind") if k]
        try:
            n = max(1, min(1000, int(request.query_params.get("n", "100"))))
        except ValueError:
            n = 100
        return JSONResponse({"ok": True, "events": data.events_view(
            client, config.prefix, cluster.name, kinds=kinds or None, count=n)})

    def env():
        from cr_orchestrator.runtime.cycle import Env

        return Env(topology=topology(), redis=client, prefix=config.prefix,
                   vault_password_file=config.vault_password_file)

    async def api_preview(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        from cr_orchestrator.console.actions import preview

        if not csrf_ok(request):
            return refuse(403, "refused: the request did not come from this console's page "
                               "(CSRF check); reload the page")
        body = await _json(request)
        try:
            out = await run_in_threadpool(preview, env(), request.path_params["name"],
                                          str(body.get("command")), body.get("to") or None)
        except CrError as exc:
            return refuse(400, str(exc))
        return JSONResponse({"ok": True, **out})

    async def api_action(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        from cr_orchestrator.console.actions import perform

        who = request.client.host if request.client else "?"
        if not csrf_ok(request):
            log.warning("console: action refused (CSRF check) from %s", who)
            return refuse(403, "refused: the request did not come from this console's page "
                               "(CSRF check); reload the page")
        try:
            check_token(config.token_file, request.headers.get("x-cr-token"))
        except TokenError as exc:
            log.warning("console: action refused from %s: %s", who, exc)
            return refuse(403 if config.token_file else 405, str(exc))
        body = await _json(request)
        operator = _NAME.sub("", str(body.get("operator") or "").strip())[:64] or "anonymous"
        try:
            seen_epoch = int(body.get("seen_epoch"))
        except (TypeError, ValueError):
            return refuse(400, "the action must say which epoch the operator saw (seen_epoch)")
        log.info("console: %s of %s asked by %s from %s", body.get("command"),
                 request.path_params["name"], operator, who)
        try:
            out = await run_in_threadpool(
                perform, env(), inventory=config.inventory, cluster_name=request.path_params["name"],
                command=str(body.get("command")), to=body.get("to") or None,
                seen_primary=body.get("seen_primary") or None, seen_epoch=seen_epoch,
                by=f"{operator} via console from {who}", redis_url=config.redis_url)
        except CrError as exc:
            return refuse(400, str(exc))
        return JSONResponse(out, status_code=200 if out["ok"] else 409)

    def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/", index),
        Route("/cluster/{name}", cluster_page),
        Route("/cluster/{name}/run/{event_id}", run_page),
        Route("/api/clusters", api_clusters),
        Route("/api/cluster/{name}/events", api_events),
        Route("/api/cluster/{name}/preview", api_preview, methods=["POST"]),
        Route("/api/cluster/{name}/action", api_action, methods=["POST"]),
        Route("/metrics", metrics),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Starlette(routes=routes)


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
