"""Tracing with the OpenTelemetry SDK: one TracerProvider per process, set up from the standard
OTel variables, W3C trace context carried over gRPC metadata and HTTP headers, and the trace id
for logs and errors.

Who makes which span:
- the kept instrumentation libraries where they work with grpc.aio and aiohttp: the SERVER span
  of every gRPC call the aggregator takes (`aio_server_interceptor`; health and reflection
  excluded, and the gateways' service: see `_traced_service`), the CLIENT span of every HTTP
  call a gateway makes to its insurer (`aiohttp-client`, which sends `traceparent`), and the
  SERVER span of every HTTP request web_bridge and the simulator take (`aiohttp-server`); the
  HTTP ones only when spans are recorded (see `recording`);
- by hand, what no library knows: a gateway's SERVER span per ask (RequestOffer, or an ask of
  an Offers stream, continuing the trace context the ask carries), `quote_session` (a session,
  whichever call started it), and, only when spans are recorded, `request_offer` (one insurer
  of a session, the CLIENT side of its gateway calls, across the calls that resume it) and
  `insurer_http` (one attempt of the gateway's guard, with its step and failure reason);
- by hand, the gRPC client side: `inject_metadata()` at each call. The library's grpc.aio
  client interceptors (opentelemetry-instrumentation-grpc 0.66b1) do not fit our calls: a
  server-streaming call's span ends only when its response iterator is read to the end (the
  interceptor returns an async generator that ends the span in its `finally`), while our
  callers stop reading and cancel (the aggregator once an insurer has answered, web_bridge when
  the browser leaves), so those spans stay open until garbage collection or forever (seen here:
  no gateway call's span was ever exported); and on unary calls they keep the caller's
  cancellation from reaching it (upstream issue open-telemetry/opentelemetry-python-contrib
  #3271). Every grpc.aio interceptor also costs a task per call.

Spans carry ids, insurer ids, reasons, counts, statuses and timings: never names, licence or
document numbers, VINs, plates or birth dates (nor exception texts, which may quote them).
The hand-made spans therefore never record exceptions (`record_exception=False`); the
libraries record only what passes through gRPC and HTTP (methods, routes, status codes, the
status messages our servers send, which never hold personal data).

Export: when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, spans
go to that OTLP/gRPC collector in batches (OTEL_TRACES_EXPORTER may also name `console`, or
`none`; OTEL_SDK_DISABLED=true turns tracing off). The exporter and the resource read the other
standard variables (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS,
_CERTIFICATE, _TIMEOUT, OTEL_TRACES_SAMPLER, OTEL_BSP_*) as the SDK does. With no exporter, the
provider samples nothing: spans are non-recording (no attributes kept, nothing queued) and the
HTTP instrumentation is left out, yet trace ids are still made (from the aggregator's server
span on) and carried over gRPC, so logs and error messages of one session share one trace id
across services at almost no cost.

Tracers are looked up at call time through `tracer(name)` (the instrumentation libraries too,
through `PROVIDER`), from the provider set by `set_tracer_provider_for_tests` when there is one,
else the global one that `configure_tracing` installs; so tests collect spans with a provider of
their own, while OpenTelemetry lets the global provider be set only once per process.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping
from typing import TypeVar

import aiohttp
import grpc
from aiohttp.typedefs import Middleware
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation import aiohttp_server
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.instrumentation.aiohttp_server import create_aiohttp_middleware
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.util import types
from opentelemetry.util.http import get_excluded_urls

from osago_common.env import SettingsError, env_flag

# The standard OpenTelemetry variables this module reads itself (the SDK reads the others).
DISABLED_VARIABLE = "OTEL_SDK_DISABLED"
EXPORTER_VARIABLE = "OTEL_TRACES_EXPORTER"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
SERVICE_NAME_VARIABLE = "OTEL_SERVICE_NAME"
EXPORTERS = ("otlp", "console", "none")

# Span attribute names, shared by every service.
REQUEST_ID = "osago.request_id"
INSURER_ID = "osago.insurer_id"
INSURER_IDS = "osago.insurer_ids"
INSURERS_ASKED = "osago.insurers_asked"
OUTCOME = "osago.outcome"
STATUS = "osago.status"
QUOTES = "osago.quotes"
FAILED = "osago.failed"
STEP = "osago.step"
ATTEMPT = "osago.attempt"
HTTP_STATUS = "osago.http.status_code"
FAILURE = "osago.failure"
RETRYABLE = "osago.retryable"
TAKEN_OVER = "osago.taken_over"

T = TypeVar("T")

Metadata = tuple[tuple[str, str], ...]
# What grpc.aio's ServicerContext.invocation_metadata() gives (values of "-bin" keys are bytes).
InvocationMetadata = Iterable[tuple[str, str | bytes]]

_configured = False
_exporting = False
_test_provider: trace.TracerProvider | None = None
_tracers: dict[str, trace.Tracer] = {}


def exporters(env: Mapping[str, str]) -> tuple[str, ...]:
    """Where this process's spans go: "otlp" (when an OTLP endpoint is set), "console", both, or
    nowhere (). Raises SettingsError for values this build cannot honour."""
    if env_flag(env, DISABLED_VARIABLE):
        return ()
    names = [n.strip().lower() for n in env.get(EXPORTER_VARIABLE, "otlp").split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise SettingsError(f"{EXPORTER_VARIABLE} must list {', '.join(EXPORTERS)}, got {env[EXPORTER_VARIABLE]!r}")
    for variable in PROTOCOL_VARIABLES:
        protocol = env.get(variable, "").strip().lower()
        if protocol not in ("", "grpc"):
            raise SettingsError(f"{variable}: only grpc is supported (OTLP over gRPC), got {env[variable]!r}")
    found: list[str] = []
    if "otlp" in names and otlp_endpoint(env):
        found.append("otlp")
    if "console" in names:
        found.append("console")
    return tuple(found)


def otlp_endpoint(env: Mapping[str, str]) -> str:
    """The collector's address from the standard variables (the traces-only one first), or ""."""
    return next((value for name in ENDPOINT_VARIABLES if (value := env.get(name, "").strip())), "")


