"""The simulator's aiohttp application.

Insurer X's API lives under `/insurers/X` in X's dialect (see `insurer_sim.dialects`); a path of
another dialect is a 404 there. With `SimConfig.insurer_ports` X's API is also served, under the
same path, on a port of its own (`insurer_sim.listeners`, by a lean server), the address
`/_sim/insurers` gives. Routing, faults and answers are `insurer_sim.api`'s on either port: a
fault switched on for X (`insurer_sim.control`) applies to X's API on both. Tests, the CLI and
the benchmarks watch and steer through `/_sim`:

    GET /_sim/health                         {"status": "ok", "insurers": [ids]}
    GET /_sim/insurers                       [{"insurer_id", "name", "dialect", "base_url"}]
    GET /_sim/ledger?reference=&insurer_id=  {"offers": [...], "declines": [...]} as issued, each
                                             with "ready_at" (when polls began to see it) and
                                             "issued_at" (the first poll that saw it)
    GET /_sim/stats?reference=&insurer_id=   {"insurers": {id: {"creates", "replays", "polls",
                                              "callbacks"}}, "applications": [{"application_id",
                                              "insurer_id", "reference", "creates", "polls",
                                              "callbacks", "last_poll_at"}]}
    GET /_sim/callbacks?reference=&insurer_id=  {"attempts": [...], "pending": N}: every callback
                                             delivery attempt (insurer_sim.webhooks.Attempt), and
                                             the callbacks not yet delivered nor given up
    /_sim/insurers/{id}/fault, /_sim/faults  see `insurer_sim.control`

Insurers of a dialect with callbacks POST each outcome to the URL their create was given, signed
with their callback secret (insurer_sim.webhooks).

Every answer is JSON, errors included (except what a `malformed` fault sends on purpose).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import trace

from insurer_sim import control
from insurer_sim.api import Answer, Held, InsurerApi, Late
from insurer_sim.config import SimConfig
from insurer_sim.dialects import DIALECTS
from insurer_sim.insurer import Simulation
from insurer_sim.listeners import LISTENERS, InsurerListeners
from insurer_sim.state import DELIVERIES, SIMULATION
from insurer_sim.webhooks import Deliveries, DeliveryError, Sender
from osago_common import tracing
from osago_common.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

API = web.AppKey("api", InsurerApi)
# Origins kept per (scheme, Host header): a bound, since the Host header is the client's to choose.
ORIGINS = web.AppKey("origins", dict[tuple[str, str], str])
MAX_ORIGINS = 64
# How long one callback POST may take.
CALLBACK_TIMEOUT_S = 5.0

__all__ = ["SIMULATION", "make_app"]


def make_app(config: SimConfig, clock: Clock = SYSTEM_CLOCK) -> web.Application:
    unknown = sorted({p.dialect for p in config.insurers} - set(DIALECTS))
    if unknown:
        raise ValueError(f"unknown insurer API dialects {unknown}; known: {', '.join(DIALECTS)}")
    simulation = Simulation(config, clock)
    # A SERVER span per request joining the gateway's trace (its `traceparent` header).
    app = web.Application(middlewares=[*tracing.http_server_middlewares(), _json_errors])
    app[SIMULATION] = simulation
    app[API] = InsurerApi(simulation)
    app[ORIGINS] = {}
    app.router.add_route("*", "/insurers/{tail:.*}", _insurer_api)
    app.router.add_get("/_sim/health", _health)
    app.router.add_get("/_sim/insurers", _insurers)
    app.router.add_get("/_sim/ledger", _ledger)
    app.router.add_get("/_sim/stats", _stats)
    app.router.add_get("/_sim/callbacks", _callbacks)
    app.on_shutdown.append(_let_go)
    app.cleanup_ctx.append(_deliveries)
    control.add_routes(app)
    if config.insurer_ports:
        app[LISTENERS] = InsurerListeners(config.host, lambda i: InsurerApi(simulation, i), clock)
        app.cleanup_ctx.append(_own_ports)
    return app


async def _insurer_api(request: web.Request) -> web.StreamResponse:
    """Every insurer's API (`insurer_sim.api`), carried out over aiohttp."""
    api = request.app[API]
    path = request.rel_url.raw_path
    if tracing.recording():  # the span names the API's route, not this catch-all one
        route = api.route_template(path)
        if route is not None:
            span = trace.get_current_span()
            span.update_name(f"{request.method} {route}")
            span.set_attribute("http.route", route)
    body = await request.read()
    key = request.headers.get("Idempotency-Key") or None
    outcome = api.handle(request.method, path, body, key, _origin(request))
    if isinstance(outcome, Late):
        await request.app[SIMULATION].clock.sleep(outcome.delay_s)
        if request.transport is None or request.transport.is_closing():
            return _drop(request)  # the client gave up: issue nothing
        outcome = outcome.answer()
    if isinstance(outcome, Answer):
        return web.Response(
            body=outcome.body, status=outcome.status, headers={"Content-Type": outcome.content_type, **outcome.headers}
        )
    if isinstance(outcome, Held):
        await outcome.faults.hold()  # cancelled with the handler if the client goes away
    return _drop(request)


