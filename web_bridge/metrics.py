"""web_bridge's Prometheus metrics (served by osago_common.metrics on their own port, never on the
browsers' one).

| metric | type | labels | meaning |
|---|---|---|---|
| `osago_bridge_streams_open` | gauge | | WebSocket event streams open now |
| `osago_bridge_streams_closed_total` | counter | `by` | WebSocket event streams ended, by who ended them: `server` (the session's end, a refusal, an error) or `client` |
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from osago_common.metrics import Collect, new_registry
from web_bridge.state import Streams


class BridgeMetrics:
    """web_bridge's series in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()

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
