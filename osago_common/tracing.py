"""Tracing with the OpenTelemetry SDK, by hand: one TracerProvider per process (set up from the
environment), W3C trace context carried in gRPC metadata, the trace id for logs and errors.

Spans carry ids, insurer ids, reasons, counts and statuses: never names, licence or document
numbers, VINs, plates or birth dates (nor exception texts, which may quote them). Exceptions are
therefore never recorded by the span helpers here (`record_exception=False`).

Tracers are looked up at call time through `tracer(name)`, from the provider set by
`set_tracer_provider_for_tests` when there is one, else the global one that `configure_tracing`
installs; so tests collect spans with a provider of their own, while OpenTelemetry lets the
global provider be set only once per process.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping
from typing import TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from osago_common.env import env_flag

T = TypeVar("T")

CONSOLE_VARIABLE = "OSAGO_TRACE_CONSOLE"

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

Metadata = tuple[tuple[str, str], ...]
# What grpc.aio's ServicerContext.invocation_metadata() gives (values of "-bin" keys are bytes).
InvocationMetadata = Iterable[tuple[str, str | bytes]]

_configured = False
_test_provider: trace.TracerProvider | None = None
_tracers: dict[str, trace.Tracer] = {}


def build_provider(service_name: str, env: Mapping[str, str]) -> TracerProvider:
    """The provider `configure_tracing` installs: the service's name as its resource, spans
    printed to stderr when OSAGO_TRACE_CONSOLE is on, else exported nowhere (still made, so
    their trace ids reach logs and error messages and travel to the next service)."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    if env_flag(env, CONSOLE_VARIABLE):
        # stderr, with the logs: a service's stdout carries its `listening` line.
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    return provider


def configure_tracing(service_name: str, env: Mapping[str, str]) -> None:
    """Installs this process's global TracerProvider; a second call does nothing. Raises
    SettingsError when OSAGO_TRACE_CONSOLE is malformed."""
    global _configured  # noqa: PLW0603 - one provider per process, as OpenTelemetry's own is global
    if _configured:
        return
    provider = build_provider(service_name, env)
    trace.set_tracer_provider(provider)
    _configured = True
    _tracers.clear()


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
            with attached(ctx):
                try:
                    item = await anext(stream)
                except StopAsyncIteration:
                    return
            yield item
    finally:
        await stream.aclose()
