"""Running web_bridge: `BridgeService` for tests and `osago up`, `serve_forever` for a process."""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from osago_common.metrics import MetricsServer, serve_metrics
from osago_common.serving import until_signalled
from web_bridge.app import make_app
from web_bridge.metrics import BridgeMetrics
from web_bridge.settings import BridgeSettings
from web_bridge.state import STREAMS, Streams

# Pending connections the listening socket queues: many browsers connect at once under load.
BACKLOG = 1024
# How long `stop` lets requests in flight finish (streams are told to go away first).
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
SHUTDOWN_GRACE_S = 2.0


class BridgeService:
    """The bridge on a TCP port (port 0: a free one); `start` returns the port."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self._runner: web.AppRunner | None = None
        self._app: web.Application | None = None
        self.port = 0
        # web_bridge's series, served on OSAGO_METRICS_PORT when set.
        self.metrics = BridgeMetrics()
        self.metrics_server: MetricsServer | None = None

    async def start(self) -> int:
        if self._runner is not None:
            raise RuntimeError("web_bridge is already started")
        app = make_app(self.settings, self.metrics)
        runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_GRACE_S, access_log_class=QuietProbesAccessLogger)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.host, self.settings.port, backlog=BACKLOG)
            await site.start()
            self.port = int(runner.addresses[0][1])
            self.metrics.watch(app[STREAMS])
            self.metrics_server = await serve_metrics(self.metrics.registry, self.settings.metrics)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._app = runner, app
        return self.port

    @property
    def url(self) -> str:
        """The base URL, "http://HOST:PORT"; only while started."""
        if self._runner is None:
            raise RuntimeError("web_bridge is not started")
        host = self.settings.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def streams(self) -> Streams:
        """The open WebSocket streams and how streams ended; only once started."""
        if self._app is None:
            raise RuntimeError("web_bridge is not started")
        return self._app[STREAMS]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        metrics, self.metrics_server = self.metrics_server, None
        if metrics is not None:
            await metrics.stop()


class QuietProbesAccessLogger(AccessLogger):
    """The access log without the probes' requests (Envoy and Kubernetes ask every few seconds)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if request.path not in PROBE_PATHS:
            super().log(request, response, time)


async def serve_forever(settings: BridgeSettings) -> None:
    """Serves until cancelled, SIGTERM or SIGINT; prints one line, "listening http://HOST:PORT"."""
    service = BridgeService(settings)
    await service.start()
    try:
        if service.metrics_server is not None:
            print(f"metrics {service.metrics_server.address}", flush=True)
        print(f"listening {service.url}", flush=True)
        await until_signalled()
    finally:
        await service.stop()
