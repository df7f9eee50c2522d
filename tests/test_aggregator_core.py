"""The aggregator's use cases on a fake clock with scripted gateways: how long a finished session
stays readable (retention), and what happens to a session whose GetQuotes caller went away
(the orphan grace period). The same over real gRPC at the end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import aggregator_service_pb2_grpc, events_pb2, gateway_service_pb2, gateway_service_pb2_grpc, quote_pb2

from aggregator.bus import MemoryEventBus
from aggregator.cache import MemoryResultCache
from aggregator.core import Aggregator, NotFound
from aggregator.service import AggregatorService
from aggregator.settings import AggregatorSettings, GatewayEndpoint
from aggregator.store import MemoryRequestStore
from osago_common.clock import SYSTEM_CLOCK, Clock, FakeClock
from tests.conftest import access, load_example, remember
from tests.test_session import Script, ScriptedGateways, accepted, offer

Status = events_pb2.SessionStatus
Reason = quote_pb2.FailureReason

GRACE_S = 5.0
RETENTION_S = 30.0


@contextlib.asynccontextmanager
async def aggregator(
    clock: FakeClock, script: Script, session_limit_s: float = 60.0
) -> AsyncIterator[tuple[Aggregator, ScriptedGateways]]:
    """An aggregator asking one scripted insurer "a"; every request id is "r1"."""
    settings = AggregatorSettings(
        gateways=(GatewayEndpoint("a", "A", "unused:1"),),
        session_limit_s=session_limit_s,
        orphan_grace_s=GRACE_S,
        retention_s=RETENTION_S,
    )
    gateways = ScriptedGateways(clock, {"a": script})
    core = Aggregator(
        settings,
        gateways,
        MemoryRequestStore(),
        MemoryEventBus(clock),
        MemoryResultCache(clock),
        clock,
        new_id=lambda: "r1",
    )
    try:
        yield core, gateways
    finally:
        await core.close()


async def start(core: Aggregator) -> str:
    record, created = await core.create(load_example(), "", None)
    assert created
    return record.request_id


async def status(core: Aggregator, request_id: str) -> int:
    return int((await core.snapshot(request_id)).status)


async def watch(
    core: Aggregator, request_id: str
) -> tuple[events_pb2.QuoteEvent, asyncio.Task[list[events_pb2.QuoteEvent]]]:
    """Follows the session as StreamQuoteEvents does: its first event once the stream is open (so
    the session counts it as watched), and a task collecting the rest until the end."""
    stream = core.events(request_id, 0)
    first = await anext(stream)

    async def rest() -> list[events_pb2.QuoteEvent]:
        return [event async for event in stream]

    return first, asyncio.create_task(rest())


async def caller_goes_away(core: Aggregator, request_id: str) -> None:
    """A GetQuotes caller that read the first event, then left (what the servicer then does)."""
    stream = core.events(request_id, 0)
    await anext(stream)
    await stream.aclose()
    core.release(request_id)


def failures(events: list[events_pb2.QuoteEvent]) -> list[tuple[str, int]]:
    return [(e.insurer_failed.insurer_id, e.insurer_failed.reason) for e in events if e.HasField("insurer_failed")]


# --- retention --------------------------------------------------------------------------------


async def test_a_finished_session_is_readable_until_retention_passes_then_gone(clock: FakeClock) -> None:
    async with aggregator(clock, [(1.0, offer(700_000))]) as (core, _):
        request_id = await start(core)
        await clock.advance(1.0)  # the offer ends the session at t = 1
        assert await status(core, request_id) == Status.SESSION_STATUS_COMPLETED
        replay = [e async for e in core.events(request_id, 0)]
        assert [e.WhichOneof("payload") for e in replay] == ["session_started", "quote_received", "session_finished"]

        await clock.advance(RETENTION_S - 0.1)  # t = 30.9: still within retention
        snapshot = await core.snapshot(request_id)
        assert [q.premium_kopecks for q in snapshot.quotes] == [700_000]
        assert [e async for e in core.events(request_id, 1)] == replay[1:]

        await clock.advance(0.2)  # t = 31.1: retention passed
        with pytest.raises(NotFound, match="r1"):
            await core.snapshot(request_id)
        with pytest.raises(NotFound, match="r1"):
            await anext(core.events(request_id, 0))


async def test_retention_counts_from_the_end_of_a_session_not_its_start(clock: FakeClock) -> None:
    # The insurer never answers: the session runs to its 60 s limit, twice the retention.
    async with aggregator(clock, [(0.1, accepted())]) as (core, _):
        request_id = await start(core)
        await clock.advance(59.9)
        assert await status(core, request_id) == Status.SESSION_STATUS_RUNNING  # never swept while running
        await clock.advance(0.1)
        assert await status(core, request_id) == Status.SESSION_STATUS_DEADLINE_EXCEEDED
        await clock.advance(RETENTION_S - 0.1)
        assert await status(core, request_id) == Status.SESSION_STATUS_DEADLINE_EXCEEDED
        await clock.advance(0.2)
        with pytest.raises(NotFound, match="r1"):
            await core.snapshot(request_id)


# --- a GetQuotes caller that goes away ----------------------------------------------------------


async def test_an_orphaned_session_picked_up_within_the_grace_runs_to_its_end(clock: FakeClock) -> None:
    async with aggregator(clock, [(0.1, accepted()), (10.0, offer(650_000))]) as (core, gateways):
        request_id = await start(core)
        await clock.advance(1.0)
        await caller_goes_away(core, request_id)

        await clock.advance(GRACE_S - 1.0)  # 4 s into the grace a StreamQuoteEvents picks it up
        first, rest = await watch(core, request_id)
        assert first.HasField("session_started")
        await clock.advance(2.0)  # the grace is over: the session is watched, so it goes on
        assert await status(core, request_id) == Status.SESSION_STATUS_RUNNING
        assert gateways.cancelled == set()

        await clock.advance(10.0)  # the insurer answers at t = 10.1
        events = await rest
        finished = events[-1].session_finished
        assert (finished.status, finished.quotes_received) == (Status.SESSION_STATUS_COMPLETED, 1)
        assert [e.quote_received.quote.premium_kopecks for e in events if e.HasField("quote_received")] == [650_000]
        assert failures(events) == [] and gateways.cancelled == set()


async def test_an_orphaned_session_nobody_picks_up_is_cancelled_when_the_grace_ends(clock: FakeClock) -> None:
    async with aggregator(clock, [(0.1, accepted()), (10.0, offer(650_000))]) as (core, gateways):
        request_id = await start(core)
        await clock.advance(1.0)
        await caller_goes_away(core, request_id)

        await clock.advance(GRACE_S - 0.1)
        assert await status(core, request_id) == Status.SESSION_STATUS_RUNNING
        assert gateways.cancelled == set()
        await clock.advance(0.1)
        snapshot = await core.snapshot(request_id)
        assert snapshot.status == Status.SESSION_STATUS_CANCELLED
        assert [(f.insurer_id, f.reason) for f in snapshot.failures] == [("a", Reason.FAILURE_REASON_CANCELLED)]
        assert gateways.cancelled == {"a"}  # the gateway call was stopped too
        # The cancelled session is readable for the retention period like any other.
        events = [e async for e in core.events(request_id, 0)]
        assert events[-1].session_finished.status == Status.SESSION_STATUS_CANCELLED


async def test_a_session_whose_caller_stays_to_the_end_is_not_released(clock: FakeClock) -> None:
    async with aggregator(clock, [(0.1, accepted()), (10.0, offer(650_000))]) as (core, gateways):
        request_id = await start(core)
        _, rest = await watch(core, request_id)
        await clock.advance(10.1)
        events = await rest
        core.release(request_id)  # a caller leaving after the end changes nothing
        await clock.advance(GRACE_S + 1.0)
        assert events[-1].session_finished.status == Status.SESSION_STATUS_COMPLETED
        assert await status(core, request_id) == Status.SESSION_STATUS_COMPLETED
        assert gateways.cancelled == set()


# --- the same over real gRPC: the servicer releases the session when its caller leaves ---------


class HeldGateway(gateway_service_pb2_grpc.InsurerGatewayServiceServicer):
    """A gateway that accepts, then offers only once the test lets it; notes a cancelled call."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def RequestOffer(
        self, request: object, context: object
    ) -> AsyncIterator[gateway_service_pb2.RequestOfferResponse]:
        yield gateway_service_pb2.RequestOfferResponse(
            accepted=gateway_service_pb2.OfferAccepted(insurer_application_id="app-1")
        )
        try:
            await self.answer.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        yield gateway_service_pb2.RequestOfferResponse(
            offer=quote_pb2.Quote(offer_id="offer-1", premium_kopecks=650_000, currency="RUB")
        )


