"""web_bridge's own grpc-web endpoint, for development without Envoy: a raw HTTP client posts
grpc-web frames (spoken by hand, tests/grpc_web.py) to a real bridge in front of a real mesh, and
reads what a browser would: streamed message frames, a trailers frame, trailers-only errors with
their status details, text mode. The wire helpers are also checked against hand-made bytes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import unquote

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import application_pb2, events_pb2

from aggregator.servicer import StreamContext
from tests.conftest import Mesh, access, load_example, remember, remembered, start_mesh
from tests.grpc_web import (
    BINARY,
    GET_QUOTES,
    TEXT,
    TRAILERS,
    b64decode_unpadded,
    decode_text_body,
    frame,
    parse_frames,
    parse_trailers,
    request_body,
)
from web_bridge import grpc_web_wire as wire
from web_bridge.service import BridgeService
from web_bridge.settings import BridgeSettings

SERVICE = "/osago.v1.AggregatorService"
HEADERS = {"content-type": BINARY, "x-grpc-web": "1"}
Status = events_pb2.SessionStatus


@dataclass
class Edge:
    mesh: Mesh
    url: str


@contextlib.asynccontextmanager
async def bridge_mesh(time_scale: float = 0.05) -> AsyncIterator[Edge]:
    async with start_mesh(time_scale=time_scale) as mesh:
        service = BridgeService(BridgeSettings(aggregator_target=mesh.target, port=0))
        await service.start()
        try:
            yield Edge(mesh, service.url)
        finally:
            await service.stop()


def bad_vin_application() -> application_pb2.Application:
    application = load_example()
    application.vehicle.vin = "XTA21099OY2765439"  # the letter O is not allowed
    return application


async def snapshot(mesh: Mesh, request_id: str) -> pb.QuoteRequest:
    reply = await mesh.stub.GetQuoteRequest(
        pb.GetQuoteRequestRequest(access_token=access(request_id), request_id=request_id), timeout=5
    )
    quote_request: pb.QuoteRequest = reply.quote_request
    return quote_request


async def read_frame(response: aiohttp.ClientResponse) -> tuple[int, bytes]:
    header = await response.content.readexactly(5)
    return header[0], await response.content.readexactly(int.from_bytes(header[1:], "big"))


@pytest.mark.functional
async def test_get_quotes_streams_each_event_as_it_happens_then_ok_trailers() -> None:
    async with bridge_mesh() as edge, aiohttp.ClientSession() as http:
        async with http.post(edge.url + GET_QUOTES, data=request_body(load_example(), 20), headers=HEADERS) as response:
            assert response.status == 200
            assert response.headers["content-type"].startswith("application/grpc-web")
            assert "grpc-status" not in response.headers  # a real stream, not trailers-only
            flag, payload = await read_frame(response)
            first = remembered(pb.GetQuotesResponse.FromString(payload))
            # Streamed as it happened: the session is still running when its first event is here.
            assert (await snapshot(edge.mesh, first.request_id)).status == Status.SESSION_STATUS_RUNNING
            frames = [(flag, payload), *parse_frames(await response.read())]
        ledger = await edge.mesh.ledger(first.request_id)

    *messages, (trailer_flag, trailer_payload) = frames
    assert [f for f, _ in messages] == [0] * len(messages) and trailer_flag == TRAILERS
    assert parse_trailers(trailer_payload)["grpc-status"] == "0"
    events = [remembered(pb.GetQuotesResponse.FromString(p)) for _, p in messages]
    assert events[0].HasField("session_started") and events[-1].HasField("session_finished")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    quotes = [e.quote_received.quote for e in events if e.HasField("quote_received")]
    assert quotes
    assert sorted(q.offer_id for q in quotes) == sorted(o["offer_id"] for o in ledger)


@pytest.mark.functional
async def test_invalid_application_is_trailers_only_invalid_argument_with_field_violations() -> None:
    async with bridge_mesh() as edge, aiohttp.ClientSession() as http:
        request = pb.GetQuotesRequest(application=bad_vin_application())
        with pytest.raises(grpc.aio.AioRpcError) as direct:
            async for _ in edge.mesh.stub.GetQuotes(request, timeout=5):
                pass
        async with http.post(
            edge.url + GET_QUOTES, data=frame(request.SerializeToString()), headers=HEADERS
        ) as response:
            assert response.status == 200
            assert response.headers["grpc-status"] == "3"
            message = unquote(response.headers["grpc-message"])
            details = response.headers["grpc-status-details-bin"]
            assert await response.read() == b""
    assert message == direct.value.details()
    status = status_pb2.Status.FromString(b64decode_unpadded(details))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    violations = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            violations += [v.field for v in bad.field_violations]
    assert violations == ["application.vehicle.vin"]


@pytest.mark.functional
async def test_text_mode_answers_base64_frames() -> None:
    async with bridge_mesh(time_scale=0.01) as edge, aiohttp.ClientSession() as http:
        headers = {**HEADERS, "content-type": TEXT, "accept": TEXT}
        body = base64.b64encode(request_body(load_example()))
        async with http.post(edge.url + GET_QUOTES, data=body, headers=headers) as response:
            assert response.status == 200
            assert response.headers["content-type"].startswith("application/grpc-web-text")
            text = (await response.read()).decode("ascii")
    frames = parse_frames(decode_text_body(text))
    events = [remembered(pb.GetQuotesResponse.FromString(payload)) for _, payload in frames[:-1]]
    assert [flag for flag, _ in frames[:-1]] == [0] * len(events)
    assert events[0].HasField("session_started") and events[-1].HasField("session_finished")
    assert frames[-1][0] == TRAILERS and parse_trailers(frames[-1][1])["grpc-status"] == "0"


@pytest.mark.functional
async def test_the_pages_calls_create_then_follow_from_a_sequence_number() -> None:
    async with bridge_mesh(time_scale=0.01) as edge, aiohttp.ClientSession() as http:
        create = pb.CreateQuoteRequestRequest(application=load_example(), idempotency_key="k-1")
        url = f"{edge.url}{SERVICE}/CreateQuoteRequest"
        async with http.post(url, data=frame(create.SerializeToString()), headers=HEADERS) as response:
            assert response.status == 200
            frames = parse_frames(await response.read())
        assert [flag for flag, _ in frames] == [0, TRAILERS]
        assert parse_trailers(frames[1][1])["grpc-status"] == "0"
        created = pb.CreateQuoteRequestResponse.FromString(frames[0][1]).quote_request
        request_id = remember(created.request_id, created.access_token)
        assert (await snapshot(edge.mesh, request_id)).request_id == request_id

        follow = pb.StreamQuoteEventsRequest(access_token=access(request_id), request_id=request_id, after_seq=2)
        url = f"{edge.url}{SERVICE}/StreamQuoteEvents"
        async with http.post(url, data=frame(follow.SerializeToString()), headers=HEADERS) as response:
            frames = parse_frames(await response.read())
        events = [pb.StreamQuoteEventsResponse.FromString(payload).event for _, payload in frames[:-1]]
        assert events[0].seq == 3 and events[-1].HasField("session_finished")
        assert parse_trailers(frames[-1][1])["grpc-status"] == "0"

        # An unknown request is refused as any request without its token is: nothing says it is unknown.
        unknown = pb.GetQuoteRequestRequest(request_id="no-such-request")
        url = f"{edge.url}{SERVICE}/GetQuoteRequest"
        async with http.post(url, data=frame(unknown.SerializeToString()), headers=HEADERS) as response:
            assert response.headers["grpc-status"] == str(grpc.StatusCode.PERMISSION_DENIED.value[0])
            assert await response.read() == b""

        check = health_pb2.HealthCheckRequest(service="osago.v1.AggregatorService")
        url = f"{edge.url}/grpc.health.v1.Health/Check"
        async with http.post(url, data=frame(check.SerializeToString()), headers=HEADERS) as response:
            frames = parse_frames(await response.read())
        assert health_pb2.HealthCheckResponse.FromString(frames[0][1]).status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.functional
async def test_grpc_timeout_is_the_calls_deadline() -> None:
    # Slow insurers: the session would run for seconds; the aggregator ends it by the caller's
    # deadline, which only grpc-timeout (300 ms) carries here (the application asks for 30 s).
    async with bridge_mesh(time_scale=0.5) as edge, aiohttp.ClientSession() as http:
        headers = {**HEADERS, "grpc-timeout": "300m"}
        async with http.post(edge.url + GET_QUOTES, data=request_body(load_example(), 30), headers=headers) as response:
            frames = parse_frames(await response.read())
        events = [remembered(pb.GetQuotesResponse.FromString(payload)) for _, payload in frames[:-1]]
        started = events[0]
        limit_s = started.session_started.deadline.ToNanoseconds() - started.time.ToNanoseconds()
        assert 0 < limit_s <= 300_000_000
        assert events[-1].session_finished.status == Status.SESSION_STATUS_DEADLINE_EXCEEDED
        assert parse_trailers(frames[-1][1])["grpc-status"] == "0"

        headers = {**HEADERS, "grpc-timeout": "soon"}
        async with http.post(edge.url + GET_QUOTES, data=request_body(load_example()), headers=headers) as response:
            assert response.status == 400
            assert "grpc-timeout" in (await response.json())["message"]


@pytest.mark.functional
async def test_a_client_that_goes_away_mid_session_cancels_the_session() -> None:
    # Slow insurers, and no grace for an orphaned session: leaving cancels it.
    async with bridge_mesh(time_scale=0.5) as edge:
        async with aiohttp.ClientSession() as http:
            response = await http.post(edge.url + GET_QUOTES, data=request_body(load_example(), 30), headers=HEADERS)
            _, payload = await read_frame(response)
            request_id = remembered(pb.GetQuotesResponse.FromString(payload)).request_id
            response.close()  # drops the connection mid-stream
        for _ in range(100):
            if (await snapshot(edge.mesh, request_id)).status != Status.SESSION_STATUS_RUNNING:
                break
            await asyncio.sleep(0.05)
        assert (await snapshot(edge.mesh, request_id)).status == Status.SESSION_STATUS_CANCELLED


@contextlib.asynccontextmanager
async def quiet_aggregator(cancelled: asyncio.Event) -> AsyncIterator[str]:
    """A stand-in aggregator on a real port whose StreamQuoteEvents sends one event and then
    nothing, until its caller cancels (which sets `cancelled`)."""

    async def follow(
        request: pb.StreamQuoteEventsRequest, context: StreamContext
    ) -> AsyncIterator[pb.StreamQuoteEventsResponse]:
        yield pb.StreamQuoteEventsResponse(event=events_pb2.QuoteEvent(request_id=request.request_id, seq=1))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    handler = grpc.method_handlers_generic_handler(
        "osago.v1.AggregatorService",
        {
            "StreamQuoteEvents": grpc.unary_stream_rpc_method_handler(
                follow,
                request_deserializer=pb.StreamQuoteEventsRequest.FromString,
                response_serializer=pb.StreamQuoteEventsResponse.SerializeToString,
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@pytest.mark.functional
async def test_a_quiet_stream_is_cancelled_when_its_client_goes_away() -> None:
    # Nothing more comes from upstream, so only noticing the closed connection can end the call.
    cancelled = asyncio.Event()
    async with quiet_aggregator(cancelled) as target:
        service = BridgeService(BridgeSettings(aggregator_target=target, port=0))
        await service.start()
        try:
            async with aiohttp.ClientSession() as http:
                body = frame(
                    pb.StreamQuoteEventsRequest(access_token=access("r-1"), request_id="r-1").SerializeToString()
                )
                response = await http.post(f"{service.url}{SERVICE}/StreamQuoteEvents", data=body, headers=HEADERS)
                _, payload = await read_frame(response)
                assert pb.StreamQuoteEventsResponse.FromString(payload).event.request_id == "r-1"
                assert not cancelled.is_set()
                response.close()  # drops the connection
            await asyncio.wait_for(cancelled.wait(), 10)
        finally:
            await service.stop()


@pytest.mark.functional
@pytest.mark.parametrize(
    ("path", "content_type", "data", "status", "error"),
    [
        (GET_QUOTES, "application/json", b"{}", 415, "unsupported media type"),
        (GET_QUOTES, "application/grpc", frame(b""), 415, "unsupported media type"),
        (GET_QUOTES, BINARY, b"\x00\x00", 400, "bad grpc-web request"),
        (GET_QUOTES, BINARY, frame(b"") + frame(b""), 400, "bad grpc-web request"),
        (GET_QUOTES, BINARY, frame(b"x", 0x01), 400, "bad grpc-web request"),
        (GET_QUOTES, TEXT, b"not base64!", 400, "bad grpc-web request"),
    ],
)
async def test_what_is_not_a_grpc_web_call_gets_a_json_error(
    path: str, content_type: str, data: bytes, status: int, error: str
) -> None:
    async with (
        bridge_mesh() as edge,
        aiohttp.ClientSession() as http,
        http.post(edge.url + path, data=data, headers={"content-type": content_type}) as response,
    ):
        assert response.status == status
        answer = await response.json()
    assert answer["error"] == error and answer["message"]


@pytest.mark.functional
async def test_an_unknown_method_is_trailers_only_unimplemented() -> None:
    async with (
        bridge_mesh() as edge,
        aiohttp.ClientSession() as http,
        http.post(f"{edge.url}{SERVICE}/NoSuchMethod", data=frame(b""), headers=HEADERS) as response,
    ):
        assert response.status == 200
        assert response.headers["grpc-status"] == str(grpc.StatusCode.UNIMPLEMENTED.value[0])
        assert await response.read() == b""


# The wire helpers, against bytes made by hand.


def test_text_bodies_decode_with_padding_mid_body() -> None:
    # "AA==" is 0x00; "AQI=" is 0x01 0x02; "AwQF" is 0x03 0x04 0x05.
    assert wire.decode_text(b"AA==AQI=\nAwQF") == bytes([0, 1, 2, 3, 4, 5])
    with pytest.raises(wire.WireError, match="base64"):
        wire.decode_text(b"AAA")


def test_the_request_message_is_the_one_frame_of_the_body() -> None:
    assert wire.request_message(b"\x00\x00\x00\x00\x02hi") == b"hi"
    for body, words in [
        (b"\x00\x00\x00", "no grpc-web message"),
        (b"\x00\x00\x00\x00\x05hi", "truncated"),
        (b"\x00\x00\x00\x00\x01hi", "more than one"),
        (b"\x80\x00\x00\x00\x00", "trailers"),
        (b"\x01\x00\x00\x00\x00", "compressed"),
    ]:
        with pytest.raises(wire.WireError, match=words):
            wire.request_message(body)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("2H", 7200.0), ("3M", 180.0), ("15S", 15.0), ("15000m", 15.0), ("250000u", 0.25), ("99999999n", 0.099999999)],
)
def test_grpc_timeout_units(value: str, seconds: float) -> None:
    assert wire.parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "10", "S", "123456789S", "1.5S", "10s"])
def test_a_malformed_grpc_timeout_is_refused(value: str) -> None:
    with pytest.raises(wire.WireError, match="grpc-timeout"):
        wire.parse_timeout(value)


def test_status_and_trailers_are_encoded_as_grpc_does() -> None:
    # Percent-encoded UTF-8 for what is not printable ASCII, and for "%" itself.
    assert wire.encode_message("100% готово") == "100%25 %D0%B3%D0%BE%D1%82%D0%BE%D0%B2%D0%BE"
    pairs = wire.status_headers(3, "bad", [("grpc-status-details-bin", b"\x08\x03"), ("x-note", "ok")])
    # b"\x08\x03" is "CAM=" in base64; -bin values go unpadded.
    assert pairs == [
        ("grpc-status", "3"),
        ("grpc-message", "bad"),
        ("grpc-status-details-bin", "CAM"),
        ("x-note", "ok"),
    ]
    assert wire.trailers_frame([("grpc-status", "0")]) == b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n"


def test_request_headers_become_call_metadata_without_the_http_ones() -> None:
    headers = [("Traceparent", "00-ab-cd-01"), ("Cookie", "c=1"), ("grpc-timeout", "1S"), ("x-trace-bin", "CAM")]
    assert wire.call_metadata(headers, frozenset({"cookie"})) == [
        ("traceparent", "00-ab-cd-01"),
        ("x-trace-bin", b"\x08\x03"),
    ]
