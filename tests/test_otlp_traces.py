"""Traces as a collector receives them: the mesh as processes (`osago up`'s), each exporting over
real OTLP/gRPC (OTEL_EXPORTER_OTLP_ENDPOINT) to a small TraceService receiver built here from
opentelemetry-proto's messages. One session is one trace from the caller (core-app, with the
typed client; a browser through web_bridge's REST API) through the aggregator, every gateway
and every insurer HTTP call, each span named by its service, and no personal data anywhere."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import aiohttp
import grpc
import pytest
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import TracerProvider
from osago.v1 import application_pb2

from osago_client.client import QuoteClient
from osago_mesh.processes import MeshOptions, RunningMesh, process_mesh
from tests.test_personal_data import PERSONAL, application_json

pytestmark = pytest.mark.functional

INSURERS = 3
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SERVER = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SpanKind.SPAN_KIND_CLIENT


def text(value: common_pb2.AnyValue) -> str:
    """An attribute's value as text (arrays joined by commas)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return ",".join(text(v) for v in value.array_value.values)
    return "" if kind is None else str(getattr(value, kind))


def attributes(pairs: Iterable[common_pb2.KeyValue]) -> dict[str, str]:
    return {pair.key: text(pair.value) for pair in pairs}


@dataclass(frozen=True)
class Received:
    """One span as exported, with the service that sent it."""

    service: str
    span: trace_pb2.Span
    resource: dict[str, str]

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, str]:
        return attributes(self.span.attributes)

    def strings(self) -> list[str]:
        """Every text it carries: name, status, attributes and their keys, events, links, resource."""
        found = [self.span.name, self.span.status.message, *self.resource.keys(), *self.resource.values()]
        found += [*self.attributes.keys(), *self.attributes.values()]
        for event in self.span.events:
            found += [event.name, *attributes(event.attributes).values()]
        for link in self.span.links:
            found += attributes(link.attributes).values()
        return found


