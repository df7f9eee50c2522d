"""QuoteClient against a real grpc.aio server on a localhost port, serving a scripted
AggregatorService: ordered delivery, resume after dropped streams, retries, rich errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from osago.v1 import (
    aggregator_service_pb2,
    aggregator_service_pb2_grpc,
    application_pb2,
    events_pb2,
    quote_pb2,
)

from aggregator.servicer import CreateContext, GetContext, GetQuotesContext, StreamContext
from osago_client import QuoteClient, QuoteError
from osago_client.channel import CHANNEL_OPTIONS
from osago_client.resume import EventCursor, backoff_delay
from osago_common.breaker import BreakerConfig
from osago_common.clock import FakeClock
from osago_common.grpc_server import ServiceServer

pytestmark = pytest.mark.functional

REQUEST_ID = "req-1"
SERVICE = "osago.v1.AggregatorService"


def session_log(request_id: str = REQUEST_ID) -> list[events_pb2.QuoteEvent]:
    """A whole session: started, progress, two offers, a decline, finished (seq 1..6)."""
    events = [
        events_pb2.QuoteEvent(
            session_started=events_pb2.SessionStarted(
                insurers=[
                    quote_pb2.InsurerRef(insurer_id="alfa", insurer_name="AlfaStrakhovanie"),
                    quote_pb2.InsurerRef(insurer_id="ingos", insurer_name="Ingosstrakh"),
                    quote_pb2.InsurerRef(insurer_id="vsk", insurer_name="VSK"),
                ]
            )
        ),
        events_pb2.QuoteEvent(
            insurer_progress=events_pb2.InsurerProgress(
                insurer_id="alfa",
                insurer_name="AlfaStrakhovanie",
                state=events_pb2.INSURER_PROGRESS_STATE_ACCEPTED,
            )
        ),
        events_pb2.QuoteEvent(
            quote_received=events_pb2.QuoteReceived(
                quote=quote_pb2.Quote(
                    insurer_id="alfa",
                    insurer_name="AlfaStrakhovanie",
                    premium_kopecks=1_234_567,
                    currency="RUB",
                )
            )
        ),
        events_pb2.QuoteEvent(
            quote_received=events_pb2.QuoteReceived(
                quote=quote_pb2.Quote(insurer_id="vsk", insurer_name="VSK", premium_kopecks=1_100_000, currency="RUB")
            )
        ),
        events_pb2.QuoteEvent(
            insurer_failed=events_pb2.InsurerFailed(
                insurer_id="ingos",
                insurer_name="Ingosstrakh",
                reason=quote_pb2.FAILURE_REASON_DECLINED,
                message="declined by underwriting",
            )
        ),
        events_pb2.QuoteEvent(
            session_finished=events_pb2.SessionFinished(
                status=events_pb2.SESSION_STATUS_COMPLETED,
                insurers_asked=3,
                quotes_received=2,
                insurers_failed=1,
                message="2 offers",
            )
        ),
    ]
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    events[0].session_started.deadline.FromDatetime(deadline)
    for seq, event in enumerate(events, 1):
        event.request_id, event.seq = request_id, seq
    return events


def application() -> application_pb2.Application:
    return application_pb2.Application(
        vehicle=application_pb2.Vehicle(vin="XTA21700080000001", power_hp=106),
        unlimited_drivers=True,
    )


def bad_request_status(message: str, violations: list[tuple[str, str]]) -> grpc.Status:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations
            ]
        )
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message, details=[detail])
    converted: grpc.Status = rpc_status.to_status(status)  # grpcio-status is untyped
    return converted


@dataclass
class Break:
    """How one stream of the script breaks: after `after` events, with `code` (None: the stream
    just ends, OK, without session_finished)."""

    after: int
    code: grpc.StatusCode | None = grpc.StatusCode.UNAVAILABLE


@dataclass
class ScriptedAggregator(aggregator_service_pb2_grpc.AggregatorServiceServicer):
    """Plays `log`. Each stream takes the next entry of `breaks` (none left: plays to the end)."""

    log: list[events_pb2.QuoteEvent] = field(default_factory=session_log)
    breaks: list[Break] = field(default_factory=list)
    # StreamQuoteEvents also resends this many events before after_seq (a sloppy replay).
    overlap: int = 0
    # CreateQuoteRequest answers UNAVAILABLE this many times before it succeeds.
    create_failures: int = 0
    # Every call is rejected with this status.
    reject: grpc.Status | None = None
    # After the last event, wait for this before ending the stream (None: end at once).
    hold: asyncio.Event | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)  # (method, its request)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def GetQuotes(
        self, request: aggregator_service_pb2.GetQuotesRequest, context: GetQuotesContext
    ) -> AsyncIterator[aggregator_service_pb2.GetQuotesResponse]:
        self.calls.append(("GetQuotes", request))
        async for event in self._play(context, 0):
            yield aggregator_service_pb2.GetQuotesResponse(event=event)

    async def StreamQuoteEvents(
        self, request: aggregator_service_pb2.StreamQuoteEventsRequest, context: StreamContext
    ) -> AsyncIterator[aggregator_service_pb2.StreamQuoteEventsResponse]:
        self.calls.append(("StreamQuoteEvents", request))
        after = max(0, request.after_seq - self.overlap)
        async for event in self._play(context, after):
            yield aggregator_service_pb2.StreamQuoteEventsResponse(event=event)

    async def CreateQuoteRequest(
        self, request: aggregator_service_pb2.CreateQuoteRequestRequest, context: CreateContext
    ) -> aggregator_service_pb2.CreateQuoteRequestResponse:
        self.calls.append(("CreateQuoteRequest", request))
        if self.reject is not None:
            await context.abort_with_status(self.reject)
        if self.create_failures > 0:
            self.create_failures -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return aggregator_service_pb2.CreateQuoteRequestResponse(
            quote_request=aggregator_service_pb2.QuoteRequest(
                request_id=REQUEST_ID, status=events_pb2.SESSION_STATUS_RUNNING
            )
        )

    async def GetQuoteRequest(
        self, request: aggregator_service_pb2.GetQuoteRequestRequest, context: GetContext
    ) -> aggregator_service_pb2.GetQuoteRequestResponse:
        self.calls.append(("GetQuoteRequest", request))
        if request.request_id != REQUEST_ID:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such quote request")
        return aggregator_service_pb2.GetQuoteRequestResponse(
            quote_request=aggregator_service_pb2.QuoteRequest(request_id=REQUEST_ID, last_seq=len(self.log))
        )

    async def _play(
        self, context: GetQuotesContext | StreamContext, after_seq: int
    ) -> AsyncIterator[events_pb2.QuoteEvent]:
        if self.reject is not None:
            await context.abort_with_status(self.reject)
        brk = self.breaks.pop(0) if self.breaks else None
        # Headers first, as a real stream does: the channel must not retry this call by itself.
        await context.send_initial_metadata(())
        try:
            for sent, event in enumerate(e for e in self.log if e.seq > after_seq):
                if brk is not None and sent == brk.after:
                    break
                yield event
            if brk is not None and brk.code is not None:
                await context.abort(brk.code, "connection dropped")
            if brk is None and self.hold is not None:
                await self.hold.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    def seqs_asked(self) -> list[tuple[str, int]]:
        return [(name, getattr(req, "after_seq", 0)) for name, req in self.calls]


@pytest.fixture
def aggregator() -> ScriptedAggregator:
    return ScriptedAggregator()


@pytest.fixture
async def target(aggregator: ScriptedAggregator) -> AsyncIterator[str]:
    server = ServiceServer("127.0.0.1:0")
    aggregator_service_pb2_grpc.add_AggregatorServiceServicer_to_server(aggregator, server.server)
    server.add_service_name(SERVICE)
    port = await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


def fast_client(target: str | Sequence[str], **kwargs: Any) -> QuoteClient:
    options: dict[str, Any] = {
        "timeout_s": 10.0,
        "max_resumes": 3,
        "resume_backoff_s": 0.01,
        "resume_backoff_max_s": 0.05,
    }
    options.update(kwargs)
    return QuoteClient(target, **options)


async def collect(events: AsyncIterator[events_pb2.QuoteEvent]) -> list[events_pb2.QuoteEvent]:
    return [event async for event in events]


async def test_get_quotes_delivers_every_event_in_order_ending_with_session_finished(
    aggregator: ScriptedAggregator, target: str
) -> None:
    async with fast_client(target) as client:
        events = await collect(client.get_quotes(application(), idempotency_key="k-1"))

    assert events == aggregator.log
    assert events[-1].WhichOneof("payload") == "session_finished"
    ((name, request),) = aggregator.calls
    assert name == "GetQuotes" and request.idempotency_key == "k-1"
    assert request.application == application()


async def test_stream_dropped_with_unavailable_resumes_after_the_last_seq_seen(
    aggregator: ScriptedAggregator, target: str
) -> None:
    aggregator.breaks = [Break(after=2)]
    async with fast_client(target) as client:
        events = await collect(client.get_quotes(application()))

    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert aggregator.seqs_asked() == [("GetQuotes", 0), ("StreamQuoteEvents", 2)]
    assert aggregator.calls[1][1].request_id == REQUEST_ID


async def test_stream_ending_without_session_finished_or_reset_is_resumed_each_time(
    aggregator: ScriptedAggregator, target: str
) -> None:
    aggregator.breaks = [Break(after=1, code=None), Break(after=2, code=grpc.StatusCode.INTERNAL)]
    async with fast_client(target) as client:
        events = await collect(client.get_quotes(application()))

    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert aggregator.seqs_asked() == [
        ("GetQuotes", 0),
        ("StreamQuoteEvents", 1),
        ("StreamQuoteEvents", 3),
    ]


async def test_resumed_stream_replaying_seen_events_delivers_each_seq_once(
    aggregator: ScriptedAggregator, target: str
) -> None:
    aggregator.breaks = [Break(after=4)]
    aggregator.overlap = 3
    async with fast_client(target) as client:
        events = await collect(client.get_quotes(application()))

    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]


async def test_stream_broken_before_first_event_repeats_get_quotes_with_the_same_generated_key(
    aggregator: ScriptedAggregator, target: str
) -> None:
    aggregator.breaks = [Break(after=0)]
    async with fast_client(target) as client:
        events = await collect(client.get_quotes(application()))

    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert [name for name, _ in aggregator.calls] == ["GetQuotes", "GetQuotes"]
    first, second = (request.idempotency_key for _, request in aggregator.calls)
    assert first == second and uuid.UUID(first)


async def test_stream_events_follows_the_log_from_after_seq(aggregator: ScriptedAggregator, target: str) -> None:
    aggregator.breaks = [Break(after=1)]
    async with fast_client(target) as client:
        events = await collect(client.stream_events(REQUEST_ID, after_seq=3))

    assert [e.seq for e in events] == [4, 5, 6]
    assert aggregator.seqs_asked() == [("StreamQuoteEvents", 3), ("StreamQuoteEvents", 4)]


async def test_resumes_without_progress_stop_after_max_resumes_with_quote_error(
    aggregator: ScriptedAggregator, target: str
) -> None:
    aggregator.breaks = [Break(after=2)] + [Break(after=0) for _ in range(10)]
    seen: list[int] = []
    async with fast_client(target, max_resumes=2) as client:
        # The events seen before the error are part of what is checked.
        with pytest.raises(QuoteError) as caught:  # noqa: PT012
            async for event in client.get_quotes(application()):
                seen.append(event.seq)

    assert caught.value.code == "UNAVAILABLE"
    assert seen == [1, 2]
    assert aggregator.seqs_asked() == [
        ("GetQuotes", 0),
        ("StreamQuoteEvents", 2),
        ("StreamQuoteEvents", 2),
    ]


async def test_non_transient_error_mid_stream_is_raised_without_resuming(
    aggregator: ScriptedAggregator, target: str
) -> None:
    aggregator.breaks = [Break(after=2, code=grpc.StatusCode.FAILED_PRECONDITION)]
    async with fast_client(target) as client:
        with pytest.raises(QuoteError, match=r"^FAILED_PRECONDITION: connection dropped$") as caught:
            await collect(client.get_quotes(application()))

    assert caught.value.code == "FAILED_PRECONDITION"
    assert caught.value.message == "connection dropped"
    assert len(aggregator.calls) == 1


async def test_session_past_the_client_deadline_ends_with_deadline_exceeded(
    aggregator: ScriptedAggregator, target: str
) -> None:
    aggregator.log = aggregator.log[:3]
    aggregator.hold = asyncio.Event()
    async with fast_client(target, timeout_s=0.3) as client:
        with pytest.raises(QuoteError) as caught:
            await collect(client.get_quotes(application()))

    assert caught.value.code == "DEADLINE_EXCEEDED"


async def test_consumer_leaving_early_cancels_the_server_stream(aggregator: ScriptedAggregator, target: str) -> None:
    aggregator.log = aggregator.log[:3]
    aggregator.hold = asyncio.Event()
    async with fast_client(target) as client:
        async with aclosing(client.get_quotes(application())) as events:
            async for event in events:
                if event.seq == 3:
                    break
        await asyncio.wait_for(aggregator.cancelled.wait(), 5)


async def test_invalid_argument_with_bad_request_becomes_quote_error_with_field_violations(
    aggregator: ScriptedAggregator, target: str
) -> None:
    violations = [("vehicle.vin", "must be 17 characters"), ("drivers[0].birth_date", "required")]
    aggregator.reject = bad_request_status("the application is invalid", violations)
    async with fast_client(target) as client:
        with pytest.raises(QuoteError, match=r"^INVALID_ARGUMENT: the application is invalid$") as on_create:
            await client.create(application())
        with pytest.raises(QuoteError, match=r"^INVALID_ARGUMENT: the application is invalid$") as on_stream:
            await collect(client.get_quotes(application()))

    for caught in (on_create, on_stream):
        assert caught.value.code == "INVALID_ARGUMENT"
        assert caught.value.message == "the application is invalid"
        assert caught.value.field_violations == violations
    assert [name for name, _ in aggregator.calls] == ["CreateQuoteRequest", "GetQuotes"]


async def test_create_retries_unavailable_through_the_service_config(
    aggregator: ScriptedAggregator, target: str
) -> None:
    aggregator.create_failures = 1
    async with fast_client(target) as client:
        created = await client.create(application(), time_limit_s=30)

    assert created.request_id == REQUEST_ID
    assert [name for name, _ in aggregator.calls] == ["CreateQuoteRequest", "CreateQuoteRequest"]
    first, second = (request for _, request in aggregator.calls)
    assert first == second
    assert uuid.UUID(first.idempotency_key)
    assert first.time_limit.ToTimedelta() == timedelta(seconds=30)


async def test_create_gives_up_after_four_attempts(aggregator: ScriptedAggregator, target: str) -> None:
    aggregator.create_failures = 10
    async with fast_client(target) as client:
        with pytest.raises(QuoteError) as caught:
            await client.create(application(), idempotency_key="k-2")

    assert caught.value.code == "UNAVAILABLE"
    assert len(aggregator.calls) == 4


async def test_get_returns_the_snapshot_and_not_found_as_quote_error(
    aggregator: ScriptedAggregator, target: str
) -> None:
    async with fast_client(target) as client:
        snapshot = await client.get(REQUEST_ID)
        with pytest.raises(QuoteError) as caught:
            await client.get("nope")

    assert snapshot.last_seq == 6
    assert (caught.value.code, caught.value.field_violations) == ("NOT_FOUND", [])


async def test_stream_resumes_on_another_server_after_the_first_one_dies() -> None:
    first = ScriptedAggregator(hold=asyncio.Event())
    first.log = first.log[:3]
    server = ServiceServer("127.0.0.1:0")
    aggregator_service_pb2_grpc.add_AggregatorServiceServicer_to_server(first, server.server)
    port = await server.start()
    second = ScriptedAggregator()
    replacement = ServiceServer(f"127.0.0.1:{port}")
    aggregator_service_pb2_grpc.add_AggregatorServiceServicer_to_server(second, replacement.server)
    seen: list[int] = []
    try:
        async with fast_client(f"127.0.0.1:{port}") as client:
            async for event in client.get_quotes(application()):
                seen.append(event.seq)
                if event.seq == 3:
                    await server.server.stop(0)
                    await replacement.start()
    finally:
        await server.server.stop(0)
        await replacement.stop(0)

    assert seen == [1, 2, 3, 4, 5, 6]
    assert second.seqs_asked() == [("StreamQuoteEvents", 3)]


def test_event_cursor_accepts_each_seq_once_and_stops_after_session_finished() -> None:
    cursor = EventCursor()
    log = session_log()
    accepted = [cursor.accept(e) for e in [log[0], log[1], log[0], log[3], log[2], log[5], log[4]]]

    assert accepted == [True, True, False, True, False, True, False]
    assert (cursor.request_id, cursor.last_seq, cursor.finished) == (REQUEST_ID, 6, True)


def test_backoff_is_full_jitter_capped() -> None:
    assert backoff_delay(0, 0.2, 2.0, rand=lambda: 1.0) == pytest.approx(0.2)
    assert backoff_delay(3, 0.2, 2.0, rand=lambda: 0.5) == pytest.approx(0.8)
    assert backoff_delay(10, 0.2, 2.0, rand=lambda: 1.0) == pytest.approx(2.0)
    assert backoff_delay(5, 0.2, 2.0, rand=lambda: 0.0) == 0.0


def test_service_config_retries_unavailable_with_throttling() -> None:
    config = json.loads(str(dict(CHANNEL_OPTIONS)["grpc.service_config"]))
    (method,) = config["methodConfig"]
    assert method["name"] == [{"service": SERVICE}]
    assert method["retryPolicy"] == {
        "maxAttempts": 4,
        "initialBackoff": "0.1s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    assert config["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}


# Several aggregator instances, and the breaker toward them.


@contextlib.asynccontextmanager
async def instances(*aggregators: ScriptedAggregator) -> AsyncIterator[list[tuple[str, ServiceServer]]]:
    servers = []
    try:
        for scripted in aggregators:
            server = ServiceServer("127.0.0.1:0")
            aggregator_service_pb2_grpc.add_AggregatorServiceServicer_to_server(scripted, server.server)
            server.add_service_name(SERVICE)
            servers.append((f"127.0.0.1:{await server.start()}", server))
        yield servers
    finally:
        for _, server in servers:
            await server.stop(0)


async def test_calls_spread_over_every_instance_listed() -> None:
    one, two = ScriptedAggregator(), ScriptedAggregator()
    async with instances(one, two) as servers:
        # Host names are resolved when the client opens.
        listed = ",".join(address.replace("127.0.0.1", "localhost") for address, _ in servers)
        async with fast_client(listed) as client:
            # Round-robin over the instances that are connected: once both are, they alternate.
            for _ in range(50):
                await client.get(REQUEST_ID)
                if one.calls and two.calls:
                    break
            before = len(one.calls), len(two.calls)
            for _ in range(6):
                await client.get(REQUEST_ID)
    assert one.calls and two.calls
    assert (len(one.calls) - before[0], len(two.calls) - before[1]) == (3, 3)


async def test_a_draining_instance_gets_no_new_calls() -> None:
    one, two = ScriptedAggregator(), ScriptedAggregator()
    async with instances(one, two) as servers:
        await servers[0][1].health.enter_graceful_shutdown()  # NOT_SERVING, as a draining instance says
        async with fast_client([address for address, _ in servers]) as client:
            for _ in range(4):
                await client.get(REQUEST_ID)
    assert (len(one.calls), len(two.calls)) == (0, 4)


async def test_the_breaker_stops_calling_an_aggregator_that_keeps_failing() -> None:
    failing = ScriptedAggregator(
        reject=rpc_status.to_status(status_pb2.Status(code=code_pb2.UNAVAILABLE, message="down"))
    )
    clock = FakeClock()
    config = BreakerConfig(window_size=4, minimum_calls=4, failure_rate_threshold=0.5, open_duration_s=5.0)
    async with instances(failing) as servers, fast_client(servers[0][0], breaker=config, clock=clock) as client:
        for _ in range(4):
            with pytest.raises(QuoteError, match="UNAVAILABLE"):
                await client.create(application())
        reached = len(failing.calls)
        with pytest.raises(QuoteError, match=r"the quote service is failing right now; calls resume in 5\.0 s"):
            await client.create(application())
        assert len(failing.calls) == reached  # refused without a call
        await clock.advance(5.0)
        failing.reject = None  # the aggregator is back: a probe gets through
        assert (await client.create(application())).request_id == REQUEST_ID


async def test_answers_that_are_not_failures_of_the_service_keep_the_breaker_closed() -> None:
    config = BreakerConfig(window_size=4, minimum_calls=4, failure_rate_threshold=0.5, open_duration_s=5.0)
    scripted = ScriptedAggregator()
    async with instances(scripted) as servers, fast_client(servers[0][0], breaker=config) as client:
        for _ in range(6):
            with pytest.raises(QuoteError, match="NOT_FOUND"):
                await client.get("someone-else")
        assert (await client.get(REQUEST_ID)).request_id == REQUEST_ID
