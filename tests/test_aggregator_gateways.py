"""The aggregator's gateway client against real sockets: failing gateways are reported fast,
and once one keeps failing its breaker answers without calling it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import duration_pb2
from osago.v1 import gateway_service_pb2, gateway_service_pb2_grpc, quote_pb2

from aggregator.gateways import GrpcGateways
from aggregator.settings import GatewayEndpoint
from osago_common.breaker import BreakerConfig, BreakerState
from osago_common.clock import FakeClock
from tests.conftest import load_example

pytestmark = pytest.mark.functional
Reason = quote_pb2.FailureReason


@pytest.fixture
async def blackhole() -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP port that accepts connections and never says a word; counts the connections."""
    accepted: list[int] = []
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield port, accepted
    for writer in held:
        writer.close()
    server.close()


async def first_update(gateways: GrpcGateways, timeout_s: float) -> gateway_service_pb2.RequestOfferResponse:
    updates = [u async for u in gateways.request_offer("alfa", "r-1", load_example(), timeout_s)]
    assert len(updates) == 1
    return updates[0]


async def test_silent_gateway_opens_the_breaker_then_fails_fast_without_a_call(
    blackhole: tuple[int, list[int]],
) -> None:
    port, _ = blackhole
    gateways = GrpcGateways(
        (GatewayEndpoint("alfa", "Alfa", f"127.0.0.1:{port}"),),
        BreakerConfig(window_size=5, minimum_calls=3, open_duration_s=30.0),
    )
    try:
        for _ in range(3):
            update = await first_update(gateways, 0.3)
            assert update.failed.reason == Reason.FAILURE_REASON_DEADLINE
        assert gateways.breakers["alfa"].state == BreakerState.OPEN
        assert gateways.breakers["alfa"].rejected_total == 0
        # Called, the blackhole would hold this call for the 30 s it is allowed and it would end
        # DEADLINE; the open breaker answers UNAVAILABLE instead, without a call.
        update = await first_update(gateways, 30.0)
        assert update.failed.reason == Reason.FAILURE_REASON_UNAVAILABLE
        assert gateways.breakers["alfa"].rejected_total == 1
    finally:
        await gateways.close()


async def test_gateway_that_is_down_is_unavailable_at_once() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    gateways = GrpcGateways((GatewayEndpoint("alfa", "Alfa", f"127.0.0.1:{port}"),))
    try:
        # Refused connections are retried briefly by the service config, not for the 30 s the call
        # is allowed: that would have ended DEADLINE.
        update = await first_update(gateways, 30.0)
        assert update.failed.reason == Reason.FAILURE_REASON_UNAVAILABLE
    finally:
        await gateways.close()


class RefusingGateway(gateway_service_pb2_grpc.InsurerGatewayServiceServicer):
    """A gateway whose insurer breaker is open for 30 s; counts the calls it gets."""

    def __init__(self) -> None:
        self.calls = 0

    async def RequestOffer(
        self, request: object, context: object
    ) -> AsyncIterator[gateway_service_pb2.RequestOfferResponse]:
        self.calls += 1
        yield gateway_service_pb2.RequestOfferResponse(
            failed=gateway_service_pb2.OfferFailed(
                reason=Reason.FAILURE_REASON_CIRCUIT_OPEN, message="open", retry_after=duration_pb2.Duration(seconds=30)
            )
        )


async def test_open_insurer_breaker_is_answered_without_calling_its_gateway_until_it_may_close() -> None:
    servicer = RefusingGateway()
    server = grpc.aio.server()
    gateway_service_pb2_grpc.add_InsurerGatewayServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    clock = FakeClock()
    gateways = GrpcGateways((GatewayEndpoint("alfa", "Alfa", f"127.0.0.1:{port}"),), clock=clock)
    try:
        update = await first_update(gateways, 5.0)
        assert update.failed.reason == Reason.FAILURE_REASON_CIRCUIT_OPEN and servicer.calls == 1
        for _ in range(3):
            update = await first_update(gateways, 5.0)
            assert update.failed.reason == Reason.FAILURE_REASON_CIRCUIT_OPEN
        assert servicer.calls == 1  # answered for the gateway, without calling it
        await clock.advance(29.9)
        await first_update(gateways, 5.0)
        assert servicer.calls == 1
        await clock.advance(0.1)
        await first_update(gateways, 5.0)
        assert servicer.calls == 2
    finally:
        await gateways.close()
        await server.stop(0)