def _drop(request: web.Request) -> web.Response:
    """Closes the connection; the response returned is never sent."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)


async def _own_ports(app: web.Application) -> AsyncIterator[None]:
    listeners = app[LISTENERS]
    await listeners.start(app[SIMULATION].insurers)
    yield
    await listeners.stop()


async def _deliveries(app: web.Application) -> AsyncIterator[None]:
    """The insurers' callbacks, POSTed by one HTTP client while the app runs."""
    simulation = app[SIMULATION]
    async with aiohttp.ClientSession() as session:
        deliveries = Deliveries(
            simulation.clock, _sender(session), simulation.callback_secrets, simulation.config.time_scale
        )
        app[DELIVERIES] = deliveries
        for insurer in simulation.insurers.values():
            insurer.on_hook = deliveries.schedule
        try:
            yield
        finally:
            for insurer in simulation.insurers.values():
                insurer.on_hook = None
            await deliveries.close()


def _sender(session: aiohttp.ClientSession) -> Sender:
    async def send(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        try:
            async with session.post(
                url,
                data=body,
                headers=dict(headers),
                timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT_S),
                allow_redirects=False,
            ) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(type(exc).__name__) from None

    return send


async def _let_go(app: web.Application) -> None:
    """Lets requests held by blackholes go, so that shutting down does not wait for them."""
    for insurer in app[SIMULATION].insurers.values():
        insurer.faults.let_go()


def _origin(request: web.Request) -> str:
    """The origin (scheme, host, port) of the request URL, as it reached this server (the
    insurers' payment links start with it), built by yarl once per distinct Host header and
    scheme and kept (building it per request was 4 % of the simulator's CPU)."""
    origins = request.app[ORIGINS]
    key = (request.scheme, request.headers.get("Host", ""))
    origin = origins.get(key)
    if origin is None:
        origin = str(request.url.origin())
        if len(origins) < MAX_ORIGINS:
            origins[key] = origin
    return origin


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "insurers": list(request.app[SIMULATION].insurers)})


async def _insurers(request: web.Request) -> web.Response:
    return web.json_response(
        [
            {
                "insurer_id": i.insurer_id,
                "name": i.profile.name,
                "dialect": i.profile.dialect,
                "base_url": control.api_base_url(request, i.insurer_id),
            }
            for i in request.app[SIMULATION].insurers.values()
        ]
    )


async def _ledger(request: web.Request) -> web.Response:
    offers, declines = request.app[SIMULATION].ledger.query(
        reference=request.query.get("reference"), insurer_id=request.query.get("insurer_id")
    )
    return web.json_response(
        {
            "offers": [e.to_json() for e in offers],
            "declines": [e.to_json() for e in declines],
        }
    )


async def _stats(request: web.Request) -> web.Response:
    reference = request.query.get("reference")
    insurer_id = request.query.get("insurer_id")
    insurers = request.app[SIMULATION].insurers.values()
    return web.json_response(
        {
            "insurers": {
                i.insurer_id: {"creates": i.creates, "replays": i.replays, "polls": i.polls, "callbacks": i.callbacks}
                for i in insurers
            },
            "applications": [
                {
                    "application_id": a.application_id,
                    "insurer_id": i.insurer_id,
                    "reference": a.reference,
                    "creates": a.creates,
                    "polls": a.polls,
                    "callbacks": a.callbacks,
                    "last_poll_at": a.last_poll_at.isoformat() if a.last_poll_at else None,
                }
                for i in insurers
                if insurer_id is None or i.insurer_id == insurer_id
                for a in i.applications.values()
                if reference is None or a.reference == reference
            ],
        }
    )


async def _callbacks(request: web.Request) -> web.Response:
    deliveries = request.app[DELIVERIES]
    attempts = deliveries.query(reference=request.query.get("reference"), insurer_id=request.query.get("insurer_id"))
    return web.json_response({"attempts": [a.to_json() for a in attempts], "pending": deliveries.pending})


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP errors as JSON bodies; anything unexpected as a 500 without internal text."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        body = {"error": (exc.reason or "error").lower()}
        return web.json_response(body, status=exc.status, headers=headers)
    except Exception:
        log.exception("insurer simulator failed on %s %s", request.method, request.path)
        return web.json_response({"error": "internal error"}, status=500)