def build_provider(service_name: str, env: Mapping[str, str]) -> TracerProvider:
    """The provider `configure_tracing` installs: the service's name (OTEL_SERVICE_NAME when set)
    in its resource; spans batched to the OTLP/gRPC collector and/or printed to stderr as
    `exporters(env)` says, else sampled out (still made, so their trace ids reach logs and error
    messages and travel to the next service, but recording and exporting nothing)."""
    resource = Resource.create({SERVICE_NAME: env.get(SERVICE_NAME_VARIABLE, "").strip() or service_name})
    chosen = exporters(env)
    if not chosen:
        return TracerProvider(resource=resource, sampler=ALWAYS_OFF)
    # The sampler from OTEL_TRACES_SAMPLER (default: parent-based, always on).
    provider = TracerProvider(resource=resource)
    if "otlp" in chosen:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint(env))))
    if "console" in chosen:
        # stderr, with the logs: a service's stdout carries its `listening` line.
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    return provider


def configure_tracing(service_name: str, env: Mapping[str, str]) -> None:
    """Installs this process's global TracerProvider; a second call does nothing. Raises
    SettingsError when the OTEL_* variables ask for what this build cannot do."""
    global _configured, _exporting  # noqa: PLW0603 - one provider per process, as OpenTelemetry's own is global
    if _configured:
        return
    provider = build_provider(service_name, env)
    trace.set_tracer_provider(provider)
    _configured = True
    _exporting = bool(exporters(env))
    _tracers.clear()


def recording() -> bool:
    """Whether this process records spans: it exports them (configure_tracing), or a test
    collects them (set_tracer_provider_for_tests). Checked when a server or an HTTP client is
    set up: the HTTP instrumentation is left out when nothing is recorded (see below)."""
    return _exporting or _test_provider is not None


def set_tracer_provider_for_tests(provider: trace.TracerProvider | None) -> None:
    """Spans go to `provider` from now on (None: back to the global provider)."""
    global _test_provider  # noqa: PLW0603 - replaces the process-wide provider, for tests
    _test_provider = provider
    _tracers.clear()


def tracer(name: str) -> trace.Tracer:
    """The tracer called `name` (a module's __name__) of the current provider."""
    found = _tracers.get(name)
    if found is None:
        provider = _test_provider if _test_provider is not None else trace.get_tracer_provider()
        found = _tracers[name] = provider.get_tracer(name)
    return found


class _CurrentTracer(trace.ProxyTracer):
    """A tracer that resolves to `tracer(name)` at every span, so an instrumentation library
    built once (a server's interceptor) follows the provider of the moment."""

    @property
    def _tracer(self) -> trace.Tracer:
        return tracer(self._instrumenting_module_name)


class _CurrentProvider(trace.TracerProvider):
    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> trace.Tracer:
        return _CurrentTracer(instrumenting_module_name, instrumenting_library_version, schema_url, attributes)


# What the instrumentation libraries are given: the provider of the moment.
PROVIDER: trace.TracerProvider = _CurrentProvider()

# Health checks (probes every few seconds) and reflection make no traces. Nor does the library
# trace the gateways' service: its Offers stream multiplexes the asks of many sessions (each with
# its own trace context in the ask) over one long-lived bidirectional call, so one span per call
# would join unrelated traces; the gateway makes a SERVER span per ask by hand, RequestOffer's
# the same way (insurer_gateway/servicer.py).
# The library's own filters (`filters.service_name` and the like) find a call's method through
# isinstance checks against typing protocols, 15-30 µs a call here (`osago bench hotpaths`); this
# reads it directly.
_UNTRACED_SERVICES = frozenset({"grpc.health.v1.Health", "osago.v1.InsurerGatewayService"})
_UNTRACED_PREFIX = "grpc.reflection."


