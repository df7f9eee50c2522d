"""End-to-end tracing: spans collected in memory from a real session over the in-process mesh,
the trace context carried over gRPC metadata, and no personal data in any span."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util import types
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import application_pb2, events_pb2

from aggregator.store import MemoryRequestStore, RequestRecord
from insurer_gateway.exchange import HttpCall, HttpResponse, HttpUnavailable
from insurer_gateway.guard import InsurerGuard
from insurer_gateway.offers import Failed, Reason
from insurer_gateway.settings import GatewaySettings
from osago_common import tracing
from osago_common.clock import FakeClock
from osago_common.env import SettingsError
from tests.conftest import load_example, start_mesh

Attributes = dict[str, object]
functional = pytest.mark.functional
# The SERVER spans of the gRPC instrumentation (opentelemetry-instrumentation-grpc).
AGGREGATOR_CALL = "/osago.v1.AggregatorService/GetQuotes"
GATEWAY_CALL = "RequestOffer"  # by hand, one per ask (osago_common.tracing)


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def children(exporter: InMemorySpanExporter, parent: ReadableSpan) -> list[ReadableSpan]:
    return [
        s for s in exporter.get_finished_spans() if s.parent is not None and s.parent.span_id == parent.context.span_id
    ]


def attrs(span: ReadableSpan) -> Attributes:
    return dict(span.attributes or {})


def personal_data(app: application_pb2.Application) -> list[str]:
    """The application's names, licence numbers, VIN, plate and birth dates."""
    values = [app.vehicle.vin, app.vehicle.plate, app.owner.birth_date]
    people = [app.owner.name, *(d.name for d in app.drivers)]
    values += [v for n in people for v in (n.last_name, n.first_name, n.middle_name)]
    values += [v for d in app.drivers for v in (d.licence_number, d.birth_date)]
    return sorted({v for v in values if v})


def strings(span: ReadableSpan) -> list[str]:
    """Every string a span carries: name, status, attributes, events, links, resource."""

    def of(attributes: types.Attributes) -> list[str]:
        found: list[str] = []
        for key, value in (attributes or {}).items():
            found.append(key)
            found += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        return found

    found = [span.name, span.status.description or ""]
    found += of(span.attributes) + of(span.resource.attributes)
    for event in span.events:
        found += [event.name, *of(event.attributes)]
    for link in span.links:
        found += of(link.attributes)
    return found


async def wait_for_spans(exporter: InMemorySpanExporter, name: str, count: int) -> list[ReadableSpan]:
    """The spans called `name` once `count` of them ended (a gateway's span ends just after its
    last message reaches the aggregator)."""
    for _ in range(500):
        found = named(exporter, name)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(named(exporter, name))} {name} spans of {count}")


