"""Several aggregator instances and gateway replicas, every service its own process, on a private
Postgres and Redis: a session survives the instance running it being killed (SIGKILL), paused
(SIGSTOP: fenced off) or stopped (SIGTERM: handed over), a gateway replica dying mid-call, Redis
being flushed, and a client moving to another instance; nothing is lost, nothing repeated, no
insurer application made twice, and every session ends by its original deadline."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator
from datetime import UTC, timedelta
from signal import SIGCONT
from typing import Any

import aiohttp
import grpc
import pytest
import redis.asyncio
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import aggregator_service_pb2_grpc, events_pb2, gateway_service_pb2, gateway_service_pb2_grpc, quote_pb2

from osago_client import QuoteClient
from osago_mesh.processes import MeshOptions, RunningMesh, process_mesh
from tests.conftest import access, load_example, remember, remembered
from tests.metrics_kit import scrape

pytestmark = pytest.mark.functional

LIMIT_S = 10.0
# An instance's lease lasts 1.5 s unrenewed; instances look for orphans every 0.2 s.
AGGREGATOR_ENV = {"OSAGO_LEASE_TTL_S": "1.5", "OSAGO_TAKEOVER_SCAN_S": "0.2", "OSAGO_SESSION_LIMIT_S": str(LIMIT_S)}
# The session ends at its deadline; its last event is stamped a moment later (a scheduler's tick).
END_TOLERANCE = timedelta(seconds=0.5)


@contextlib.asynccontextmanager
async def mesh(insurers: int = 4, replicas: int = 1, time_scale: float = 0.5) -> AsyncIterator[RunningMesh]:
    options = MeshOptions(
        insurers=insurers,
        time_scale=time_scale,
        aggregator_port=0,
        sim_port=0,
        page_port=0,
        seed=3,
        backend="shared",
        aggregators=2,
        gateway_replicas=replicas,
    )
    async with process_mesh(options, web=False, env=AGGREGATOR_ENV) as running:
        yield running


@contextlib.asynccontextmanager
async def stub(target: str) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield aggregator_service_pb2_grpc.AggregatorServiceStub(channel)


def request(**kw: Any) -> pb.GetQuotesRequest:
    return pb.GetQuotesRequest(application=load_example(), fresh=True, **kw)


async def sim(running: RunningMesh, path: str, **params: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(f"{running.sim}{path}", params=params) as response:
        assert response.status == 200
        return await response.json()


async def follow(target: str, request_id: str, after_seq: int) -> list[events_pb2.QuoteEvent]:
    async with stub(target) as aggregator:
        call = aggregator.StreamQuoteEvents(
            pb.StreamQuoteEventsRequest(access_token=access(request_id), request_id=request_id, after_seq=after_seq),
            timeout=30,
        )
        return [response.event async for response in call]


async def assert_exactly_the_ledger(running: RunningMesh, events: list[events_pb2.QuoteEvent]) -> None:
    """Events numbered 1..n once each, ending with session_finished by the deadline; the offers
    and declines are exactly the simulator's ledger; one insurer application per insurer."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].HasField("session_started") and events[-1].HasField("session_finished")
    request_id = events[0].request_id
    deadline = events[0].session_started.deadline.ToDatetime(tzinfo=UTC)
    assert events[-1].time.ToDatetime(tzinfo=UTC) <= deadline + END_TOLERANCE
    ledger = await sim(running, "/_sim/ledger", reference=request_id)
    offered = sorted(
        (e.quote_received.quote.insurer_id, e.quote_received.quote.offer_id)
        for e in events
        if e.HasField("quote_received")
    )
    assert offered == sorted((o["insurer_id"], o["offer_id"]) for o in ledger["offers"])
    declined = sorted(e.insurer_failed.insurer_id for e in events if e.insurer_failed.reason == 4)  # DECLINED
    assert declined == sorted(d["insurer_id"] for d in ledger["declines"])
    answered = [
        e.quote_received.quote.insurer_id or e.insurer_failed.insurer_id
        for e in events
        if e.HasField("quote_received") or e.HasField("insurer_failed")
    ]
    assert sorted(answered) == sorted(i.insurer_id for i in events[0].session_started.insurers)  # each once
    applications = (await sim(running, "/_sim/stats", reference=request_id))["applications"]
    per_insurer = [a["insurer_id"] for a in applications]
    assert len(per_insurer) == len(set(per_insurer)), applications  # never created twice


