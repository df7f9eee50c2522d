"""The simulator's typed aiohttp state, and finding the insurer a request is for."""

from __future__ import annotations

from aiohttp import web

from insurer_sim.insurer import SimInsurer, Simulation
from insurer_sim.webhooks import Deliveries

SIMULATION = web.AppKey("simulation", Simulation)
# The insurers' callbacks, on the main app while it runs.
DELIVERIES = web.AppKey("deliveries", Deliveries)
# Set on the application behind an insurer's own listener: the one insurer it serves.
ONLY_INSURER = web.AppKey("only_insurer", str)


def insurer_in_path(request: web.Request) -> SimInsurer | None:
    """The insurer whose API (`/insurers/{insurer_id}/...`) the request is for, if this listener
    serves it (control routes under `/_sim` are never an insurer's API)."""
    insurer_id = request.match_info.get("insurer_id")
    if insurer_id is None or not request.path.startswith("/insurers/"):
        return None
    only = request.app.get(ONLY_INSURER)
    if only is not None and only != insurer_id:
        return None
    return request.app[SIMULATION].insurers.get(insurer_id)


def origin(host: str, port: int) -> str:
    """The origin "http://HOST:PORT", an IPv6 host in brackets."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"
