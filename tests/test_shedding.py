"""Load shedding: a saturated aggregator refuses new sessions with a time to retry, and the sessions
it runs still end by their deadline. On a fake clock with scripted gateways, then over real gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import events_pb2, quote_pb2

from aggregator import service as aggregator_service
from aggregator.bus import MemoryEventBus
from aggregator.cache import MemoryResultCache
from aggregator.core import Aggregator
from aggregator.door import PROBE_KEY, own_target
from aggregator.settings import AggregatorSettings, GatewayEndpoint
from aggregator.shedding import Busy, LoadShedding, LoopLag, ProbeUnreached, QueueWait
from aggregator.store import MemoryRequestStore
from osago_client.errors import from_rpc_error
from osago_common.clock import FakeClock
from osago_common.env import SettingsError
from osago_common.grpc_errors import retry_delay_s
from tests.conftest import load_example
from tests.test_aggregator_core import held_mesh
from tests.test_session import Script, ScriptedGateways, accepted, offer

Status = events_pb2.SessionStatus
Reason = quote_pb2.FailureReason

LIMIT_S = 10.0
NEVER: Script = [(0.0, accepted())]  # accepts, then never answers within any session


class LateClock(FakeClock):
    """A fake clock on a saturated event loop: every timer fires `late_s` after it was due."""

    def __init__(self, late_s: float) -> None:
        super().__init__()
        self.late_s = late_s

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds + self.late_s)


@contextlib.asynccontextmanager
async def aggregator(clock: FakeClock, script: Script, **settings: Any) -> AsyncIterator[Aggregator]:
    """An aggregator asking one scripted insurer "a"; request ids r1, r2, ..."""
    ids = (f"r{n}" for n in itertools.count(1))
    core = Aggregator(
        AggregatorSettings(gateways=(GatewayEndpoint("a", "A", "unused:1"),), session_limit_s=LIMIT_S, **settings),
        ScriptedGateways(clock, {"a": script}),
        MemoryRequestStore(),
        MemoryEventBus(clock),
        MemoryResultCache(clock),
        clock,
        new_id=lambda: next(ids),
    )
    core.start()
    try:
        yield core
    finally:
        await core.close()


async def start(core: Aggregator) -> str:
    record, _ = await core.create(load_example(), "", None, fresh=True)
    return record.request_id


# --- the decision ---------------------------------------------------------------------------------


def test_a_cap_refuses_the_session_beyond_it_with_the_configured_retry_delay() -> None:
    shedding = LoadShedding(max_sessions=3, shed_loop_lag_s=0.0, retry_after_s=4.0, lag=LoopLag(FakeClock()))
    shedding.admit(2)
    delays = set()
    for _ in range(20):
        with pytest.raises(Busy) as refused:
            shedding.admit(3)
        delays.add(refused.value.retry_after_s)
    # The configured delay, lengthened by up to half of it: not everyone comes back at once.
    assert all(4.0 <= d <= 6.0 for d in delays) and len(delays) > 1
    assert shedding.shed_total == 20
    assert shedding.shed_by == {"sessions": 20, "loop_lag": 0, "queue_wait": 0, "adaptive_cap": 0}


def test_without_a_cap_and_without_watching_the_lag_everything_is_admitted() -> None:
    lag = LoopLag(FakeClock())
    lag.observe(30.0)
    shedding = LoadShedding(max_sessions=0, shed_loop_lag_s=0.0, retry_after_s=1.0, lag=lag)
    shedding.admit(1_000_000)
    assert shedding.shed_total == 0


def test_the_smoothed_lag_follows_a_lasting_lag_more_than_a_lone_pause() -> None:
    lone, lasting = LoopLag(FakeClock(), weight=0.2), LoopLag(FakeClock(), weight=0.2)
    lone.observe(1.0)
    for _ in range(4):
        lone.observe(0.0)
    for _ in range(5):
        lasting.observe(0.3)
    # 1.0 × 0.2 × 0.8⁴ = 0.08192; 0.3 × (1 − 0.8⁵) = 0.201696.
    assert lone.smoothed == pytest.approx(0.08192)
    assert lasting.smoothed == pytest.approx(0.201696)
    threshold = LoadShedding(max_sessions=0, shed_loop_lag_s=0.15, retry_after_s=1.0, lag=lone)
    threshold.admit(0)
    lagging = LoadShedding(max_sessions=0, shed_loop_lag_s=0.15, retry_after_s=1.0, lag=lasting)
    with pytest.raises(Busy):
        lagging.admit(0)
    assert (threshold.shed_by["loop_lag"], lagging.shed_by["loop_lag"]) == (0, 1)


def test_settings_read_and_check_the_shedding_variables() -> None:
    env = {"OSAGO_GATEWAYS": "alfa=127.0.0.1:1", "OSAGO_DEV_INSECURE": "true"}
    default = AggregatorSettings.from_env(env)
    assert (default.max_sessions, default.shed_loop_lag_s, default.shed_retry_s) == (0, 0.25, 2.0)
    tuned = AggregatorSettings.from_env(
        {**env, "OSAGO_MAX_SESSIONS": "600", "OSAGO_SHED_LOOP_LAG_S": "0", "OSAGO_SHED_RETRY_S": "5"}
    )
    assert (tuned.max_sessions, tuned.shed_loop_lag_s, tuned.shed_retry_s) == (600, 0.0, 5.0)
    for name, value in (("OSAGO_MAX_SESSIONS", "-1"), ("OSAGO_SHED_LOOP_LAG_S", "-0.1"), ("OSAGO_SHED_RETRY_S", "0")):
        with pytest.raises(SettingsError, match=name):
            AggregatorSettings.from_env({**env, name: value})


# --- the aggregator held saturated, on a fake clock ---------------------------------------------


async def test_at_capacity_new_sessions_are_refused_and_the_running_one_still_ends_by_its_deadline(
    clock: FakeClock,
) -> None:
    async with aggregator(clock, NEVER, max_sessions=1, shed_retry_s=3.0, shed_loop_lag_s=0.0) as core:
        running = await start(core)
        for _ in range(3):
            with pytest.raises(Busy) as refused:
                await start(core)
            assert 3.0 <= refused.value.retry_after_s <= 4.5
        await clock.advance(LIMIT_S)
        events = [e async for e in core.events(running, 0)]
        finished = events[-1]
        assert finished.session_finished.status == Status.SESSION_STATUS_DEADLINE_EXCEEDED
        started_at = events[0].time.ToDatetime()
        assert finished.time.ToDatetime() - started_at == timedelta(seconds=LIMIT_S)  # not a moment later
        assert core.shedding.shed_total == 3
        # The refused ones stored nothing: only the running one exists.
        assert (await core.snapshot(running)).request_id == running
        # Room again: the next session is admitted.
        assert await start(core) == "r2"


async def test_a_lagging_event_loop_sheds_new_sessions_and_admits_again_once_it_keeps_up() -> None:
    clock = LateClock(late_s=0.3)  # every timer 300 ms late: a saturated instance
    async with aggregator(clock, [(1.0, offer(700_000))], shed_loop_lag_s=0.2) as core:
        await clock.advance(3.0)  # the lag monitor has sampled a lasting 300 ms lag
        assert core.shedding.lag.smoothed > 0.2
        with pytest.raises(Busy):
            await start(core)
        clock.late_s = 0.0  # the load went away
        await clock.advance(3.0)
        assert core.shedding.lag.smoothed < 0.2
        assert await start(core) == "r1"


# --- over real gRPC: RESOURCE_EXHAUSTED with RetryInfo --------------------------------------------


@pytest.mark.functional
async def test_over_grpc_a_refused_session_is_resource_exhausted_with_retry_info(clock: FakeClock) -> None:
    async with held_mesh(clock, session_limit_s=LIMIT_S, max_sessions=1, shed_retry_s=2.5) as (_, stub, _gateway):
        first = stub.GetQuotes(pb.GetQuotesRequest(application=load_example()), timeout=30)
        stream = first.__aiter__()
        assert (await anext(stream)).event.HasField("session_started")

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateQuoteRequest(pb.CreateQuoteRequestRequest(application=load_example()), timeout=5)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(refused.value)
        delay = retry_delay_s(status) if status is not None else None
        assert delay is not None and 2.5 <= delay <= 3.75
        assert from_rpc_error(refused.value).retry_after_s == delay  # what the client library reads

        second = stub.GetQuotes(pb.GetQuotesRequest(application=load_example()), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            await anext(second.__aiter__())
        assert streamed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        await clock.advance(LIMIT_S)  # the running session reaches its deadline
        rest = [response.event async for response in stream]
        assert rest[-1].session_finished.status == Status.SESSION_STATUS_DEADLINE_EXCEEDED
        assert [e.insurer_failed.reason for e in rest if e.HasField("insurer_failed")] == [
            Reason.FAILURE_REASON_DEADLINE
        ]


# --- the calls' wait at the door ------------------------------------------------------------------


class HeldProbe:
    """A probe the test answers: `answer` (or `unreach`) ends the call in flight."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.unreached = False

    async def __call__(self) -> None:
        await self.answer.wait()
        self.answer.clear()
        if self.unreached:
            raise ProbeUnreached("UNAVAILABLE")