async def read_until(call: Any, count: int) -> list[events_pb2.QuoteEvent]:
    events: list[events_pb2.QuoteEvent] = []
    async for response in call:
        events.append(remembered(response) if isinstance(response, pb.GetQuotesResponse) else response.event)
        if len(events) >= count:
            break
    return events


async def test_a_killed_instance_s_session_is_taken_over_and_followed_elsewhere_without_loss() -> None:
    async with mesh() as running:
        a, b = running.aggregators
        async with stub(a) as on_a:
            seen = await read_until(on_a.GetQuotes(request(), timeout=30), 3)
            running.children["aggregator 1"].process.kill()  # SIGKILL: no goodbye
        rest = await follow(b, seen[0].request_id, seen[-1].seq)
        await assert_exactly_the_ledger(running, seen + rest)
        # The session was resumed: insurers that had not answered were asked again.
        assert any(e.HasField("quote_received") or e.HasField("insurer_failed") for e in rest)
        # The other instance's metrics say so: one session taken over, and finished there.
        assert set(running.metrics) == set(running.children)
        async with aiohttp.ClientSession() as http:
            other = await scrape(http, running.metrics["aggregator 2"])
        assert other.value("osago_sessions_taken_over_total") == 1
        assert other.value("osago_sessions_started_total") == 0
        assert other.total("osago_sessions_finished_total") == 1
        assert other.value("osago_sessions_running") == 0


async def test_moving_to_the_other_instance_mid_stream_continues_exactly() -> None:
    async with mesh() as running:
        a, b = running.aggregators
        async with stub(a) as on_a:
            call = on_a.CreateQuoteRequest(
                pb.CreateQuoteRequestRequest(application=load_example(), idempotency_key="move-1", fresh=True)
            )
            created = (await call).quote_request
            request_id = remember(created.request_id, created.access_token)
            first = await read_until(
                on_a.StreamQuoteEvents(
                    pb.StreamQuoteEventsRequest(access_token=access(request_id), request_id=request_id), timeout=30
                ),
                2,
            )
        rest = await follow(b, request_id, first[-1].seq)  # instance b does not run it: it reads Redis
        await assert_exactly_the_ledger(running, first + rest)


async def test_the_same_idempotency_key_gives_the_same_request_on_any_instance() -> None:
    async with mesh(insurers=2) as running:
        a, b = running.aggregators
        create = pb.CreateQuoteRequestRequest(application=load_example(), idempotency_key="core-77", fresh=True)
        async with stub(a) as on_a, stub(b) as on_b:
            first = (await on_a.CreateQuoteRequest(create)).quote_request
            again = (await on_b.CreateQuoteRequest(create)).quote_request
        assert again.request_id == first.request_id
        remember(first.request_id, first.access_token)
        events = await follow(b, first.request_id, 0)
        await assert_exactly_the_ledger(running, events)


async def test_an_identical_application_is_answered_from_the_cache_on_another_instance() -> None:
    async with mesh(insurers=3) as running:
        a, b = running.aggregators
        async with stub(a) as on_a, stub(b) as on_b:
            first = [r.event async for r in on_a.GetQuotes(request(), timeout=30)]
            again = [r.event async for r in on_b.GetQuotes(pb.GetQuotesRequest(application=load_example()), timeout=30)]
        offered = {e.quote_received.quote.offer_id for e in first if e.HasField("quote_received")}
        cached = [e.quote_received.quote for e in again if e.HasField("quote_received")]
        assert offered and {q.offer_id for q in cached if q.from_cache} == offered
        # Only insurers without a cached offer were asked: the simulator saw no new application for the others.
        asked_again = {
            a["insurer_id"] for a in (await sim(running, "/_sim/stats", reference=again[0].request_id))["applications"]
        }
        assert not asked_again & {q.insurer_id for q in cached if q.from_cache}