@contextlib.asynccontextmanager
async def held_mesh(
    clock: Clock = SYSTEM_CLOCK, **settings: Any
) -> AsyncIterator[tuple[AggregatorService, aggregator_service_pb2_grpc.AggregatorServiceStub, HeldGateway]]:
    """The aggregator service (`settings` on top of a local bind) in front of one held gateway,
    insurer "alfa"; yields the service, a stub to it and the gateway."""
    gateway = HeldGateway()
    server = grpc.aio.server()
    gateway_service_pb2_grpc.add_InsurerGatewayServiceServicer_to_server(gateway, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    service = AggregatorService(
        AggregatorSettings(
            bind="127.0.0.1:0", gateways=(GatewayEndpoint("alfa", "Alfa", f"127.0.0.1:{port}"),), **settings
        ),
        clock,
    )
    try:
        aggregator_port = await service.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{aggregator_port}") as channel:
            yield service, aggregator_service_pb2_grpc.AggregatorServiceStub(channel), gateway
    finally:
        gateway.answer.set()
        await service.stop()
        await server.stop(0)


@contextlib.asynccontextmanager
async def served(
    clock: FakeClock,
) -> AsyncIterator[tuple[aggregator_service_pb2_grpc.AggregatorServiceStub, HeldGateway]]:
    """The aggregator service on the fake clock, in front of one held gateway; yields its stub."""
    async with held_mesh(clock, orphan_grace_s=GRACE_S) as (_, stub, gateway):
        yield stub, gateway


async def leave_after_accepted(stub: aggregator_service_pb2_grpc.AggregatorServiceStub, clock: FakeClock) -> str:
    """Starts GetQuotes, reads until the insurer accepted, cancels the call, and waits until the
    aggregator noticed (its orphan timer is then waiting on the clock). Returns the request id."""
    call = stub.GetQuotes(pb.GetQuotesRequest(application=load_example()), timeout=30)
    request_id = ""
    async for response in call:
        request_id = request_id or remember(response.event.request_id, response.access_token)
        if response.event.HasField("insurer_progress"):
            break
    waiting = clock.sleepers  # the session's deadline and the retention sweeper
    call.cancel()
    for _ in range(1000):
        if clock.sleepers > waiting:
            return request_id
        await asyncio.sleep(0.01)
    raise AssertionError("the aggregator never noticed the caller leaving")


async def snapshot_status(stub: aggregator_service_pb2_grpc.AggregatorServiceStub, request_id: str) -> int:
    reply = await stub.GetQuoteRequest(
        pb.GetQuoteRequestRequest(access_token=access(request_id), request_id=request_id), timeout=5
    )
    return int(reply.quote_request.status)


@pytest.mark.functional
async def test_over_grpc_a_stream_picking_up_an_orphan_within_the_grace_sees_it_to_its_end(clock: FakeClock) -> None:
    async with served(clock) as (stub, gateway):
        request_id = await leave_after_accepted(stub, clock)
        await clock.advance(GRACE_S - 1.0)
        stream = stub.StreamQuoteEvents(
            pb.StreamQuoteEventsRequest(access_token=access(request_id), request_id=request_id), timeout=30
        )
        replay = stream.__aiter__()
        assert (await anext(replay)).event.HasField("session_started")  # the stream is open: watched
        await clock.advance(2.0)  # past the grace
        assert await snapshot_status(stub, request_id) == Status.SESSION_STATUS_RUNNING
        gateway.answer.set()
        events = [response.event async for response in replay]
        assert events[-1].session_finished.status == Status.SESSION_STATUS_COMPLETED
        assert [e.quote_received.quote.offer_id for e in events if e.HasField("quote_received")] == ["offer-1"]
        assert not gateway.cancelled.is_set()


@pytest.mark.functional
async def test_over_grpc_an_orphan_nobody_picks_up_is_cancelled_after_the_grace(clock: FakeClock) -> None:
    async with served(clock) as (stub, gateway):
        request_id = await leave_after_accepted(stub, clock)
        await clock.advance(GRACE_S - 0.1)
        assert await snapshot_status(stub, request_id) == Status.SESSION_STATUS_RUNNING
        await clock.advance(0.1)
        assert await snapshot_status(stub, request_id) == Status.SESSION_STATUS_CANCELLED
        await asyncio.wait_for(gateway.cancelled.wait(), 10)  # the gateway's call was cancelled too


async def test_the_purge_job_erases_the_application_once_its_retention_passed(clock: FakeClock) -> None:
    store = MemoryRequestStore()
    settings = AggregatorSettings(
        gateways=(GatewayEndpoint("a", "A", "unused:1"),),
        retention_s=10 * 86400.0,  # the whole request stays readable; only its personal data goes
        personal_data_retention_s=3600.0,
        purge_interval_s=600.0,
    )
    script: Script = [(1.0, offer(700_000))]
    core = Aggregator(
        settings,
        ScriptedGateways(clock, {"a": script}),
        store,
        MemoryEventBus(clock),
        MemoryResultCache(clock),
        clock,
        new_id=lambda: "r1",
    )
    core.start()  # the lease upkeep and the purge job
    try:
        request_id = await start(core)
        await clock.advance(1.0)
        assert store.application(request_id)
        await clock.advance(3600.0)  # t = 3601: the purges at 0, 600, ..., 3600 found it not yet past the hour
        assert store.application(request_id)
        await clock.advance(600.0)  # t = 4201: the purge at 4200 found it past its retention
        assert store.application(request_id) == b""
        snapshot = await core.snapshot(request_id)  # the offer stays
        assert [q.premium_kopecks for q in snapshot.quotes] == [700_000]
    finally:
        await core.close()