async def test_the_queue_wait_is_the_last_probe_s_or_the_one_still_waiting_whichever_is_longer(
    clock: FakeClock,
) -> None:
    probe = HeldProbe()
    queue = QueueWait(clock, probe)
    first = asyncio.create_task(queue.probe_once())
    await clock.advance(0.3)
    assert queue.current() == pytest.approx(0.3)  # unanswered yet: waiting 0.3 s so far
    probe.answer.set()
    assert await first == pytest.approx(0.3)
    await clock.advance(5.0)
    assert queue.current() == pytest.approx(0.3)  # the last answer's wait until the next one
    second = asyncio.create_task(queue.probe_once())
    await clock.advance(1.5)
    assert queue.current() == pytest.approx(1.5)
    probe.answer.set()
    await second
    assert queue.latest == pytest.approx(1.5)
    assert queue.reached is True
    # A probe that never reached the door measured nothing: no wait is assumed.
    probe.unreached = True
    third = asyncio.create_task(queue.probe_once())
    await clock.advance(4.0)
    probe.answer.set()
    assert await third == 0.0
    assert (queue.current(), queue.reached) == (0.0, False)


def test_a_long_queue_sheds_and_the_advised_delay_grows_while_it_lasts_then_eases_back(clock: FakeClock) -> None:
    queue = QueueWait(clock, HeldProbe())
    shedding = LoadShedding(0, 0.0, 2.0, LoopLag(clock), shed_queue_wait_s=1.0)
    shedding.watch_queue(queue)
    queue.latest = 0.9
    shedding.admit(100)
    # Each probe that waited too long: the advice × 1.5, up to 30 s.
    for expected in (3.0, 4.5, 6.75, 10.125, 15.1875, 22.78125, 30.0, 30.0):
        shedding.queue_observed(1.2)
        assert shedding.advised_s == pytest.approx(expected)
    queue.latest = 1.2
    delays = []
    for _ in range(30):
        with pytest.raises(Busy) as refused:
            shedding.admit(0)
        delays.append(refused.value.retry_after_s)
    assert all(30.0 <= d <= 45.0 for d in delays) and len(set(delays)) > 1
    # A quick probe after more refusals than admissions: the crowd is still there, the advice holds.
    shedding.queue_observed(0.01)
    assert shedding.advised_s == 30.0
    # Each quick probe after fewer refusals than admissions (none here): ÷ 1.15, down to the
    # configured 2 s.
    shedding.queue_observed(0.01)
    assert shedding.advised_s == pytest.approx(30 / 1.15)
    for _ in range(30):
        shedding.queue_observed(0.01)
    assert shedding.advised_s == 2.0
    queue.latest = 0.01
    shedding.admit(0)
    assert shedding.shed_total == 30
    assert shedding.shed_by["queue_wait"] == 30
    # Not watched: a long queue changes nothing.
    unwatched = LoadShedding(0, 0.0, 2.0, LoopLag(clock), shed_queue_wait_s=0.0)
    long_queue = QueueWait(clock, HeldProbe())
    unwatched.watch_queue(long_queue)
    long_queue.latest = 50.0
    unwatched.queue_observed(50.0)
    unwatched.admit(0)
    assert (unwatched.advised_s, unwatched.cap) == (2.0, None)


