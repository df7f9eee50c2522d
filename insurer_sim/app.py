"""The simulator's aiohttp application.

Insurer X's API lives under `/insurers/X` in X's dialect (see `insurer_sim.dialects`); a path of
another dialect is a 404 there. Tests, the CLI and the benchmarks watch through `/_sim`:

    GET /_sim/health                         {"status": "ok", "insurers": [ids]}
    GET /_sim/insurers                       [{"insurer_id", "name", "dialect", "base_url"}]
    GET /_sim/ledger?reference=&insurer_id=  {"offers": [...], "declines": [...]} as issued
    GET /_sim/stats?reference=&insurer_id=   {"insurers": {id: {"creates", "replays", "polls"}},
                                              "applications": [{"application_id", "insurer_id",
                                              "reference", "polls", "last_poll_at"}]}

Every answer is JSON, errors included.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from osago_common.clock import SYSTEM_CLOCK, Clock

from insurer_sim.config import SimConfig
from insurer_sim.dialects import DIALECTS, Dialect, Reply
from insurer_sim.insurer import Offer, SimInsurer, Simulation

log = logging.getLogger(__name__)

SIMULATION = web.AppKey("simulation", Simulation)
NOT_FOUND = {"error": "not found"}


def make_app(config: SimConfig, clock: Clock = SYSTEM_CLOCK) -> web.Application:
    unknown = sorted({p.dialect for p in config.insurers} - set(DIALECTS))
    if unknown:
        raise ValueError(f"unknown insurer API dialects {unknown}; known: {', '.join(DIALECTS)}")
    app = web.Application(middlewares=[_json_errors])
    app[SIMULATION] = Simulation(config, clock)
    for dialect in DIALECTS.values():
        app.router.add_post(f"/insurers/{{insurer_id}}{dialect.create_path}", _creator(dialect))
        app.router.add_get(f"/insurers/{{insurer_id}}{dialect.poll_path}", _poller(dialect))
    app.router.add_get("/insurers/{insurer_id}/pay/{offer_id}", _pay)
    app.router.add_get("/_sim/health", _health)
    app.router.add_get("/_sim/insurers", _insurers)
    app.router.add_get("/_sim/ledger", _ledger)
    app.router.add_get("/_sim/stats", _stats)
    return app


def _reply(reply: Reply) -> web.Response:
    return web.json_response(reply.body, status=reply.status, headers=reply.headers)


def _base_url(request: web.Request, insurer_id: str) -> str:
    return f"{request.url.origin()}/insurers/{insurer_id}"


def _insurer(request: web.Request, dialect: Dialect) -> SimInsurer | None:
    """The insurer named in the path, if it speaks `dialect`."""
    insurer = request.app[SIMULATION].insurers.get(request.match_info["insurer_id"])
    if insurer is None or insurer.profile.dialect != dialect.name:
        return None
    return insurer


def _creator(dialect: Dialect) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def create(request: web.Request) -> web.Response:
        insurer = _insurer(request, dialect)
        if insurer is None:
            return _reply(dialect.not_found)
        body = await request.read()
        key = request.headers.get("Idempotency-Key") or None
        return _reply(dialect.create(insurer, body, key, _base_url(request, insurer.insurer_id)))

    return create


def _poller(dialect: Dialect) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def poll(request: web.Request) -> web.Response:
        insurer = _insurer(request, dialect)
        if insurer is None:
            return _reply(dialect.not_found)
        ref = request.match_info["ref"]
        return _reply(dialect.poll(insurer, ref, _base_url(request, insurer.insurer_id)))

    return poll


async def _pay(request: web.Request) -> web.Response:
    """The payment link of an issued offer (the simulator takes no money)."""
    insurer = request.app[SIMULATION].insurers.get(request.match_info["insurer_id"])
    application = insurer.issued_offer(request.match_info["offer_id"]) if insurer else None
    if insurer is None or application is None or not isinstance(application.outcome, Offer):
        return web.json_response(NOT_FOUND, status=404)
    return web.json_response({
        "insurer_id": insurer.insurer_id,
        "offer_id": application.outcome.offer_id,
        "reference": application.reference,
        "premium_kopecks": application.outcome.breakdown.premium_kopecks,
        "message": "payment is simulated: no money moves",
    })


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "insurers": list(request.app[SIMULATION].insurers)})


async def _insurers(request: web.Request) -> web.Response:
    return web.json_response([
        {
            "insurer_id": i.insurer_id,
            "name": i.profile.name,
            "dialect": i.profile.dialect,
            "base_url": _base_url(request, i.insurer_id),
        }
        for i in request.app[SIMULATION].insurers.values()
    ])


async def _ledger(request: web.Request) -> web.Response:
    offers, declines = request.app[SIMULATION].ledger.query(
        reference=request.query.get("reference"), insurer_id=request.query.get("insurer_id")
    )
    return web.json_response({
        "offers": [e.to_json() for e in offers],
        "declines": [e.to_json() for e in declines],
    })


async def _stats(request: web.Request) -> web.Response:
    reference = request.query.get("reference")
    insurer_id = request.query.get("insurer_id")
    insurers = request.app[SIMULATION].insurers.values()
    return web.json_response({
        "insurers": {
            i.insurer_id: {"creates": i.creates, "replays": i.replays, "polls": i.polls}
            for i in insurers
        },
        "applications": [
            {
                "application_id": a.application_id,
                "insurer_id": i.insurer_id,
                "reference": a.reference,
                "polls": a.polls,
                "last_poll_at": a.last_poll_at.isoformat() if a.last_poll_at else None,
            }
            for i in insurers
            if insurer_id is None or i.insurer_id == insurer_id
            for a in i.applications.values()
            if reference is None or a.reference == reference
        ],
    })


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
