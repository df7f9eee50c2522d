"""Running the simulator: `SimServer` for tests and the demo, `serve_forever` for a process."""

from __future__ import annotations

import asyncio
import signal
from types import TracebackType

from aiohttp import web

from osago_common.clock import SYSTEM_CLOCK, Clock

from insurer_sim.app import make_app
from insurer_sim.config import SimConfig

# Pending connections the listening socket queues: gateways open many at once under load.
BACKLOG = 1024
# How long `stop` lets requests in flight finish.
SHUTDOWN_GRACE_S = 2.0


class SimServer:
    """The simulator on a TCP port (port 0: a free one); `start` returns its base URL."""

    def __init__(self, config: SimConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self._config = config
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    async def start(self) -> str:
        if self._runner is not None:
            raise RuntimeError("the simulator is already started")
        runner = web.AppRunner(
            make_app(self._config, self._clock), access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._config.host, self._config.port, backlog=BACKLOG)
            await site.start()
            host, port = runner.addresses[0][:2]
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        return self._url

    async def stop(self) -> None:
        runner, self._runner, self._url = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    @property
    def url(self) -> str:
        """The base URL, "http://127.0.0.1:PORT"; only while started."""
        if self._url is None:
            raise RuntimeError("the simulator is not started")
        return self._url

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def serve_forever(config: SimConfig, clock: Clock = SYSTEM_CLOCK) -> None:
    """Serves until cancelled, SIGTERM or SIGINT; prints one line, "listening http://HOST:PORT"."""
    async with SimServer(config, clock) as server:
        print(f"listening {server.url}", flush=True)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stopping.set)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread, or no signals here: cancellation still stops it
            handled.append(sig)
        try:
            await stopping.wait()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