def test_a_slow_door_caps_the_sessions_running_and_a_quick_one_raises_the_cap_until_it_is_lifted(
    clock: FakeClock,
) -> None:
    running = [500]
    shedding = LoadShedding(0, 0.0, 2.0, LoopLag(clock), shed_queue_wait_s=2.0, running=lambda: running[0])
    queue = QueueWait(clock, HeldProbe())
    shedding.watch_queue(queue)
    shedding.queue_observed(0.5)
    assert shedding.cap is None  # a quick door and no cap: nothing to raise
    shedding.queue_observed(2.5)  # too long: the cap is 90 % of the 500 running
    assert shedding.cap == pytest.approx(450.0)
    running[0] = 460
    shedding.queue_observed(3.0)  # still too long: 90 % of the cap, which is below the running
    assert shedding.cap == pytest.approx(405.0)
    # The door is quick again (the queue drained), but the running are above the cap: refused,
    # until sessions end and make room one for one.
    with pytest.raises(Busy):
        shedding.admit(460)
    assert shedding.shed_by["adaptive_cap"] == 1
    shedding.admit(404)
    shedding.queue_observed(1.9)  # not too long: + 2 %
    assert shedding.cap == pytest.approx(405.0 * 1.02)
    running[0] = 200  # the load went away: raised on each quick probe, lifted at twice the running
    raises = 0
    while shedding.cap is not None:
        shedding.queue_observed(0.1)
        raises += 1
    assert raises == 1  # 413.1 + 8.26 = 421.4 ≥ 2 × 200
    running[0] = 3
    shedding.queue_observed(9.0)
    assert shedding.cap == pytest.approx(2.7)
    running[0] = 1
    shedding.queue_observed(9.0)
    assert shedding.cap == 1.0  # never below one session
    shedding.queue_observed(0.1)
    assert shedding.cap is None  # + 1 session = 2 = twice the one running: lifted
    # A probe that cannot reach the door lifts any cap and leaves the advice as it was.
    running[0] = 100
    shedding.queue_observed(9.0)
    advised = shedding.advised_s
    assert shedding.cap == pytest.approx(90.0)
    shedding.queue_observed(None)
    assert (shedding.cap, shedding.advised_s) == (None, advised)
    shedding.admit(100)


