"""The whole mesh on real localhost ports: simulator over HTTP, a gRPC gateway per insurer, the
aggregator. What a core-app developer would check with the generated stub."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import events_pb2, gateway_service_pb2, gateway_service_pb2_grpc, quote_pb2

from tests.conftest import Mesh, access, load_example, remember, start_mesh

pytestmark = pytest.mark.functional

Status = events_pb2.SessionStatus
Reason = quote_pb2.FailureReason


async def collect(
    call: grpc.aio.UnaryStreamCall[pb.GetQuotesRequest, pb.GetQuotesResponse]
    | grpc.aio.UnaryStreamCall[pb.StreamQuoteEventsRequest, pb.StreamQuoteEventsResponse],
) -> list[events_pb2.QuoteEvent]:
    events = []
    async for response in call:
        if isinstance(response, pb.GetQuotesResponse):
            remember(response.event.request_id, response.access_token)
        events.append(response.event)
    return events


def ts(event: events_pb2.QuoteEvent) -> float:
    return event.time.ToDatetime().timestamp()


async def test_session_over_ten_insurers_delivers_exactly_the_ledger_offers(mesh: Mesh) -> None:
    events = await collect(mesh.stub.GetQuotes(pb.GetQuotesRequest(application=load_example()), timeout=30))
    request_id = events[0].request_id
    assert events[0].HasField("session_started")
    assert len(events[0].session_started.insurers) == 10
    assert events[-1].HasField("session_finished")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(e.request_id == request_id for e in events)

    quotes = [e for e in events if e.HasField("quote_received")]
    ledger = await mesh.ledger(request_id)
    delivered = sorted((q.quote_received.quote.insurer_id, q.quote_received.quote.offer_id) for q in quotes)
    issued = sorted((o["insurer_id"], o["offer_id"]) for o in ledger)
    assert delivered == issued, "offers lost, duplicated or invented"
    assert len(quotes) >= 8
    by_offer = {o["offer_id"]: o for o in ledger}
    for event in quotes:
        quote = event.quote_received.quote
        assert quote.premium_kopecks == by_offer[quote.offer_id]["premium_kopecks"]
        assert quote.currency == "RUB" and quote.breakdown.kt == pytest.approx(1.8)
        # Each offer reached the stream after the insurer issued it, in the order it arrived.
        assert ts(event) >= datetime.fromisoformat(by_offer[quote.offer_id]["issued_at"]).timestamp() - 0.001
    assert [ts(e) for e in events] == sorted(ts(e) for e in events)
    # Streamed as they came, not in one batch at the end.
    assert ts(quotes[-1]) - ts(quotes[0]) > 0.05

    answered = {q.quote_received.quote.insurer_id for q in quotes} | {
        e.insurer_failed.insurer_id for e in events if e.HasField("insurer_failed")
    }
    assert answered == {i.insurer_id for i in events[0].session_started.insurers}
    finished = events[-1].session_finished
    assert finished.status == Status.SESSION_STATUS_COMPLETED
    assert finished.quotes_received == len(quotes)
    assert finished.insurers_failed == 10 - len(quotes)


async def test_stream_quote_events_after_seq_replays_exactly_the_rest(mesh: Mesh) -> None:
    events = await collect(mesh.stub.GetQuotes(pb.GetQuotesRequest(application=load_example()), timeout=30))
    request_id = events[0].request_id
    for k in (0, 1, len(events) // 2, len(events) - 1, len(events)):
        replay = await collect(
            mesh.stub.StreamQuoteEvents(
                pb.StreamQuoteEventsRequest(access_token=access(request_id), request_id=request_id, after_seq=k),
                timeout=10,
            )
        )
        assert replay == events[k:]


async def test_snapshot_holds_the_streamed_offers_and_status(mesh: Mesh) -> None:
    events = await collect(
        mesh.stub.GetQuotes(pb.GetQuotesRequest(application=load_example("kazan-two-drivers")), timeout=30)
    )
    snapshot = (
        await mesh.stub.GetQuoteRequest(
            pb.GetQuoteRequestRequest(access_token=access(events[0].request_id), request_id=events[0].request_id)
        )
    ).quote_request
    assert snapshot.status == events[-1].session_finished.status
    assert list(snapshot.quotes) == [e.quote_received.quote for e in events if e.HasField("quote_received")]
    assert snapshot.last_seq == events[-1].seq
    assert len(snapshot.insurers) == 10


async def test_create_then_stream_follows_a_running_session_and_is_idempotent(mesh: Mesh) -> None:
    app = load_example("spb-unlimited")
    created = (
        await mesh.stub.CreateQuoteRequest(pb.CreateQuoteRequestRequest(application=app, idempotency_key="core-42"))
    ).quote_request
    remember(created.request_id, created.access_token)
    assert created.status == Status.SESSION_STATUS_RUNNING and created.last_seq >= 1
    again = (
        await mesh.stub.CreateQuoteRequest(pb.CreateQuoteRequestRequest(application=app, idempotency_key="core-42"))
    ).quote_request
    assert again.request_id == created.request_id
    events = await collect(
        mesh.stub.StreamQuoteEvents(
            pb.StreamQuoteEventsRequest(access_token=access(created.request_id), request_id=created.request_id),
            timeout=30,
        )
    )
    assert events[0].HasField("session_started") and events[-1].HasField("session_finished")
    # One insurer application per insurer, despite the repeated create.
    stats = await mesh.stats()
    references = [a for a in stats["applications"] if a["reference"] == created.request_id]
    assert len(references) == len({a["insurer_id"] for a in references}) == 10

    other = load_example("kazan-two-drivers")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await mesh.stub.CreateQuoteRequest(pb.CreateQuoteRequestRequest(application=other, idempotency_key="core-42"))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "idempotency_key" in _violations(error.value)


def _violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found.update({v.field: v.description for v in bad.field_violations})
    return found


async def test_bad_vin_is_invalid_argument_naming_the_field_and_server_goes_on(mesh: Mesh) -> None:
    app = load_example()
    app.vehicle.vin = "XTA21099OY2765439"  # the letter O is not allowed
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await collect(mesh.stub.GetQuotes(pb.GetQuotesRequest(application=app), timeout=10))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = _violations(error.value)
    assert list(violations) == ["application.vehicle.vin"]
    assert "XTA21099OY2765439" not in (error.value.details() or "") + violations["application.vehicle.vin"]
    stats = await mesh.stats()
    assert sum(i["creates"] for i in stats["insurers"].values()) == 0  # nothing was sent to insurers

    events = await collect(mesh.stub.GetQuotes(pb.GetQuotesRequest(application=load_example()), timeout=30))
    assert events[-1].HasField("session_finished")


async def test_missing_application_and_unknown_request_are_clear_errors(mesh: Mesh) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await mesh.stub.CreateQuoteRequest(pb.CreateQuoteRequestRequest())
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "application" in _violations(error.value)
    # Without its token an unknown request is refused like any other: nothing says it is unknown.
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await mesh.stub.GetQuoteRequest(pb.GetQuoteRequestRequest(request_id="no-such-request"))
    assert missing.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as missing_stream:
        await collect(mesh.stub.StreamQuoteEvents(pb.StreamQuoteEventsRequest(request_id="no-such-request")))
    assert missing_stream.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_cancelling_the_client_stops_the_gateways_polling() -> None:
    # Slow insurers (seconds) so the session is surely still polling when the client leaves.
    async with start_mesh(n=4, time_scale=0.5, orphan_grace_s=0.0) as mesh:
        call = mesh.stub.GetQuotes(pb.GetQuotesRequest(application=load_example()), timeout=60)
        request_id = ""
        async for response in call:
            request_id = request_id or remember(response.event.request_id, response.access_token)
            if response.event.HasField("insurer_progress"):
                break
        call.cancel()

        async def in_flight() -> int:
            total = 0
            for port in mesh.gateway_ports.values():
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    status = await gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel).GetGatewayStatus(
                        gateway_service_pb2.GetGatewayStatusRequest()
                    )
                    total += status.in_flight
            return total

        for _ in range(200):
            if await in_flight() == 0:
                break
            await asyncio.sleep(0.02)
        # No gateway is working on the session any more, and a gateway polls its insurer only
        # while a call is in flight (that it then stops polling is shown on a fake clock in
        # test_gateway_service).
        assert await in_flight() == 0
        assert (await mesh.stats())["applications"], "the insurers were asked"
        snapshot = (
            await mesh.stub.GetQuoteRequest(
                pb.GetQuoteRequestRequest(access_token=access(request_id), request_id=request_id)
            )
        ).quote_request
        assert snapshot.status == Status.SESSION_STATUS_CANCELLED


async def test_slow_insurers_get_deadline_and_session_ends_at_its_limit() -> None:
    async with start_mesh(n=14, time_scale=0.05) as mesh:
        request = pb.GetQuotesRequest(
            application=load_example(), time_limit=duration_pb2.Duration(seconds=1, nanos=500_000_000)
        )
        events = await collect(mesh.stub.GetQuotes(request, timeout=30))
        late = {
            e.insurer_failed.insurer_id for e in events if e.insurer_failed.reason == Reason.FAILURE_REASON_DEADLINE
        }
        # The two insurers whose median is over a minute (×0.05 = several seconds) miss 1.5 s.
        assert {"zetta", "ugoria"} <= late
        assert events[-1].session_finished.status == Status.SESSION_STATUS_DEADLINE_EXCEEDED
        # The caller's limit became the session's deadline (when exactly a session ends against
        # its deadline is shown on a fake clock in test_session).
        snapshot = (
            await mesh.stub.GetQuoteRequest(
                pb.GetQuoteRequestRequest(access_token=access(events[0].request_id), request_id=events[0].request_id)
            )
        ).quote_request
        assert snapshot.deadline.ToDatetime() - snapshot.created_at.ToDatetime() == timedelta(seconds=1.5)


async def test_a_gateway_that_is_down_is_reported_unavailable_at_once() -> None:
    async with start_mesh(n=3, time_scale=0.01) as mesh:
        await mesh.gateways["ingos"].stop()
        events = await collect(mesh.stub.GetQuotes(pb.GetQuotesRequest(application=load_example()), timeout=30))
        failures = {e.insurer_failed.insurer_id: e.insurer_failed for e in events if e.HasField("insurer_failed")}
        # At once: waiting on the stopped gateway until the session's deadline would have ended
        # DEADLINE, and the session would not have COMPLETED.
        assert failures["ingos"].reason == Reason.FAILURE_REASON_UNAVAILABLE
        assert events[-1].session_finished.status == Status.SESSION_STATUS_COMPLETED
        assert {e.quote_received.quote.insurer_id for e in events if e.HasField("quote_received")} <= {"alfa", "reso"}


async def test_health_and_reflection_report_the_aggregator_service(mesh: Mesh) -> None:
    health = health_pb2_grpc.HealthStub(mesh.channel)
    for service in ("", "osago.v1.AggregatorService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(mesh.channel)
    responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    async for response in responses:
        names = {s.name for s in response.list_services_response.service}
        assert "osago.v1.AggregatorService" in names
        break
