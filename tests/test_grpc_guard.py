"""The gRPC gate of every server (osago_common.grpc_guard) on a real aggregator: undecodable
requests, arbitrary bytes and arbitrary messages (hypothesis) get a clear answer and never
UNKNOWN or INTERNAL; streams and session creation are limited per client with retry info;
an escaped exception's text never reaches the caller."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import aggregator_service_pb2_grpc, application_pb2

from aggregator.admission import Admission, Rate, RateLimited
from osago_client.errors import from_rpc_error
from osago_common.clock import FakeClock
from osago_common.grpc_guard import Guard
from osago_mesh.local import LocalMesh
from tests.conftest import load_example, start_mesh
from tests.test_validation_fuzz import applications

METHODS = ("GetQuotes", "CreateQuoteRequest", "GetQuoteRequest", "StreamQuoteEvents")
STREAMING = frozenset({"GetQuotes", "StreamQuoteEvents"})
ALLOWED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)


async def raw_call(channel: grpc.aio.Channel, method: str, data: bytes) -> grpc.StatusCode:
    path = f"/osago.v1.AggregatorService/{method}"
    try:
        if method in STREAMING:
            stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(path)
            call = stream(data, timeout=10)
            async for _ in call:
                break
            call.cancel()
        else:
            unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)
            await unary(data, timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def serving(mesh: LocalMesh) -> bool:
    reply = await health_pb2_grpc.HealthStub(mesh.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


# --- admission (pure) ----------------------------------------------------------------------------


async def test_creation_is_limited_per_customer_and_in_total_with_the_time_to_wait() -> None:
    clock = FakeClock()
    admission = Admission(total=Rate(per_s=10.0, burst=4), per_customer=Rate(per_s=0.5, burst=2), clock=clock)
    admission.admit("alice")
    admission.admit("alice")
    with pytest.raises(RateLimited) as alice:
        admission.admit("alice")
    assert alice.value.retry_after_s == pytest.approx(2.0)  # one token per 2 s
    admission.admit("bob")
    admission.admit("carol")
    with pytest.raises(RateLimited) as everyone:  # 4 taken: the instance's burst
        admission.admit("dave")
    assert everyone.value.retry_after_s == pytest.approx(0.1)
    await clock.advance(2.0)
    admission.admit("alice")  # refilled: alice's bucket and the instance's


# --- over gRPC -----------------------------------------------------------------------------------


@pytest.fixture
async def mesh() -> AsyncIterator[LocalMesh]:
    async with start_mesh(n=2, time_scale=0.01) as running:
        yield running


@pytest.mark.functional
@pytest.mark.parametrize("method", METHODS)
async def test_bytes_that_are_not_protobuf_are_invalid_argument_naming_the_message(
    mesh: LocalMesh, method: str
) -> None:
    path = f"/osago.v1.AggregatorService/{method}"

    async def send() -> None:
        if method in STREAMING:
            stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = mesh.channel.unary_stream(path)
            async for _ in stream(b"\xff\xff\xff\xff", timeout=5):
                pass
        else:
            unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = mesh.channel.unary_unary(path)
            await unary(b"\xff\xff\xff\xff", timeout=5)

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await send()
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    failure = from_rpc_error(error.value)
    assert failure.field_violations == [
        ("request", f"is not a valid osago.v1.{method}Request message (protobuf wire format)")
    ]
    assert "Error" not in (error.value.details() or "") and "Exception" not in (error.value.details() or "")


@pytest.mark.functional
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(METHODS), data=st.binary(max_size=400))
async def test_arbitrary_bytes_on_every_method_get_a_clear_answer(mesh: LocalMesh, method: str, data: bytes) -> None:
    assert await raw_call(mesh.channel, method, data) in ALLOWED


@pytest.mark.functional
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(application=applications, key=st.text(max_size=200), method=st.sampled_from(("GetQuotes", "CreateQuoteRequest")))
async def test_arbitrary_applications_get_a_clear_answer(
    mesh: LocalMesh, application: application_pb2.Application, key: str, method: str
) -> None:
    request = (pb.GetQuotesRequest if method == "GetQuotes" else pb.CreateQuoteRequestRequest)(
        application=application, idempotency_key=key
    )
    request.time_limit.FromSeconds(1)
    assert await raw_call(mesh.channel, method, request.SerializeToString()) in ALLOWED


@pytest.mark.functional
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request_id=st.text(max_size=300), token=st.text(max_size=300), after_seq=st.integers(-(2**63), 2**63 - 1))
async def test_arbitrary_reads_get_a_clear_answer(mesh: LocalMesh, request_id: str, token: str, after_seq: int) -> None:
    get = pb.GetQuoteRequestRequest(request_id=request_id, access_token=token)
    stream = pb.StreamQuoteEventsRequest(request_id=request_id, access_token=token, after_seq=after_seq)
    assert await raw_call(mesh.channel, "GetQuoteRequest", get.SerializeToString()) in ALLOWED
    assert await raw_call(mesh.channel, "StreamQuoteEvents", stream.SerializeToString()) in ALLOWED


@pytest.mark.functional
async def test_the_server_keeps_serving_after_garbage(mesh: LocalMesh) -> None:
    for method in METHODS:
        await raw_call(mesh.channel, method, b"\x0a\xff\xff\xff\xff\x0f")
    assert await serving(mesh)
    events = [r async for r in mesh.stub.GetQuotes(pb.GetQuotesRequest(application=load_example()), timeout=10)]
    assert events[-1].event.HasField("session_finished")


@pytest.mark.functional
async def test_a_message_beyond_the_size_limit_is_resource_exhausted(mesh: LocalMesh) -> None:
    application = load_example()
    application.vehicle.make = "x" * 70_000
    code = await raw_call(
        mesh.channel, "CreateQuoteRequest", pb.CreateQuoteRequestRequest(application=application).SerializeToString()
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def retry_after_s(error: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToTimedelta().total_seconds())
    raise AssertionError("no RetryInfo")


@pytest.mark.functional
async def test_a_customer_creating_too_fast_is_turned_away_while_others_are_served() -> None:
    overrides = {"customer_create_burst": 2, "customer_create_per_min": 1.0}
    async with start_mesh(n=1, time_scale=0.01, aggregator_overrides=overrides) as mesh:
        create = pb.CreateQuoteRequestRequest(application=load_example())
        alice = (("x-osago-customer", "alice"),)
        for _ in range(2):
            await mesh.stub.CreateQuoteRequest(create, timeout=5, metadata=alice)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await mesh.stub.CreateQuoteRequest(create, timeout=5, metadata=alice)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 55 <= retry_after_s(refused.value) <= 60  # one a minute: a token in at most a minute
        await mesh.stub.CreateQuoteRequest(create, timeout=5, metadata=(("x-osago-customer", "bob"),))


@pytest.mark.functional
async def test_streams_are_limited_per_client_and_in_total() -> None:
    overrides = {"max_streams_per_client": 2, "max_streams": 3}
    async with start_mesh(n=1, time_scale=2.0, aggregator_overrides=overrides) as mesh:
        created = (
            await mesh.stub.CreateQuoteRequest(pb.CreateQuoteRequestRequest(application=load_example()))
        ).quote_request
        follow = pb.StreamQuoteEventsRequest(request_id=created.request_id, access_token=created.access_token)

        async def open_stream(
            client: str,
        ) -> grpc.aio.UnaryStreamCall[pb.StreamQuoteEventsRequest, pb.StreamQuoteEventsResponse]:
            call = mesh.stub.StreamQuoteEvents(follow, timeout=30, metadata=(("x-osago-client", client),))
            await call.read()  # open and serving
            return call

        async with contextlib.AsyncExitStack() as stack:
            for client in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
                stack.callback((await open_stream(client)).cancel)
            with pytest.raises(grpc.aio.AioRpcError) as per_client:
                await open_stream("10.0.0.2")  # the total (3) is reached first
            assert per_client.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "too many open streams" in (per_client.value.details() or "")
            assert retry_after_s(per_client.value) > 0
        # Closed streams free their places.
        again = await open_stream("10.0.0.1")
        again.cancel()


@pytest.mark.functional
async def test_an_escaped_exception_is_unknown_with_a_trace_id_and_no_internal_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(aggregator_service_pb2_grpc.AggregatorServiceServicer):
        async def GetQuoteRequest(
            self, request: pb.GetQuoteRequestRequest, context: object
        ) -> pb.GetQuoteRequestResponse:
            raise RuntimeError("secret internal detail")

    server = grpc.aio.server(interceptors=[Guard()])
    aggregator_service_pb2_grpc.add_AggregatorServiceServicer_to_server(Broken(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = aggregator_service_pb2_grpc.AggregatorServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.GetQuoteRequest(pb.GetQuoteRequestRequest(request_id="r"), timeout=5)
    finally:
        await server.stop(0)
    details = error.value.details() or ""
    assert error.value.code() == grpc.StatusCode.UNKNOWN and details.startswith("internal error (trace ")
    assert "secret" not in details and "RuntimeError" not in details
    trace = details.removeprefix("internal error (trace ").removesuffix(")")
    assert any(trace in r.getMessage() and r.exc_info for r in caplog.records)
