"""A gateway's Prometheus metrics (served by osago_common.metrics), each labelled with its insurer.

| metric | type | labels | meaning |
|---|---|---|---|
| `osago_insurer_call_duration_seconds` | histogram | `insurer`, `step` | every HTTP call that reached the insurer, whatever its answer: `create`, `poll` |
| `osago_breaker_state` / `osago_breaker_transitions_total` | gauge / counter | `insurer` (, `to`) | the breaker toward the insurer: 0 closed, 1 half-open, 2 open; its state changes by the state entered |
| `osago_quota_waits_total` | counter | `insurer` | calls that waited for a slot of the insurer's quota |
| `osago_quota_refusals_total` | counter | `insurer` | calls the quota refused (no slot before the deadline) |
| `osago_insurer_retries_total` | counter | `insurer` | retries sent to the insurer |
| `osago_gateway_calls_in_flight` | gauge | `insurer` | RequestOffer calls being served |
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from insurer_gateway.guard import InsurerGuard
from insurer_gateway.servicer import GatewayStats
from osago_common.metrics import Collect, breaker_metrics, new_registry

# HTTP calls time out at 5 s by default.
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """One insurer's gateway series in a registry of its own."""

    def __init__(self, insurer_id: str, registry: CollectorRegistry | None = None) -> None:
        self.insurer_id = insurer_id
        self.registry = registry if registry is not None else new_registry()
        self._calls = Histogram(
            "osago_insurer_call_duration_seconds",
            "HTTP calls that reached the insurer, by step, whatever their answer.",
            ["insurer", "step"],
            buckets=CALL_BUCKETS,
            registry=self.registry,
        )
        # Children made once per step (the steps are the code's own: create, poll).
        self._by_step = {step: self._calls.labels(insurer_id, step) for step in ("create", "poll")}

    def observe_call(self, step: str, seconds: float) -> None:
        child = self._by_step.get(step)
        if child is None:
            child = self._by_step[step] = self._calls.labels(self.insurer_id, step)
        child.observe(seconds)

    def watch(self, guard: InsurerGuard, stats: GatewayStats) -> None:
        """Reads the guard's and the servicer's counts at every scrape."""
        insurer = self.insurer_id

        def family(kind: type[CounterMetricFamily | GaugeMetricFamily], name: str, text: str, value: float) -> Metric:
            metric = kind(name, text, labels=["insurer"])
            metric.add_metric([insurer], value)
            return metric

        def collect() -> list[Metric]:
            return [
                *breaker_metrics({insurer: guard.breaker}),
                family(
                    CounterMetricFamily,
                    "osago_quota_waits",
                    "Calls that waited for a slot of the insurer's quota.",
                    guard.limiter.waits_total,
                ),
                family(
                    CounterMetricFamily,
                    "osago_quota_refusals",
                    "Calls the insurer's quota refused: no slot before the deadline.",
                    guard.rate_limited_total,
                ),
                family(
                    CounterMetricFamily, "osago_insurer_retries", "Retries sent to the insurer.", guard.retries_total
                ),
                family(
                    GaugeMetricFamily,
                    "osago_gateway_calls_in_flight",
                    "RequestOffer calls being served.",
                    stats.in_flight,
                ),
            ]

        self.registry.register(Collect(collect))