def _traced_service(details: grpc.HandlerCallDetails) -> bool:
    """Whether a call of `details.method` ("/package.Service/Method") gets a SERVER span."""
    method = details.method
    service = (method.decode() if isinstance(method, bytes) else method).lstrip("/").rpartition("/")[0]
    return service not in _UNTRACED_SERVICES and not service.startswith(_UNTRACED_PREFIX)


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The first interceptor of every project gRPC server: a SERVER span per call of the services
    `_traced_service` lets through (the aggregator's), continuing the caller's trace from the
    call's metadata (opentelemetry-instrumentation-grpc). It handles server streaming in
    grpc.aio: the span stays current while the servicer's generator runs and ends with the call,
    cancelled or not (tests/test_tracing.py checks both)."""
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=PROVIDER, filter_=_traced_service
    )
    return [interceptor]


# The HTTP instrumentation builds every request's attributes (URL parsing and redaction, headers,
# metric attributes) even for a span that records nothing: about 0.1 ms of CPU per request on
# each side, as much again as the request itself (measured here with a local aiohttp client and
# server). A gateway makes ~50 HTTP calls a session, so when nothing is recorded it is left out;
# the gRPC server interceptor stays (a few calls a session), so the trace ids a session's logs
# carry still start at the aggregator and travel to every gateway.


def http_client_trace_configs() -> list[aiohttp.TraceConfig]:
    """For an aiohttp ClientSession, when spans are recorded: a CLIENT span per request,
    `traceparent` in its headers (opentelemetry-instrumentation-aiohttp-client). URLs are
    recorded without query strings' values; our insurer URLs carry application ids, never
    personal data."""
    return [create_trace_config(tracer_provider=PROVIDER)] if recording() else []


def http_server_middlewares() -> list[Middleware]:
    """For an aiohttp Application, when spans are recorded: a SERVER span per request continuing
    the caller's trace from its headers (opentelemetry-instrumentation-aiohttp-server). The first
    middleware, so the others' work is inside it.

    The library's middleware reads module state that only its instrumentor sets (the excluded
    URLs, the active-requests counter: None before, so every request fails with AttributeError),
    and that instrumentor replaces `web.Application` process-wide by a subclass, which aiohttp
    deprecates (a DeprecationWarning per subclass) and which inserts into the caller's
    middleware list. So the state is set here, as the instrumentor would (the excluded URLs from
    OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS, the counter from the global meter provider), and the
    middleware is added to each application explicitly."""
    if not recording():
        return []
    if aiohttp_server._excluded_urls is None:
        aiohttp_server._excluded_urls = get_excluded_urls("AIOHTTP_SERVER")
        aiohttp_server.active_requests_counter = metrics.get_meter(aiohttp_server.__name__).create_up_down_counter(
            name="http.server.active_requests", unit="{request}", description="Number of active HTTP server requests."
        )
    middleware: Middleware = create_aiohttp_middleware(tracer_provider=PROVIDER)
    return [middleware]


def current_trace_id() -> str:
    """The active span's trace id in hex, or "" when no span is active."""
    return trace_id(trace.get_current_span())


def trace_id(span: trace.Span) -> str:
    """`span`'s trace id in hex, or "" for no span (e.g. tracing was never configured)."""
    span_context = span.get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else ""


class _MetadataSetter(Setter[list[tuple[str, str]]]):
    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key.lower(), value))


class _MetadataGetter(Getter[InvocationMetadata]):
    def get(self, carrier: InvocationMetadata, key: str) -> list[str] | None:
        key = key.lower()
        values = [v for k, v in carrier if k.lower() == key and isinstance(v, str)]
        return values or None

    def keys(self, carrier: InvocationMetadata) -> list[str]:
        return [k for k, _ in carrier]


_SETTER = _MetadataSetter()
_GETTER = _MetadataGetter()


def inject_metadata() -> Metadata:
    """gRPC metadata carrying the current trace context (`traceparent`, …) to the called
    service; empty when no span is active."""
    carrier: list[tuple[str, str]] = []
    propagate.inject(carrier, setter=_SETTER)
    return tuple(carrier)


def extract_context(invocation_metadata: InvocationMetadata | None) -> Context:
    """The caller's trace context from a call's metadata (an empty context when it sent none)."""
    return propagate.extract(tuple(invocation_metadata or ()), getter=_GETTER)


@contextlib.contextmanager
def attached(ctx: Context) -> Iterator[None]:
    """Makes `ctx` current for the block. Never hold it across a `yield` of an async generator
    (see `stream_within`)."""
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


async def stream_within(ctx: Context, stream: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    """`stream`'s items, each produced with `ctx` current, so spans made while producing them
    are its children. The context is made current only around each step, never across a yield:
    a generator closed later by the event loop (a cancelled gRPC call) would detach it in
    another task's context. Closes `stream` when closed."""
    try:
        while True:
            # `attached` written out: a generator-based context manager costs a few µs a step,
            # and a gateway takes a step for every update of every application.
            token = otel_context.attach(ctx)
            try:
                item = await anext(stream)
            except StopAsyncIteration:
                return
            finally:
                otel_context.detach(token)
            yield item
    finally:
        await stream.aclose()
