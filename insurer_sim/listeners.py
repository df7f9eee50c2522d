"""Each insurer's API on a port of its own, so that `down` is a real refused connection.

The shared port serves every insurer under `/insurers/{id}` (aiohttp, with the control routes);
with `SimConfig.insurer_ports` each insurer is also served, under the same path, on a port of its
own, by the lean server (`insurer_sim.lean_http`: these ports carry the gateways' traffic).
`down` closes that port (and drops the connections open on it), so a connect is refused; healing
re-opens the SAME port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web

from insurer_sim.api import InsurerApi
from insurer_sim.lean_http import LeanServer
from osago_common.clock import Clock

# Pending connections a listening socket queues: gateways open many at once under load.
BACKLOG = 1024
# How long closing a listener lets requests in flight finish.
SHUTDOWN_GRACE_S = 2.0


@dataclass
class _Listener:
    server: LeanServer
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class InsurerListeners:
    """One listener per insurer, on `host`, each serving the API `make_api(insurer_id)`."""

    def __init__(self, host: str, make_api: Callable[[str], InsurerApi], clock: Clock) -> None:
        self._host = host
        self._make_api = make_api
        self._clock = clock
        self._listeners: dict[str, _Listener] = {}

    async def start(self, insurer_ids: Iterable[str]) -> None:
        """Opens a listener on a free port for each insurer."""
        try:
            for insurer_id in insurer_ids:
                server = LeanServer(self._make_api(insurer_id), self._host, self._clock, BACKLOG)
                self._listeners[insurer_id] = _Listener(server)
                await server.open()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        listeners, self._listeners = self._listeners, {}
        for listener in listeners.values():
            await listener.server.stop(SHUTDOWN_GRACE_S)

    def base_url(self, insurer_id: str) -> str:
        """The insurer's API on its own port: "http://HOST:PORT/insurers/ID"."""
        return f"{self._listeners[insurer_id].server.origin}/insurers/{insurer_id}"

    def listening(self, insurer_id: str) -> bool:
        return self._listeners[insurer_id].server.listening

    async def set_listening(self, insurer_id: str, listening: bool) -> None:
        """Opens (on the same port as before) or closes the insurer's listener; closing also
        drops every connection open on it, as a crashed server would."""
        listener = self._listeners[insurer_id]
        async with listener.lock:
            if listening:
                await listener.server.open()
            else:
                await listener.server.close()


LISTENERS = web.AppKey("listeners", InsurerListeners)