def test_more_refusals_than_admissions_between_two_probes_lengthen_the_advice_even_at_a_quick_door(
    clock: FakeClock,
) -> None:
    shedding = LoadShedding(4, 0.0, 2.0, LoopLag(clock), shed_queue_wait_s=1.0)
    shedding.watch_queue(QueueWait(clock, HeldProbe()))
    shedding.admit(3)
    for _ in range(2):
        with pytest.raises(Busy):
            shedding.admit(4)  # the fixed cap of 4
    shedding.queue_observed(0.1)  # 2 refused > 1 admitted
    assert shedding.advised_s == pytest.approx(3.0)
    shedding.admit(3)
    shedding.admit(3)
    with pytest.raises(Busy):
        shedding.admit(4)
    shedding.queue_observed(0.1)  # 1 refused < 2 admitted
    assert shedding.advised_s == pytest.approx(3.0 / 1.15)


def test_settings_read_and_check_the_queue_wait() -> None:
    env = {"OSAGO_GATEWAYS": "alfa=127.0.0.1:1", "OSAGO_DEV_INSECURE": "true"}
    assert AggregatorSettings.from_env(env).shed_queue_wait_s == 2.5
    assert AggregatorSettings.from_env({**env, "OSAGO_SHED_QUEUE_WAIT_S": "0"}).shed_queue_wait_s == 0.0
    assert AggregatorSettings.from_env({**env, "OSAGO_SHED_QUEUE_WAIT_S": "2.5"}).shed_queue_wait_s == 2.5
    for value in ("-1", "31"):
        with pytest.raises(SettingsError, match="OSAGO_SHED_QUEUE_WAIT_S"):
            AggregatorSettings.from_env({**env, "OSAGO_SHED_QUEUE_WAIT_S": value})


