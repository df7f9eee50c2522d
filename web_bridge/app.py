"""The web_bridge application: the REST + WebSocket API over the aggregator's gRPC API, health
endpoints, and the page's static files.

| route | what |
|---|---|
| `POST /osago/quotes` | create a quote request (web_bridge.quotes) |
| `GET /osago/quotes/{requestId}` | its snapshot |
| `GET /osago/quotes/{requestId}/stream` | its events over a WebSocket (web_bridge.stream) |
| `POST /osago.v1.AggregatorService/{method}` | grpc-web, carried on to the aggregator (web_bridge.grpc_web) |
| `GET /healthz` | liveness: the process answers |
| `GET /readyz` | readiness: the aggregator's grpc.health.v1 status is SERVING, else 503 |
| `GET /` and `GET /<file>` | the page: index.html and every file of the static directory |

Every response carries the security headers, and every API call the origin check, of
web_bridge.security.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
from aiohttp import WSCloseCode, web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from osago.v1 import aggregator_service_pb2, aggregator_service_pb2_grpc

from osago_client.channel import open_channel
from osago_client.client import resolve_target
from osago_common import tracing
from web_bridge import grpc_web, problems, quotes, security, stream
from web_bridge.metrics import BridgeMetrics
from web_bridge.problems import body, respond
from web_bridge.settings import BridgeSettings
from web_bridge.state import AGGREGATOR, SETTINGS, STREAMS, Aggregator, Streams

SERVICE = aggregator_service_pb2.DESCRIPTOR.services_by_name["AggregatorService"].full_name
# Static files are routed by name; anything else in the directory is not served.
_SERVABLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def make_app(settings: BridgeSettings, metrics: BridgeMetrics | None = None) -> web.Application:
    """The application; with `metrics`, every request is counted."""
    counting = [metrics.count_requests] if metrics is not None else []
    app = web.Application(
        # Counting outermost; then tracing: a SERVER span per request (joining the browser's or the
        # edge's trace), current while the others run, so the aggregator calls made inside are its
        # children.
        middlewares=[*counting, *tracing.http_server_middlewares(), problems.json_errors, security.check_origin],
        client_max_size=settings.max_body_bytes,
    )
    app.on_response_prepare.append(security.add_headers)
    app[SETTINGS] = settings
    app[STREAMS] = Streams()
    app.cleanup_ctx.append(_aggregator_channel)
    app.on_shutdown.append(_close_streams)
    app.router.add_post("/osago/quotes", quotes.create_quote, name="quotes")
    app.router.add_get("/osago/quotes/{request_id}", quotes.get_quote, name="quote")
    app.router.add_get("/osago/quotes/{request_id}/stream", stream.stream_events, name="stream")
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    grpc_web.add_routes(app.router)
    _add_page(app.router, settings.page_dir)
    return app


async def _aggregator_channel(app: web.Application) -> AsyncIterator[None]:
    """Opens the one channel to the aggregator (several instances: calls spread over them) for
    the application's lifetime."""
    tls = app[SETTINGS].tls
    credentials = tls.channel_credentials() if tls is not None else None
    extra = tls.channel_options() if tls is not None else ()
    channel = open_channel(await resolve_target(app[SETTINGS].aggregator_target), credentials, extra)
    app[AGGREGATOR] = Aggregator(
        channel=channel,
        stub=aggregator_service_pb2_grpc.AggregatorServiceStub(channel),
        health=health_pb2_grpc.HealthStub(channel),
    )
    try:
        yield
    finally:
        await channel.close()


async def _close_streams(app: web.Application) -> None:
    """Shutting down: tell every stream's client to go elsewhere (it resumes with afterSeq)."""
    for ws in list(app[STREAMS].open):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")


async def healthz(request: web.Request) -> web.Response:
    return respond(200, {"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    check = health_pb2.HealthCheckRequest(service=SERVICE)
    try:
        answer = await request.app[AGGREGATOR].health.Check(check, timeout=request.app[SETTINGS].request_timeout_s)
    except grpc.aio.AioRpcError as error:
        state = f"unreachable ({error.code().name})"
    else:
        state = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        if answer.status == health_pb2.HealthCheckResponse.SERVING:
            return respond(200, {"status": "ready", "aggregator": state})
    return respond(503, body("not ready", "the aggregator is not serving", aggregator=state))


def _add_page(router: web.UrlDispatcher, root: Path) -> None:
    """`/` serves index.html; each top-level file is served at `/<name>` and each top-level
    directory's files under `/<name>/...` (no catch-all, so unknown API paths stay 404/405)."""
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        if not _SERVABLE.fullmatch(entry.name):
            continue
        if entry.is_dir():
            router.add_get(f"/{entry.name}/{{path:.+}}", _directory(entry.resolve()))
        elif entry.is_file():
            router.add_get(f"/{entry.name}", _file(entry))
            if entry.name == "index.html":
                router.add_get("/", _file(entry))


Serve = Callable[[web.Request], Awaitable[web.FileResponse]]


def _file(path: Path) -> Serve:
    async def serve(request: web.Request) -> web.FileResponse:
        if not await asyncio.to_thread(path.is_file):
            raise web.HTTPNotFound
        return web.FileResponse(path)

    return serve


def _directory(root: Path) -> Serve:
    def locate(relative: str) -> Path | None:
        if any(part.startswith(".") or not part for part in relative.split("/")):
            return None  # no hidden files, no `..`, no `//`
        target = (root / relative).resolve()
        return target if target.is_relative_to(root) and target.is_file() else None

    async def serve(request: web.Request) -> web.FileResponse:
        found = await asyncio.to_thread(locate, request.match_info["path"])
        if found is None:
            raise web.HTTPNotFound
        return web.FileResponse(found)

    return serve