@functional
async def test_a_session_is_one_trace_from_the_aggregator_through_every_gateway_to_the_insurers(
    spans: InMemorySpanExporter,
) -> None:
    application = load_example()
    async with start_mesh(n=10) as mesh:
        events = [r.event async for r in mesh.stub.GetQuotes(pb.GetQuotesRequest(application=application), timeout=30)]
        request_id = events[0].request_id
        finished = events[-1].session_finished
        [session] = await wait_for_spans(spans, "quote_session", 1)
        calls = await wait_for_spans(spans, "request_offer", 10)
        served = await wait_for_spans(spans, GATEWAY_CALL, 10)
        [call_span] = await wait_for_spans(spans, AGGREGATOR_CALL, 1)

    trace_id = session.context.trace_id
    assert call_span.parent is None  # the caller sent no trace context: a new trace
    assert call_span.kind is trace.SpanKind.SERVER and call_span.context.trace_id == trace_id
    assert session.parent is not None and session.parent.span_id == call_span.context.span_id
    expected_status = events_pb2.SessionStatus.Name(finished.status).removeprefix("SESSION_STATUS_").lower()
    assert attrs(session) == {
        "osago.request_id": request_id,
        "osago.insurers_asked": 10,
        "osago.insurer_ids": tuple(i.insurer_id for i in events[0].session_started.insurers),
        "osago.status": expected_status,
        "osago.quotes": finished.quotes_received,
        "osago.failed": finished.insurers_failed,
        "osago.taken_over": False,  # started here, not resumed from another instance
    }

    # One insurer call per insurer, children of the session, each with its outcome.
    assert sorted(str(attrs(c)["osago.insurer_id"]) for c in calls) == sorted(attrs(session)["osago.insurer_ids"])  # type: ignore[call-overload]
    for call in calls:
        assert call.context.trace_id == trace_id
        assert call.parent is not None and call.parent.span_id == session.context.span_id
        assert call.kind is trace.SpanKind.CLIENT
        assert attrs(call)["osago.request_id"] == request_id
    outcomes = [attrs(c)["osago.outcome"] for c in calls]
    assert outcomes.count("offer") == finished.quotes_received

    # Each gateway continues the trace from the metadata of its call, and traces its HTTP calls.
    call_by_insurer = {attrs(c)["osago.insurer_id"]: c for c in calls}
    http = named(spans, "insurer_http")
    for server in served:
        caller = call_by_insurer[attrs(server)["osago.insurer_id"]]
        assert server.context.trace_id == trace_id
        assert server.parent is not None and server.parent.is_remote
        assert server.parent.span_id == caller.context.span_id
        assert server.kind is trace.SpanKind.SERVER
        assert attrs(server)["osago.request_id"] == request_id
        assert attrs(server)["osago.outcome"] == attrs(caller)["osago.outcome"]
        attempts = [h for h in http if h.parent is not None and h.parent.span_id == server.context.span_id]
        assert attempts, f"no insurer_http span under {attrs(server)['osago.insurer_id']}"
        steps = [attrs(h)["osago.step"] for h in attempts]
        assert steps[0] == "create" and set(steps) <= {"create", "poll"}
        assert all(200 <= attrs(h)["osago.http.status_code"] < 300 for h in attempts)  # type: ignore[operator]
        assert all(h.context.trace_id == trace_id for h in attempts)
        # Each attempt's HTTP call: a CLIENT span of the aiohttp instrumentation, whose
        # `traceparent` the simulator's server span (aiohttp-server) continued.
        for attempt in attempts:
            [client] = children(spans, attempt)
            assert client.kind is trace.SpanKind.CLIENT
            assert attrs(client)["http.status_code"] == attrs(attempt)["osago.http.status_code"]
            [insurer] = children(spans, client)
            assert insurer.kind is trace.SpanKind.SERVER and insurer.name.startswith(str(attrs(client)["http.method"]))
    assert len(http) == sum(1 for h in http if h.context.trace_id == trace_id)

    # No personal data anywhere: names, licence numbers, VIN, plate, birth dates.
    secrets = personal_data(application)
    assert len(secrets) >= 5
    leaks = {
        (span.name, secret)
        for span in spans.get_finished_spans()
        for text in strings(span)
        for secret in secrets
        if secret.lower() in text.lower()
    }
    assert not leaks


@functional
async def test_a_session_continues_the_trace_of_a_caller_that_sent_one(spans: InMemorySpanExporter) -> None:
    caller_tracer = trace.get_tracer("core-app", tracer_provider=TracerProvider(shutdown_on_exit=False))
    async with start_mesh(n=2) as mesh:
        with caller_tracer.start_as_current_span("core-app") as caller:
            metadata = tracing.inject_metadata()
        call = mesh.stub.GetQuotes(pb.GetQuotesRequest(application=load_example()), timeout=30, metadata=metadata)
        events = [r.event async for r in call]
        [session] = await wait_for_spans(spans, "quote_session", 1)
        served = await wait_for_spans(spans, GATEWAY_CALL, 2)
        [call_span] = await wait_for_spans(spans, AGGREGATOR_CALL, 1)

    assert dict(metadata).keys() == {"traceparent"}
    assert session.context.trace_id == caller.get_span_context().trace_id
    assert call_span.parent is not None and call_span.parent.span_id == caller.get_span_context().span_id
    assert call_span.parent.is_remote
    assert session.parent is not None and session.parent.span_id == call_span.context.span_id
    assert attrs(session)["osago.request_id"] == events[0].request_id
    assert {s.context.trace_id for s in served} == {caller.get_span_context().trace_id}