def test_the_probe_reaches_the_bound_address_or_loopback_when_every_address_is_bound() -> None:
    assert own_target("0.0.0.0:50051", 50051) == "127.0.0.1:50051"
    assert own_target("[::]:0", 4711) == "[::1]:4711"
    assert own_target("10.1.2.3:0", 4711) == "10.1.2.3:4711"
    assert own_target("[::1]:0", 4711) == "[::1]:4711"
    assert own_target("localhost:50051", 50051) == "localhost:50051"


@pytest.mark.functional
async def test_over_grpc_a_slow_door_sheds_new_sessions_and_a_quick_one_admits_them_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The aggregator's own probe goes through its real port. The test's event loop is the
    aggregator's: blocking it while a probe is in flight holds the probe at the door."""
    monkeypatch.setattr(aggregator_service, "PROBE_INTERVAL_S", 3600.0)  # the test sends the probes
    async with held_mesh(shed_queue_wait_s=0.3, shed_retry_s=0.5) as (service, stub, _gateway):
        queue = service.queue_wait
        assert queue is not None and service.aggregator is not None

        async def first_event() -> events_pb2.QuoteEvent:
            call = stub.GetQuotes(pb.GetQuotesRequest(application=load_example()), timeout=30)
            try:
                return (await anext(call.__aiter__())).event
            finally:
                call.cancel()

        assert await queue.probe_once() < 0.3 and queue.reached
        assert (await first_event()).HasField("session_started")

        in_flight = asyncio.create_task(queue.probe_once())
        await asyncio.sleep(0)  # the probe's call is sent ...
        time.sleep(0.6)  # noqa: ASYNC251 - ... and the loop that would take it is held
        waited = await in_flight
        assert waited >= 0.6 and queue.reached
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await first_event()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(refused.value)
        # One long probe: the configured 0.5 s advice × 1.5, lengthened by up to half.
        delay = retry_delay_s(status) if status is not None else None
        assert delay is not None and 0.7 <= delay <= 1.2

        assert await queue.probe_once() < 0.3
        assert service.aggregator.shedding.cap is None  # one session capped at 1, raised to 2: lifted
        assert (await first_event()).HasField("session_started")
        # The probes made no session and were refused nothing: two sessions, one refusal.
        assert service.aggregator.shedding.shed_total == 1

        # A call with a wrong secret is an ordinary call: here, an invalid one.
        wrong = stub.GetQuotes(pb.GetQuotesRequest(), metadata=((PROBE_KEY, "guess"),), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as ordinary:
            await anext(wrong.__aiter__())
        assert ordinary.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as ordinary:
            await stub.CreateQuoteRequest(pb.CreateQuoteRequestRequest(), metadata=((PROBE_KEY, "guess"),), timeout=5)
        assert ordinary.value.code() == grpc.StatusCode.INVALID_ARGUMENT
