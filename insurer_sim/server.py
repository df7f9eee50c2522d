"""Running the simulator: `SimServer` for tests and the demo, `serve_forever` for a process."""

from __future__ import annotations

from types import TracebackType

from aiohttp import web

from insurer_sim.app import make_app
from insurer_sim.config import SimConfig
from insurer_sim.listeners import BACKLOG, LISTENERS, SHUTDOWN_GRACE_S
from insurer_sim.state import origin
from osago_common.clock import SYSTEM_CLOCK, Clock
from osago_common.metrics import MetricsServer, new_registry, serve_metrics
from osago_common.serving import until_signalled


class SimServer:
    """The simulator on a TCP port (port 0: a free one); `start` returns its base URL."""

    def __init__(self, config: SimConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self._config = config
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._app: web.Application | None = None
        self._url: str | None = None
        # The process's own metrics (CPU, memory), when a metrics port is configured.
        self.metrics_server: MetricsServer | None = None

    async def start(self) -> str:
        if self._runner is not None:
            raise RuntimeError("the simulator is already started")
        app = make_app(self._config, self._clock)
        # handler_cancellation: a request whose client went away (a blackholed one, a slow one)
        # stops there, leaking no task and issuing nothing.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S, handler_cancellation=True)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._config.host, self._config.port, backlog=BACKLOG)
            await site.start()
            host, port = runner.addresses[0][:2]
            self.metrics_server = await serve_metrics(new_registry(), self._config.metrics)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._app = runner, app
        self._url = origin(host, port)
        return self._url

    async def stop(self) -> None:
        runner, self._runner, self._app, self._url = self._runner, None, None, None
        if runner is not None:
            await runner.cleanup()
        metrics, self.metrics_server = self.metrics_server, None
        if metrics is not None:
            await metrics.stop()

    @property
    def url(self) -> str:
        """The base URL, "http://127.0.0.1:PORT"; only while started."""
        if self._url is None:
            raise RuntimeError("the simulator is not started")
        return self._url

    def insurer_url(self, insurer_id: str) -> str:
        """Where a gateway should send insurer `insurer_id`'s API calls: its own port with
        `SimConfig.insurer_ports` (so `down` refuses connections), else under the shared one."""
        listeners = self._app.get(LISTENERS) if self._app is not None else None
        if listeners is not None:
            return listeners.base_url(insurer_id)
        return f"{self.url}/insurers/{insurer_id}"

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
        if server.metrics_server is not None:
            print(f"metrics {server.metrics_server.address}", flush=True)
        print(f"listening {server.url}", flush=True)
        await until_signalled()
