"""The fault control API: switch an insurer's fault at run time, see it, heal it.

    PUT    /_sim/insurers/{id}/fault  {"mode": MODE, option: value...}  -> 200 state
                                      (400 {error, field}: unknown mode, bad or foreign option,
                                      a callback mode for an insurer without callbacks)
    GET    /_sim/insurers/{id}/fault  -> 200 state
    DELETE /_sim/insurers/{id}/fault  -> 200 state (healed)
    GET    /_sim/faults               -> 200 {"insurers": [state, ...]}
    POST   /_sim/faults/reset         -> 200 {"insurers": [state, ...]} (everyone healed)

A state is {"insurer_id", "fault": {"mode", options...} | null, "since", "injected", "held",
"base_url", "listening"}: `injected` counts the requests the fault answered, dropped, held or
declined; `held` the requests a blackhole holds open now; `base_url` is the URL gateways should
use (the insurer's own port when there is one, so `down` refuses connections); `listening` is
false while connections are refused (down). An unknown insurer is a 404; a port that cannot be
opened again on heal, a 503.
"""

from __future__ import annotations

import json

from aiohttp import web

from insurer_sim.dialects import DIALECTS
from insurer_sim.faults import CALLBACK_MODES, FaultError, parse_fault
from insurer_sim.insurer import SimInsurer
from insurer_sim.listeners import LISTENERS
from insurer_sim.state import SIMULATION


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_sim/faults", _all)
    app.router.add_post("/_sim/faults/reset", _reset)
    app.router.add_get("/_sim/insurers/{insurer_id}/fault", _get)
    app.router.add_put("/_sim/insurers/{insurer_id}/fault", _put)
    app.router.add_delete("/_sim/insurers/{insurer_id}/fault", _delete)


def api_base_url(request: web.Request, insurer_id: str) -> str:
    """Where gateways should send the insurer's API calls."""
    listeners = request.app.get(LISTENERS)
    if listeners is not None:
        return listeners.base_url(insurer_id)
    return f"{request.url.origin()}/insurers/{insurer_id}"


def _state(request: web.Request, insurer: SimInsurer) -> dict[str, object]:
    listeners = request.app.get(LISTENERS)
    listening = listeners.listening(insurer.insurer_id) if listeners else not insurer.faults.refusing
    return {
        "insurer_id": insurer.insurer_id,
        **insurer.faults.to_json(),
        "base_url": api_base_url(request, insurer.insurer_id),
        "listening": listening,
    }


def _insurer(request: web.Request) -> SimInsurer | None:
    return request.app[SIMULATION].insurers.get(request.match_info["insurer_id"])


def _unknown(request: web.Request) -> web.Response:
    insurer_id = request.match_info["insurer_id"]
    return web.json_response({"error": f"unknown insurer {insurer_id}", "field": "insurer_id"}, status=404)


async def _follow(request: web.Request, insurer: SimInsurer) -> web.Response | None:
    """Opens or closes the insurer's own listener as its fault says; an error answer if its
    port cannot be opened again (taken by another process meanwhile)."""
    listeners = request.app.get(LISTENERS)
    if listeners is None:
        return None
    try:
        await listeners.set_listening(insurer.insurer_id, not insurer.faults.refusing)
    except OSError as exc:
        message = f"cannot listen again at {listeners.base_url(insurer.insurer_id)}: {exc.strerror}"
        return web.json_response({"error": message}, status=503)
    return None


def _bad_request(field: str, message: str) -> web.Response:
    return web.json_response({"error": message, "field": field or None}, status=400)


async def _put(request: web.Request) -> web.Response:
    insurer = _insurer(request)
    if insurer is None:
        return _unknown(request)
    try:
        body = json.loads(await request.read())
    except (ValueError, RecursionError):
        return _bad_request("", "the body is not valid JSON")
    try:
        fault = parse_fault(body)
    except FaultError as exc:
        return _bad_request(exc.field, str(exc))
    if fault.mode in CALLBACK_MODES and not DIALECTS[insurer.profile.dialect].callbacks:
        dialect = insurer.profile.dialect
        return _bad_request("mode", f"mode {fault.mode} needs an insurer that calls back; {dialect} insurers do not")
    insurer.faults.set(fault)
    return await _follow(request, insurer) or web.json_response(_state(request, insurer))


async def _get(request: web.Request) -> web.Response:
    insurer = _insurer(request)
    if insurer is None:
        return _unknown(request)
    return web.json_response(_state(request, insurer))


async def _delete(request: web.Request) -> web.Response:
    insurer = _insurer(request)
    if insurer is None:
        return _unknown(request)
    insurer.faults.heal()
    return await _follow(request, insurer) or web.json_response(_state(request, insurer))


async def _all(request: web.Request) -> web.Response:
    insurers = request.app[SIMULATION].insurers.values()
    return web.json_response({"insurers": [_state(request, i) for i in insurers]})


async def _reset(request: web.Request) -> web.Response:
    for insurer in request.app[SIMULATION].insurers.values():
        insurer.faults.heal()
        failed = await _follow(request, insurer)
        if failed is not None:
            return failed
    return await _all(request)
