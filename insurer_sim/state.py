"""The simulator's typed aiohttp state, and the origin of an address."""

from __future__ import annotations

from aiohttp import web

from insurer_sim.insurer import Simulation
from insurer_sim.webhooks import Deliveries

SIMULATION = web.AppKey("simulation", Simulation)
# The insurers' callbacks, on the main app while it runs.
DELIVERIES = web.AppKey("deliveries", Deliveries)


def origin(host: str, port: int) -> str:
    """The origin "http://HOST:PORT", an IPv6 host in brackets."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"