async def test_redis_flushed_mid_session_streams_are_rebuilt_from_postgres() -> None:
    async with mesh() as running:
        a, b = running.aggregators
        async with stub(a) as on_a:
            call = on_a.GetQuotes(request(), timeout=30)
            seen = await read_until(call, 2)
            assert running.redis_url is not None
            client = redis.asyncio.Redis.from_url(running.redis_url)
            await client.flushall()
            await client.aclose()
            # A reader elsewhere, from the start: what Redis lost comes from Postgres.
            elsewhere = await follow(b, seen[0].request_id, 0)
            rest = [r.event async for r in call]
        await assert_exactly_the_ledger(running, elsewhere)
        assert seen + rest == elsewhere


async def test_a_paused_owner_is_fenced_off_and_the_session_goes_on_elsewhere() -> None:
    async with mesh() as running:
        a, b = running.aggregators
        owner = running.children["aggregator 1"].process
        async with stub(a) as on_a:
            call = on_a.GetQuotes(request(), timeout=30)
            seen = await read_until(call, 2)
            owner.send_signal(signal.SIGSTOP)  # paused: its lease lapses and b takes the session over
            try:
                taken = await follow(b, seen[0].request_id, 0)  # only b can have finished it
            finally:
                owner.send_signal(SIGCONT)
            call.cancel()
        await assert_exactly_the_ledger(running, taken)
        # Awake again, the old owner finds its session taken: what it tried to write was refused,
        # and it serves the record as it is.
        assert await follow(a, seen[0].request_id, 0) == taken


async def test_sigterm_hands_running_sessions_over_and_the_client_completes_elsewhere() -> None:
    async with mesh() as running:
        a, _ = running.aggregators
        async with grpc.aio.insecure_channel(a) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await anext(aiter(watch))).status == health_pb2.HealthCheckResponse.SERVING
            events: list[events_pb2.QuoteEvent] = []
            async with QuoteClient(running.target, resume_backoff_s=0.05) as client:
                async for event in client.get_quotes(load_example(), fresh=True):
                    events.append(event)
                    if len(events) == 2:
                        running.children["aggregator 1"].process.send_signal(signal.SIGTERM)
                        # The stopping instance says NOT_SERVING before it goes.
                        assert await next_status(watch) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await running.children["aggregator 1"].process.wait() == 0
        await assert_exactly_the_ledger(running, events)
        finished = events[-1].session_finished
        assert finished.status != events_pb2.SessionStatus.SESSION_STATUS_CANCELLED  # a deploy cancels nothing


async def next_status(watch: Any) -> int:
    async for reply in watch:
        return int(reply.status)
    raise AssertionError("the health watch ended without a status")


async def holder_of(running: RunningMesh, insurer_id: str) -> int:
    """Which replica of the insurer's gateway has a call in flight (its index)."""
    for index, address in enumerate(running.replicas[insurer_id]):
        async with grpc.aio.insecure_channel(address) as channel:
            status = await gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel).GetGatewayStatus(
                gateway_service_pb2.GetGatewayStatusRequest(), timeout=5
            )
            if status.in_flight:
                return index
    raise AssertionError(f"no replica of {insurer_id} has a call in flight")


async def test_a_gateway_replica_killed_mid_call_still_delivers_the_offer_from_one_application() -> None:
    # maks is slow (a 25 s median × 0.2): its call is still in flight when its replica dies.
    async with mesh(insurers=10, replicas=2, time_scale=0.2) as running:
        a, _ = running.aggregators
        async with stub(a) as on_a:
            limit = duration_pb2.Duration(seconds=int(LIMIT_S))
            call = on_a.GetQuotes(request(time_limit=limit), timeout=30)
            seen: list[events_pb2.QuoteEvent] = []
            async for response in call:  # until maks accepted the application: its call is under way
                seen.append(response.event)
                if response.event.insurer_progress.insurer_id == "maks":
                    break
            index = await holder_of(running, "maks")
            running.children[f"gateway maks {index + 1}"].process.kill()
            rest = [r.event async for r in call]
        events = seen + rest
        await assert_exactly_the_ledger(running, events)
        maks = [
            e for e in events if e.quote_received.quote.insurer_id == "maks" or e.insurer_failed.insurer_id == "maks"
        ]
        # Its one answer, as the insurer gave it (the ledger's: an offer, or 3 % of the time a
        # decline by underwriting), delivered once.
        assert len(maks) == 1, maks
        assert maks[0].HasField("quote_received") or (
            maks[0].insurer_failed.reason == quote_pb2.FAILURE_REASON_DECLINED
        ), maks