@functional
async def test_an_unexpected_error_quotes_the_active_trace_id(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: MemoryRequestStore, record: RequestRecord) -> tuple[RequestRecord, bool]:
        raise RuntimeError("the store is gone")

    monkeypatch.setattr(MemoryRequestStore, "create", broken)
    caplog.set_level(logging.ERROR)
    caller_tracer = trace.get_tracer("core-app", tracer_provider=TracerProvider(shutdown_on_exit=False))
    with caller_tracer.start_as_current_span("core-app") as caller:
        metadata = tracing.inject_metadata()
    trace_id = trace.format_trace_id(caller.get_span_context().trace_id)
    async with start_mesh(n=1) as mesh:
        request = pb.CreateQuoteRequestRequest(application=load_example())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mesh.stub.CreateQuoteRequest(request, timeout=10, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNKNOWN
        assert caught.value.details() == f"internal error (trace {trace_id})"
        # Without a trace, still a trace id to quote (a random one).
        with pytest.raises(grpc.aio.AioRpcError) as untraced:
            await mesh.stub.CreateQuoteRequest(request, timeout=10)
        details = untraced.value.details() or ""
        assert details.startswith("internal error (trace ") and trace_id not in details
    assert f"trace {trace_id}" in caplog.text
    assert "the store is gone" not in details


def test_trace_context_travels_in_grpc_metadata(spans: InMemorySpanExporter) -> None:
    assert tracing.inject_metadata() == ()
    assert tracing.current_trace_id() == ""
    with tracing.tracer(__name__).start_as_current_span("caller") as span:
        metadata = tracing.inject_metadata()
        assert tracing.current_trace_id() == trace.format_trace_id(span.get_span_context().trace_id)
    # What the called server's interceptor reads: the W3C `traceparent` of the caller's span.
    assert dict(metadata).keys() == {"traceparent"}
    received = propagate.extract(dict(metadata))
    remote = trace.get_current_span(received).get_span_context()
    assert remote.is_remote and remote.trace_id == span.get_span_context().trace_id
    assert remote.span_id == span.get_span_context().span_id
    assert tracing.current_trace_id() == ""


async def test_http_attempts_are_spans_and_breaker_rejections_are_events(spans: InMemorySpanExporter) -> None:
    settings = GatewaySettings(
        insurer_id="alfa",
        insurer_name="Alfa",
        dialect="rest",
        base_url="http://insurer",
        breaker_window=2,
        breaker_min_calls=2,
        breaker_open_s=1000.0,
        retry_max_attempts=1,
    )
    guard = InsurerGuard(settings, FakeClock())
    create = HttpCall("POST", "/api/v1/applications", {"Idempotency-Key": "req-1:alfa"}, {})

    async def down(call: HttpCall, timeout: float) -> HttpResponse:
        raise HttpUnavailable("ClientConnectorError")

    with tracing.tracer(__name__).start_as_current_span("RequestOffer") as server:
        results = [await guard.send(down, create, 100.0, "create", lambda r: r) for _ in range(3)]
    assert [r.reason for r in results if isinstance(r, Failed)] == [
        Reason.UNAVAILABLE,
        Reason.UNAVAILABLE,
        Reason.CIRCUIT_OPEN,
    ]
    attempts = named(spans, "insurer_http")
    assert len(attempts) == 2  # the breaker refused the third before any HTTP call
    for attempt in attempts:
        assert attempt.parent is not None and attempt.parent.span_id == server.get_span_context().span_id
        assert attrs(attempt) == {
            "osago.step": "create",
            "osago.attempt": 1,
            "osago.failure": "unavailable",
            "osago.retryable": True,
        }
    [parent] = named(spans, "RequestOffer")
    assert [(e.name, dict(e.attributes or {})) for e in parent.events] == [
        ("osago.breaker_rejected", {"osago.step": "create"})
    ]


def test_tracing_is_configured_from_the_standard_otel_variables(capsys: pytest.CaptureFixture[str]) -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}
    assert tracing.exporters({}) == ()  # no endpoint: nothing exported
    assert tracing.exporters(endpoint) == ("otlp",)
    assert tracing.exporters({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317"}) == ("otlp",)
    assert tracing.exporters({**endpoint, "OTEL_TRACES_EXPORTER": "none"}) == ()
    assert tracing.exporters({**endpoint, "OTEL_SDK_DISABLED": "true"}) == ()
    assert tracing.exporters({**endpoint, "OTEL_TRACES_EXPORTER": "otlp,console"}) == ("otlp", "console")
    assert tracing.exporters({"OTEL_TRACES_EXPORTER": "console"}) == ("console",)
    with pytest.raises(SettingsError, match="OTEL_TRACES_EXPORTER"):
        tracing.exporters({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        tracing.exporters({**endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})

    # Not exporting: spans are made (their trace ids travel and reach logs) but record nothing.
    quiet = tracing.build_provider("osago-test", {})
    assert quiet.resource.attributes["service.name"] == "osago-test"
    with quiet.get_tracer(__name__).start_as_current_span("cheap") as span:
        assert span.get_span_context().is_valid and not span.is_recording()
        flags = dict(tracing.inject_metadata())["traceparent"].rsplit("-", 1)[1]
        assert int(flags, 16) & 1 == 0  # W3C "sampled" flag off
    quiet.shutdown()
    named = tracing.build_provider("osago-test", {"OTEL_SERVICE_NAME": "osago-gateway-alfa"})
    assert named.resource.attributes["service.name"] == "osago-gateway-alfa"
    named.shutdown()

    console = tracing.build_provider("osago-test", {"OTEL_TRACES_EXPORTER": "console"})
    console.get_tracer(__name__).start_span("printed", attributes={"osago.request_id": "r-1"}).end()
    console.force_flush()
    console.shutdown()
    captured = capsys.readouterr()
    assert '"name": "printed"' in captured.err and "r-1" in captured.err
    assert captured.out == ""


def test_the_test_provider_replaces_the_global_one_and_can_be_removed() -> None:
    first = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(first))
    tracing.set_tracer_provider_for_tests(provider)
    try:
        tracing.tracer(__name__).start_span("kept").end()
    finally:
        tracing.set_tracer_provider_for_tests(None)
    tracing.tracer(__name__).start_span("elsewhere").end()
    assert [s.name for s in first.get_finished_spans()] == ["kept"]
    provider.shutdown()


@functional
async def test_a_stream_the_caller_cancels_still_ends_its_server_spans_cleanly(
    spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """The gRPC instrumentation's server span holds the trace context across the servicer's
    yields: a call cancelled mid-stream must still end it (and every gateway's), in its own
    task's context, without "Failed to detach context"."""
    caplog.set_level(logging.DEBUG)
    async with start_mesh(n=3, time_scale=0.5) as mesh:
        call = mesh.stub.GetQuotes(pb.GetQuotesRequest(application=load_example()), timeout=30)
        # Once every gateway is at work on its insurer (each said so), the caller goes away.
        working: set[str] = set()
        async for response in call:
            if response.event.HasField("insurer_progress"):
                working.add(response.event.insurer_progress.insurer_id)
            if len(working) == 3:
                break
        call.cancel()
        [server] = await wait_for_spans(spans, AGGREGATOR_CALL, 1)
        # The session, orphaned, is cancelled after its grace period; the gateways' calls with it.
        [session] = await wait_for_spans(spans, "quote_session", 1)
        served = await wait_for_spans(spans, GATEWAY_CALL, 3)
    assert server.end_time is not None and server.kind is trace.SpanKind.SERVER
    assert session.context.trace_id == server.context.trace_id
    assert {s.context.trace_id for s in served} == {server.context.trace_id}
    assert all(s.end_time is not None for s in served)
    assert "Failed to detach context" not in caplog.text


def test_http_instrumentation_is_left_out_when_nothing_is_recorded() -> None:
    """Its cost (every request's attributes built even for a span that records nothing) is paid
    only where spans are recorded: an exporter configured, or a test collecting them."""
    assert not tracing.recording()  # this test process never configured an exporter
    assert tracing.http_client_trace_configs() == [] and tracing.http_server_middlewares() == []
    provider = TracerProvider(shutdown_on_exit=False)
    tracing.set_tracer_provider_for_tests(provider)
    try:
        assert tracing.recording()
        assert len(tracing.http_client_trace_configs()) == 1 and len(tracing.http_server_middlewares()) == 1
    finally:
        tracing.set_tracer_provider_for_tests(None)
        provider.shutdown()


@functional
async def test_the_server_traces_the_aggregators_calls_and_not_health_reflection_or_the_gateways(
    spans: InMemorySpanExporter,
) -> None:
    """A real grpc.aio server with the project's interceptors and raw-bytes methods of five
    services: only the calls the aggregator takes get a SERVER span."""

    async def echo(request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    methods = {
        "osago.v1.AggregatorService": True,
        "osago.v1.QuoteRequestService": True,
        "grpc.health.v1.Health": False,
        "grpc.reflection.v1alpha.ServerReflection": False,
        "osago.v1.InsurerGatewayService": False,
    }
    server = grpc.aio.server(interceptors=tracing.server_interceptors())
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(s, {"Call": grpc.unary_unary_rpc_method_handler(echo)}) for s in methods]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for service in methods:
                call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/{service}/Call")
                assert await call(b"x", timeout=10) == b"x"
    finally:
        await server.stop(None)
    traced = sorted(s.name for s in spans.get_finished_spans())
    assert traced == sorted(f"/{s}/Call" for s, kept in methods.items() if kept)