class Collector:
    """An OTLP/gRPC trace receiver: what every Export call brought."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.exports = 0

    async def export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.exports += 1
        for resource_spans in request.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(Received(resource.get("service.name", ""), span, resource))
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list[Received]:
        return [s for s in self.spans if s.trace_id == trace_id]

    async def wait_for(self, trace_id: str, name: str, count: int = 1) -> list[Received]:
        """The spans called `name` of the trace, once `count` of them arrived (batches are sent
        every 100 ms here)."""
        for _ in range(300):
            found = [s for s in self.of_trace(trace_id) if s.span.name == name]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"{name}: {len(found)} of {count} spans arrived")


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, int]]:
    received = Collector()
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(
        received.export,
        request_deserializer=trace_service_pb2.ExportTraceServiceRequest.FromString,
        response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
    )
    service, method = EXPORT.strip("/").split("/")
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, {method: handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield received, port
    finally:
        await server.stop(0)


@pytest.fixture
async def mesh(collector: tuple[Collector, int]) -> AsyncIterator[RunningMesh]:
    _, port = collector
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OSAGO_LOG_FORMAT": "json",
    }
    options = MeshOptions(
        insurers=INSURERS, time_scale=0.02, aggregator_port=0, sim_port=0, page_port=0, edge="web_bridge"
    )
    async with process_mesh(options, env=env) as running:
        yield running


def application() -> application_pb2.Application:
    parsed = application_pb2.Application()
    json_format.ParseDict(application_json(), parsed)
    return parsed


def by_id(spans: Iterable[Received]) -> dict[str, Received]:
    return {s.span_id: s for s in spans}


def no_personal_data(spans: Iterable[Received]) -> list[tuple[str, str]]:
    return [
        (s.span.name, name)
        for s in spans
        for found in s.strings()
        for name, value in PERSONAL.items()
        if value.lower() in found.lower()
    ]


async def test_a_session_is_one_trace_from_the_client_to_every_insurer_http_call(
    collector: tuple[Collector, int], mesh: RunningMesh
) -> None:
    received, _ = collector
    # core-app: its own provider, its own span; the typed client sends its trace context.
    core_app = TracerProvider(shutdown_on_exit=False)
    with core_app.get_tracer("core-app").start_as_current_span("core-app quote") as caller:
        async with QuoteClient(mesh.aggregator) as client:
            events = [e async for e in client.get_quotes(application(), fresh=True)]
    core_app.shutdown()
    assert events[-1].WhichOneof("payload") == "session_finished"
    request_id = events[0].request_id
    trace_id = f"{caller.get_span_context().trace_id:032x}"

    [session] = await received.wait_for(trace_id, "quote_session")
    asks = await received.wait_for(trace_id, "request_offer", INSURERS)
    served = await received.wait_for(trace_id, "RequestOffer", INSURERS)
    [call] = await received.wait_for(trace_id, "/osago.v1.AggregatorService/GetQuotes")
    spans = by_id(received.of_trace(trace_id))

    # client → aggregator: the aggregator's SERVER span is the child of core-app's span.
    assert call.parent_id == f"{caller.get_span_context().span_id:016x}"
    assert call.span.kind == SERVER and call.service == "osago-aggregator"
    assert call.attributes["rpc.grpc.status_code"] == "0"
    assert session.parent_id == call.span_id and session.service == "osago-aggregator"
    assert session.attributes["osago.request_id"] == request_id
    insurer_ids = session.attributes["osago.insurer_ids"].split(",")
    assert len(insurer_ids) == INSURERS

    # aggregator → gateways: one request_offer (CLIENT) per insurer, each the parent of that
    # gateway's SERVER span.
    assert sorted(a.attributes["osago.insurer_id"] for a in asks) == sorted(insurer_ids)
    assert {a.parent_id for a in asks} == {session.span_id}
    assert all(a.span.kind == CLIENT and a.service == "osago-aggregator" for a in asks)
    ask_by_insurer = {a.attributes["osago.insurer_id"]: a for a in asks}
    for server in served:
        insurer = server.attributes["osago.insurer_id"]
        assert server.service == "osago-gateway" and server.span.kind == SERVER
        assert server.parent_id == ask_by_insurer[insurer].span_id
        assert server.attributes["osago.request_id"] == request_id

    # gateway → insurer: each attempt (insurer_http) holds the HTTP CLIENT span, whose
    # `traceparent` the simulator's SERVER span continued.
    http_servers = [s for s in spans.values() if s.service == "osago-sim" and s.span.kind == SERVER]
    assert len(http_servers) >= INSURERS  # at least each insurer's create
    for insurer_span in http_servers:
        http_client = spans[insurer_span.parent_id]
        assert http_client.span.kind == CLIENT and http_client.service == "osago-gateway"
        attempt = spans[http_client.parent_id]
        assert attempt.span.name == "insurer_http" and attempt.service == "osago-gateway"
        gateway = spans[attempt.parent_id]
        assert gateway in served
        assert f"/insurers/{gateway.attributes['osago.insurer_id']}/" in insurer_span.attributes["http.target"]
    creates = {spans[spans[s.parent_id].parent_id].parent_id for s in http_servers}
    assert creates == {s.span_id for s in served}  # every gateway call reached its insurer

    # Every span the mesh sent for this session is in this one tree.
    for span in spans.values():
        chain = span
        while chain.parent_id in spans:
            chain = spans[chain.parent_id]
        assert chain is call, f"{span.span.name} ({span.service}) is not under the session's call"
    # Each service names itself, and none sends personal data.
    assert {s.service for s in spans.values()} == {"osago-aggregator", "osago-gateway", "osago-sim"}
    assert no_personal_data(received.spans) == []


async def test_a_session_started_through_web_bridge_joins_the_browsers_trace(
    collector: tuple[Collector, int], mesh: RunningMesh
) -> None:
    received, _ = collector
    assert mesh.page is not None and mesh.edge == "web_bridge"
    browser = TracerProvider(shutdown_on_exit=False)
    with browser.get_tracer("browser").start_as_current_span("submit") as page_span:
        context = page_span.get_span_context()
        traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
    browser.shutdown()
    headers = {"Content-Type": "application/json", "traceparent": traceparent}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{mesh.page.rstrip('/')}/osago/quotes", data=json.dumps(application_json()), headers=headers
        ) as response,
    ):
        created = await response.json()
        assert response.status == 201, created
    trace_id = f"{context.trace_id:032x}"

    [bridge] = await received.wait_for(trace_id, "POST /osago/quotes")
    [create] = await received.wait_for(trace_id, "/osago.v1.AggregatorService/CreateQuoteRequest")
    [session] = await received.wait_for(trace_id, "quote_session")
    served = await received.wait_for(trace_id, "RequestOffer", INSURERS)
    assert bridge.service == "osago-bridge" and bridge.span.kind == SERVER
    assert bridge.parent_id == f"{context.span_id:016x}"  # the browser's span
    assert bridge.attributes["http.status_code"] == "201"
    assert create.parent_id == bridge.span_id and create.service == "osago-aggregator"
    assert session.parent_id == create.span_id
    assert session.attributes["osago.request_id"] == created["requestId"]
    assert {s.attributes["osago.request_id"] for s in served} == {created["requestId"]}
    assert no_personal_data(received.spans) == []
    assert trace.format_trace_id(context.trace_id) == trace_id
