"""web_bridge's Prometheus metrics (served by osago_common.metrics on their own port, never on the
browsers' one).

| metric | type | labels | meaning |
|---|---|---|---|
| `osago_bridge_streams_open` | gauge | | WebSocket event streams open now |
| `osago_bridge_streams_closed_total` | counter | `by` | WebSocket event streams ended, by who ended them: `server` (the session's end, a refusal, an error) or `client` |
| `osago_bridge_http_requests_total` | counter | `route`, `code` | HTTP requests answered, by route (its pattern, e.g. `/osago/quotes/{request_id}`; `unmatched` for unknown paths) and status code |
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from osago_common.metrics import Collect, new_registry
from web_bridge.state import Streams


class BridgeMetrics:
    """web_bridge's series in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        self._requests = Counter(
            "osago_bridge_http_requests",
            "HTTP requests answered, by route and status code.",
            ["route", "code"],
            registry=self.registry,
        )
        # Children by (route, code): both from closed sets (the app's routes, HTTP's codes).
        self._by: dict[tuple[str, int], Counter] = {}

    @web.middleware
    async def count_requests(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The outermost middleware: counts every answer, errors included, by route and code."""
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            resource = request.match_info.route.resource
            key = (resource.canonical if resource is not None else "unmatched", status)
            child = self._by.get(key)
            if child is None:
                child = self._by[key] = self._requests.labels(key[0], str(status))
            child.inc()

    def watch(self, streams: Streams) -> None:
        """Reads the streams' counts at every scrape."""

        def collect() -> list[Metric]:
            closed = CounterMetricFamily(
                "osago_bridge_streams_closed", "WebSocket event streams ended, by who ended them.", labels=["by"]
            )
            closed.add_metric(["server"], streams.finished)
            closed.add_metric(["client"], streams.abandoned)
            return [
                GaugeMetricFamily(
                    "osago_bridge_streams_open", "WebSocket event streams open.", value=len(streams.open)
                ),
                closed,
            ]

        self.registry.register(Collect(collect))
