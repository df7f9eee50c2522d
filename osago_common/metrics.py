"""Prometheus metrics of every service: where the endpoint listens, a registry of each service's
own, and the HTTP endpoint serving it (prometheus-client's aiohttp handler, in the service's
event loop).

| variable | default | meaning |
|---|---|---|
| `OSAGO_METRICS_PORT` | unset | the port serving Prometheus text at `/metrics`; unset or empty: no endpoint; 0: a free port (printed at start-up as `metrics HOST:PORT`) |
| `OSAGO_METRICS_HOST` | `127.0.0.1` | the address it binds (`0.0.0.0` in a pod) |

Each service has a registry of its own, never prometheus-client's global one: several services
run in one process in the tests (osago_mesh.local), and each must serve only its own series.
Counts the services already keep as plain integers (breaker transitions, retries, shed sessions)
are read at scrape time by a collector, so the hot path pays nothing for them; what happens per
event (an offer, a delivery, an HTTP call) is one counter increment or histogram observation on a
child made once per label value. Labels never carry request ids, customers or application data:
insurer ids (from configuration), steps, reasons and outcomes, all from closed sets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from osago_common.breaker import BreakerState, CircuitBreaker
from osago_common.env import SettingsError, env_str

# osago_breaker_state's values (the alert rules compare with 2).
BREAKER_STATE_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(frozen=True)
class MetricsEndpoint:
    """Where a service serves /metrics; `port` None: nowhere, 0: a free port."""

    host: str = "127.0.0.1"
    port: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MetricsEndpoint:
        raw = env.get("OSAGO_METRICS_PORT", "").strip()
        port: int | None = None
        if raw:
            try:
                port = int(raw)
            except ValueError:
                raise SettingsError(f"OSAGO_METRICS_PORT must be a port number, got {raw!r}") from None
            if not 0 <= port <= 65535:
                raise SettingsError("OSAGO_METRICS_PORT must be between 0 and 65535")
        return cls(host=env_str(env, "OSAGO_METRICS_HOST", cls.host), port=port)


def new_registry() -> CollectorRegistry:
    """A service's own registry, with the process's CPU, memory, file descriptors, Python
    version and garbage collections (prometheus-client's standard collectors)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class Collect(Collector):
    """A collector made of a function returning metric families, read at every scrape
    (prometheus-client's custom-collector protocol)."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    """A counter family of one unlabelled sample; `name` without `_total`."""
    return CounterMetricFamily(name, documentation, value=value)


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def breaker_metrics(breakers: Mapping[str, CircuitBreaker]) -> list[Metric]:
    """osago_breaker_state and osago_breaker_transitions_total of a breaker per insurer (the
    aggregator's toward each gateway, a gateway's toward its insurer). Reading the state moves
    an open breaker whose time is up to half-open, as any caller would."""
    state = GaugeMetricFamily(
        "osago_breaker_state",
        "Circuit breaker toward the insurer: 0 closed, 1 half-open (probing), 2 open (failing fast).",
        labels=["insurer"],
    )
    transitions = CounterMetricFamily(
        "osago_breaker_transitions",
        "Circuit breaker state changes, by the state entered.",
        labels=["insurer", "to"],
    )
    for insurer, breaker in breakers.items():
        state.add_metric([insurer], BREAKER_STATE_VALUES[breaker.state])
        for to in BreakerState:
            transitions.add_metric([insurer, to.value], breaker.transitions[to])
    return [state, transitions]


class MetricsServer:
    """Serves `registry` as Prometheus text at GET /metrics on `endpoint`, from this event loop
    (a scrape formats a few hundred samples: well under a millisecond)."""

    def __init__(self, registry: CollectorRegistry, endpoint: MetricsEndpoint) -> None:
        if endpoint.port is None:
            raise ValueError("no metrics port configured")
        self._registry = registry
        self._endpoint = endpoint
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> int:
        """Starts serving; returns the bound port."""
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(self._registry))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._endpoint.host, self._endpoint.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    @property
    def address(self) -> str:
        host = self._endpoint.host
        return f"{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


async def serve_metrics(registry: CollectorRegistry, endpoint: MetricsEndpoint) -> MetricsServer | None:
    """The started endpoint, or None when no port is configured."""
    if endpoint.port is None:
        return None
    server = MetricsServer(registry, endpoint)
    await server.start()
    return server
