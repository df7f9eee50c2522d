"""Each insurer's API on a port of its own, so that `down` is a real refused connection.

The shared port serves every insurer under `/insurers/{id}`; with `SimConfig.insurer_ports` each
insurer is also served, under the same path, on a port of its own. `down` closes that port (and
drops the connections open on it), so a connect is refused; healing re-opens the SAME port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web

from insurer_sim.state import origin

# Pending connections a listening socket queues: gateways open many at once under load.
BACKLOG = 1024
# How long closing a listener lets requests in flight finish.
SHUTDOWN_GRACE_S = 2.0


@dataclass
class _Listener:
    runner: web.AppRunner
    port: int
    site: web.TCPSite | None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class InsurerListeners:
    """One listener per insurer, on `host`, each serving the application `make_app(insurer_id)`."""

    def __init__(self, host: str, make_app: Callable[[str], web.Application]) -> None:
        self._host = host
        self._make_app = make_app
        self._listeners: dict[str, _Listener] = {}

    async def start(self, insurer_ids: Iterable[str]) -> None:
        """Opens a listener on a free port for each insurer."""
        try:
            for insurer_id in insurer_ids:
                runner = web.AppRunner(
                    self._make_app(insurer_id),
                    access_log=None,
                    handler_cancellation=True,
                    shutdown_timeout=SHUTDOWN_GRACE_S,
                )
                await runner.setup()
                listener = _Listener(runner, 0, None)
                self._listeners[insurer_id] = listener
                listener.site = await self._open(runner, 0)
                listener.port = runner.addresses[0][1]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        listeners, self._listeners = self._listeners, {}
        for listener in listeners.values():
            await listener.runner.cleanup()

    def base_url(self, insurer_id: str) -> str:
        """The insurer's API on its own port: "http://HOST:PORT/insurers/ID"."""
        return f"{origin(self._host, self._listeners[insurer_id].port)}/insurers/{insurer_id}"

    def listening(self, insurer_id: str) -> bool:
        return self._listeners[insurer_id].site is not None

    async def set_listening(self, insurer_id: str, listening: bool) -> None:
        """Opens (on the same port as before) or closes the insurer's listener; closing also
        drops every connection open on it, as a crashed server would."""
        listener = self._listeners[insurer_id]
        async with listener.lock:
            if listening and listener.site is None:
                listener.site = await self._open(listener.runner, listener.port)
            elif not listening and listener.site is not None:
                site, listener.site = listener.site, None
                await site.stop()
                server = listener.runner.server
                for connection in server.connections if server else ():
                    connection.force_close()

    async def _open(self, runner: web.AppRunner, port: int) -> web.TCPSite:
        site = web.TCPSite(runner, self._host, port, backlog=BACKLOG)
        await site.start()
        return site


LISTENERS = web.AppKey("listeners", InsurerListeners)
