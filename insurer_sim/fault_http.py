"""The middleware that carries out each insurer's fault on its API routes (`/insurers/{id}/...`).

It asks the insurer's `FaultState` once per request and either lets the request through (maybe
late) or answers in its place. A request answered in its place never reaches the dialect, so
nothing is issued into the ledger for it; only `decline` works through the dialect's own answers.
"""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web
from aiohttp.typedefs import Handler

from insurer_sim.fault_state import Drop, Fail, Hold, Proceed, Throttle
from insurer_sim.state import SIMULATION, insurer_in_path

# The `malformed` answers, all with status 200.
BROKEN_JSON = '{"status": "QUOTED", "offer": {"offerId": "7F3A", "premium": {"amount": 123'
HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    "<body><h1>502 Bad Gateway</h1><hr><p>nginx</p></body></html>\n"
)
WRONG_SCHEMA: dict[str, object] = {"result": "success", "data": {"items": [], "total": 0}}


@web.middleware
async def apply_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    insurer = insurer_in_path(request)
    if insurer is None:
        return await handler(request)
    action = insurer.faults.decide()
    if isinstance(action, Proceed):
        if action.delay_s > 0:
            await request.app[SIMULATION].clock.sleep(action.delay_s)
            if request.transport is None or request.transport.is_closing():
                return _drop(request)  # the client gave up: issue nothing
        return await handler(request)
    if isinstance(action, Drop):
        await request.read()  # take the whole request first: the client then sees a disconnect
        return _drop(request)
    if isinstance(action, Hold):
        await insurer.faults.hold()  # cancelled with the handler if the client goes away
        return _drop(request)
    if isinstance(action, Fail):
        return _failure(action.status, action.text)
    if isinstance(action, Throttle):
        return web.json_response(
            {"error": "too many requests"},
            status=429,
            headers={"Retry-After": str(action.retry_after_s)},
        )
    return _garbage(action.variant)


def _drop(request: web.Request) -> web.Response:
    """Closes the connection; the response returned is never sent."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)


def _failure(status: int, text: bool) -> web.Response:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Server Error"
    if text:
        return web.Response(text=phrase, status=status)
    return web.json_response({"error": phrase.lower()}, status=status)


def _garbage(variant: str) -> web.Response:
    if variant == "json":
        return web.Response(text=BROKEN_JSON, content_type="application/json")
    if variant == "html":
        return web.Response(text=HTML_PAGE, content_type="text/html")
    return web.json_response(WRONG_SCHEMA)
