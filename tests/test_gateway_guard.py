"""The gateway's resilience wiring on a fake clock and a scripted insurer: breaker, quota,
bulkhead, retries and adaptive polling around the offer flow. No real sleeping."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import itertools
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import redis

from insurer_gateway.dialects import DIALECTS, Offer
from insurer_gateway.exchange import HttpCall, HttpResponse, HttpTimeout, HttpUnavailable
from insurer_gateway.guard import InsurerGuard
from insurer_gateway.offers import (
    Accepted,
    Failed,
    OfferFlow,
    Reason,
    Update,
)
from insurer_gateway.ratelimit import FallbackRateLimiter, LocalRateLimiter, RateLimitConfig
from insurer_gateway.settings import GatewaySettings
from osago_common.breaker import BreakerState
from osago_common.clock import FakeClock
from osago_common.env import SettingsError
from tests.test_gateway_offers import CREATE, QUOTED, created, processing, response

# The dev mode (plaintext): these tests are about the other settings.
DEV_ENV = {"OSAGO_DEV_INSECURE": "true"}

BASE = GatewaySettings(insurer_id="alfa", insurer_name="AlfaStrakhovanie", dialect="rest", base_url="http://insurer")
# A small breaker, one attempt per call, so that counts are easy to follow; it stays open long
# enough for `Gateway.request` (which runs the clock past the deadline) not to let it lapse.
OPEN_S = 1000.0
SMALL = dataclasses.replace(
    BASE,
    breaker_window=4,
    breaker_min_calls=4,
    breaker_open_s=OPEN_S,
    breaker_half_open_probes=2,
    retry_max_attempts=1,
)
UNAVAILABLE = HttpUnavailable("ClientConnectorError")
HANG = "hang"
Step = HttpResponse | Exception | str | Callable[[HttpCall], Awaitable[HttpResponse]]


@dataclass
class Insurer:
    """A scripted insurer shared by many flows: answers the steps in order, repeating the last."""

    clock: FakeClock
    steps: list[Step]
    calls: list[tuple[float, HttpCall, float]] = field(default_factory=list)
    in_flight: int = 0

    async def __call__(self, call: HttpCall, timeout: float) -> HttpResponse:
        self.calls.append((self.clock.monotonic(), call, timeout))
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        self.in_flight += 1
        try:
            if isinstance(step, Exception):
                raise step
            if step == HANG:
                await self.clock.sleep(timeout)
                raise HttpTimeout("timed out")
            if callable(step):
                return await step(call)
            assert isinstance(step, HttpResponse)
            return step
        finally:
            self.in_flight -= 1

    @property
    def times(self) -> list[float]:
        return [round(at, 6) for at, _, _ in self.calls]


class Gateway:
    """One insurer's flow and guard on a fake clock; `start` runs a RequestOffer-like consumer."""

    def __init__(self, steps: Sequence[Step], settings: GatewaySettings = SMALL, seed: int = 0) -> None:
        self.clock = FakeClock()
        self.settings = settings
        self.insurer = Insurer(self.clock, list(steps))
        self.guard = InsurerGuard(settings, self.clock, rng=random.Random(seed))
        self.flow = OfferFlow(settings, DIALECTS["rest"], self.insurer, self.clock, self.guard, random.Random(seed))

    def start(self, deadline: float = 60.0, create: HttpCall = CREATE) -> Stream:
        stream = Stream(self.clock)
        stream.task = asyncio.create_task(stream.consume(self.flow, create, deadline))
        return stream

    async def request(self, deadline: float = 60.0, create: HttpCall = CREATE) -> list[tuple[float, Update]]:
        """Runs one flow to its end (the clock advanced past the deadline)."""
        stream = self.start(self.clock.monotonic() + deadline, create)
        await self.clock.advance(deadline + 1)
        assert stream.task is not None and stream.task.done(), "the flow outlived its deadline"
        await stream.task
        return stream.updates

    def state(self) -> BreakerState:
        return self.guard.breaker.state


@dataclass
class Stream:
    clock: FakeClock
    updates: list[tuple[float, Update]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def consume(self, flow: OfferFlow, create: HttpCall, deadline: float) -> None:
        async for update in flow.run(create, deadline):
            self.updates.append((round(self.clock.monotonic(), 6), update))

    @property
    def last(self) -> Update:
        return self.updates[-1][1]


def reason(updates: list[tuple[float, Update]]) -> Reason:
    last = updates[-1][1]
    assert isinstance(last, Failed), last
    return last.reason


def http_date(clock: FakeClock, after_s: float) -> str:
    """An HTTP-date `after_s` seconds after the clock's now (whole seconds: start on one)."""
    return email.utils.format_datetime(clock.now() + timedelta(seconds=after_s), usegmt=True)


# --- circuit breaker ------------------------------------------------------------------------


async def test_open_breaker_fails_fast_without_calling_insurer() -> None:
    gw = Gateway([UNAVAILABLE])
    for _ in range(4):  # the configured minimum of calls, all failing
        assert reason(await gw.request()) is Reason.UNAVAILABLE
    assert gw.state() is BreakerState.OPEN
    calls = len(gw.insurer.calls)
    stream = gw.start(deadline=gw.clock.monotonic() + 60)
    await gw.clock.settle()  # no clock time passes: the answer is immediate
    assert stream.task is not None and stream.task.done()
    assert [type(u).__name__ for _, u in stream.updates] == ["Failed"]
    assert isinstance(stream.last, Failed) and stream.last.reason is Reason.CIRCUIT_OPEN
    assert stream.last.detail.startswith("create: circuit open")
    assert len(gw.insurer.calls) == calls  # zero HTTP calls
    assert gw.guard.breaker.rejected_total == 1


async def test_the_breaker_does_not_open_before_the_minimum_calls() -> None:
    gw = Gateway([UNAVAILABLE])
    for _ in range(3):
        await gw.request()
    assert gw.state() is BreakerState.CLOSED


async def test_half_open_probe_success_closes_the_breaker() -> None:
    gw = Gateway([UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, created(100), QUOTED])
    for _ in range(4):
        await gw.request()
    assert gw.state() is BreakerState.OPEN
    await gw.clock.advance(OPEN_S)
    assert gw.state() is BreakerState.HALF_OPEN
    # Two probes: the create and the poll; both succeed and the breaker closes.
    updates = await gw.request()
    assert isinstance(updates[-1][1], Offer)
    assert gw.state() is BreakerState.CLOSED


async def test_half_open_lets_only_the_probes_through_and_fails_everyone_else_fast() -> None:
    gw = Gateway([UNAVAILABLE] * 4 + [HANG], dataclasses.replace(SMALL, breaker_half_open_probes=1))
    for _ in range(4):
        await gw.request()
    await gw.clock.advance(OPEN_S)
    probe = gw.start(deadline=gw.clock.monotonic() + 60)
    await gw.clock.settle()
    assert gw.insurer.in_flight == 1  # the probe hangs
    other = gw.start(deadline=gw.clock.monotonic() + 60)
    await gw.clock.settle()
    assert isinstance(other.last, Failed) and other.last.reason is Reason.CIRCUIT_OPEN
    assert len(gw.insurer.calls) == 5
    assert probe.task is not None
    probe.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe.task


async def test_a_cancelled_call_releases_its_permit() -> None:
    settings = dataclasses.replace(SMALL, breaker_half_open_probes=1)
    gw = Gateway([UNAVAILABLE] * 4 + [HANG, created(100), QUOTED], settings)
    for _ in range(4):
        await gw.request()
    await gw.clock.advance(OPEN_S)
    probe = gw.start(deadline=gw.clock.monotonic() + 60)
    await gw.clock.settle()
    assert probe.task is not None
    probe.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe.task
    assert gw.insurer.in_flight == 0 and gw.guard.bulkhead.in_flight == 0
    # The probe slot is free again: the next caller probes (no verdict was given).
    assert gw.state() is BreakerState.HALF_OPEN
    updates = await gw.request()
    assert isinstance(updates[-1][1], Offer)
    assert gw.state() is BreakerState.CLOSED


async def test_a_probe_failure_reopens_the_breaker() -> None:
    gw = Gateway([UNAVAILABLE])
    for _ in range(4):
        await gw.request()
    await gw.clock.advance(OPEN_S)
    assert reason(await gw.request()) is Reason.UNAVAILABLE
    assert gw.state() is BreakerState.OPEN
    assert gw.guard.breaker.opened_total == 2


async def test_a_poll_due_while_the_breaker_is_open_waits_for_it_and_gets_the_offer() -> None:
    open_s = 10.0
    gw = Gateway(
        [created(2000), UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, QUOTED],
        dataclasses.replace(SMALL, breaker_open_s=open_s, breaker_half_open_probes=1),
    )
    poller = gw.start(deadline=60.0)
    await gw.clock.settle()
    assert poller.updates and isinstance(poller.updates[0][1], Accepted)
    for _ in range(3):  # other customers' creates fail meanwhile: 3 of 4 calls, it opens
        failing = gw.start(deadline=60.0)
        await gw.clock.settle()
        assert isinstance(failing.last, Failed) and failing.last.reason is Reason.UNAVAILABLE
    opened_at = gw.clock.monotonic()
    assert gw.state() is BreakerState.OPEN and len(gw.insurer.calls) == 4
    await gw.clock.advance(open_s - 0.01)  # the poll was due at 2 s: it waits, calling nobody
    assert len(poller.updates) == 1 and len(gw.insurer.calls) == 4
    await gw.clock.advance(1.02)  # the breaker lets calls through; the wait's spread is under 1 s
    assert gw.state() is BreakerState.CLOSED  # the poll was the probe, and it succeeded
    assert isinstance(poller.last, Offer)
    poll_at = gw.insurer.times[-1]
    assert opened_at + open_s <= poll_at <= opened_at + open_s + 1.0
    assert poller.task is not None and poller.task.done()


async def test_waiting_polls_take_the_probe_slot_in_turn_and_teach_nothing_of_the_insurer_s_times() -> None:
    open_s = 10.0

    async def slow_quote(call: HttpCall) -> HttpResponse:
        await gw.clock.sleep(3.0)  # the probe takes a while: the other waiter finds it under way
        return QUOTED

    gw = Gateway(
        [created(2000), created(2000), UNAVAILABLE, UNAVAILABLE, slow_quote, QUOTED],
        dataclasses.replace(SMALL, breaker_open_s=open_s, breaker_half_open_probes=1),
    )
    first, second = gw.start(deadline=60.0), gw.start(deadline=60.0)
    await gw.clock.settle()
    for _ in range(2):  # two creates fail: half of four calls, and it opens
        gw.start(deadline=60.0)
        await gw.clock.settle()
    assert gw.state() is BreakerState.OPEN and len(gw.insurer.calls) == 4
    await gw.clock.advance(open_s + 1.0)  # both polls were due at 2 s; one probes, ~10-11 s
    assert len(gw.insurer.calls) == 5 and gw.state() is BreakerState.HALF_OPEN
    await gw.clock.advance(6.0)  # the probe answered at ~13-14 s; the other looked again after
    assert gw.state() is BreakerState.CLOSED
    assert isinstance(first.last, Offer) and isinstance(second.last, Offer)
    probe_at, other_at = gw.insurer.times[4:]
    assert open_s <= probe_at <= open_s + 1.0 and other_at >= probe_at + 3.0
    assert len(gw.flow.ready_times) == 0  # found after a wait: when they were ready is unknown


async def test_the_breaker_opening_during_polling_fails_the_poll_without_calling_when_it_outlasts_the_deadline() -> (
    None
):
    async def first_create(call: HttpCall) -> HttpResponse:
        return created(2000)

    gw = Gateway([first_create, UNAVAILABLE])
    poller = gw.start(deadline=60.0)
    await gw.clock.settle()
    assert poller.updates and isinstance(poller.updates[0][1], Accepted)
    for _ in range(4):  # other customers' creates fail meanwhile and open the breaker
        failing = gw.start(deadline=60.0)
        await gw.clock.settle()
        assert isinstance(failing.last, Failed)
    assert gw.state() is BreakerState.OPEN
    calls = len(gw.insurer.calls)
    await gw.clock.advance(2.0)  # the poll is due
    assert isinstance(poller.last, Failed) and poller.last.reason is Reason.CIRCUIT_OPEN
    assert poller.last.detail.startswith("poll")
    assert len(gw.insurer.calls) == calls


@pytest.mark.parametrize(
    "answer",
    [
        response(400, {"error": "bad VIN", "field": "vehicle.vin"}),  # data refused: a decline
        response(429, {"error": "slow down"}),  # the insurer protecting itself
    ],
    ids=["refused", "429"],
)
async def test_refusals_and_429_never_open_the_breaker(answer: HttpResponse) -> None:
    gw = Gateway([answer])
    for _ in range(10):
        await gw.request()
    assert gw.state() is BreakerState.CLOSED


async def test_declines_count_as_successes_for_the_breaker() -> None:
    declined = response(200, {"status": "DECLINED", "declineReason": "no"})
    gw = Gateway([created(100), declined, UNAVAILABLE, UNAVAILABLE])
    for _ in range(3):
        await gw.request()
    # The window holds create ok, poll ok (declined), 2 failures: 50 % of 4 calls opens it...
    assert gw.state() is BreakerState.OPEN
    gw = Gateway([created(100), declined, created(100), declined, UNAVAILABLE])
    for _ in range(3):
        await gw.request()
    # ...while 1 failure in 5 calls does not.
    assert gw.state() is BreakerState.CLOSED


async def test_bad_responses_and_slow_calls_count_as_failures() -> None:
    gw = Gateway([response(200, b"<html>Bad Gateway</html>")])
    for _ in range(4):
        assert reason(await gw.request()) is Reason.BAD_RESPONSE
    assert gw.state() is BreakerState.OPEN

    async def slow(call: HttpCall) -> HttpResponse:
        await gw.clock.sleep(4.5)  # beyond the slow-call threshold, within the timeout
        return response(400, {"field": "vin"})

    gw = Gateway([slow])
    for _ in range(4):
        assert reason(await gw.request()) is Reason.DECLINED
    assert gw.state() is BreakerState.OPEN


# --- retries --------------------------------------------------------------------------------


@dataclass
class IdempotentInsurer:
    """Makes one application per Idempotency-Key; the first create's answer is a 503 (the
    application was made, but the answer lost)."""

    applications: dict[str, str] = field(default_factory=dict)
    creates: int = 0

    async def create(self, call: HttpCall) -> HttpResponse:
        self.creates += 1
        key = call.headers["Idempotency-Key"]
        self.applications.setdefault(key, f"APP-{len(self.applications) + 1}")
        if self.creates == 1:
            return response(503, {"error": "maintenance"})
        return response(
            201, {"applicationId": self.applications[key], "status": "PROCESSING", "estimatedReadyInMs": 100}
        )


async def test_a_503_create_is_retried_and_yields_the_offer_with_one_insurer_application() -> None:
    idempotent = IdempotentInsurer()
    gw = Gateway([idempotent.create, idempotent.create, QUOTED], dataclasses.replace(BASE))
    updates = await gw.request()
    assert [type(u).__name__ for _, u in updates] == ["Accepted", "Offer"]
    assert updates[0][1] == Accepted("APP-1")
    assert idempotent.creates == 2 and len(idempotent.applications) == 1
    keys = {call.headers.get("Idempotency-Key") for _, call, _ in gw.insurer.calls if call.method == "POST"}
    assert keys == {"req-1:alfa"}
    assert gw.guard.retries_total == 1
    assert 0.0 <= gw.insurer.times[1] <= 0.1  # full jitter below the base


async def test_a_call_not_marked_idempotent_is_tried_once_whatever_its_headers() -> None:
    gw = Gateway([response(503, {})], dataclasses.replace(BASE))
    unsafe = dataclasses.replace(CREATE, idempotent=False)  # the key alone does not vouch for it
    assert unsafe.headers["Idempotency-Key"]
    assert reason(await gw.request(create=unsafe)) is Reason.INSURER_ERROR
    assert len(gw.insurer.calls) == 1 and gw.guard.retries_total == 0


async def test_a_call_marked_idempotent_is_retried_whatever_its_method_and_headers() -> None:
    gw = Gateway([response(503, {}), response(503, {}), created(100), QUOTED], dataclasses.replace(BASE))
    marked = HttpCall("POST", "/api/v1/applications", {}, {"externalRef": "req-1"}, idempotent=True)
    updates = await gw.request(create=marked)
    assert isinstance(updates[-1][1], Offer)
    creates = [call for _, call, _ in gw.insurer.calls if call.method == "POST"]
    assert len(creates) == BASE.retry_max_attempts == 3 and gw.guard.retries_total == 2


async def test_429_with_retry_after_seconds_waits_that_long() -> None:
    gw = Gateway([response(429, {}, {"retry-after": "3"}), created(100), QUOTED], dataclasses.replace(BASE))
    updates = await gw.request()
    assert isinstance(updates[-1][1], Offer)
    assert gw.insurer.times[:2] == [0.0, 3.0]


async def test_429_with_retry_after_as_an_http_date_waits_until_then() -> None:
    clock_probe = FakeClock()  # the gateway's clock starts at the same moment
    when = http_date(clock_probe, 4.0)
    gw = Gateway([response(429, {}, {"retry-after": when}), created(100), QUOTED], dataclasses.replace(BASE))
    await gw.request()
    assert gw.insurer.times[:2] == [0.0, 4.0]


async def test_a_retry_after_past_the_deadline_gives_up_at_once_with_the_failures_reason() -> None:
    gw = Gateway([response(503, {}, {"retry-after": "30"})], dataclasses.replace(BASE))
    updates = await gw.request(deadline=10.0)
    assert updates[-1][0] == 0.0 and reason(updates) is Reason.INSURER_ERROR
    assert len(gw.insurer.calls) == 1


async def test_retries_stop_when_the_budget_is_spent() -> None:
    # No ratio, a reserve of 2 retries per 10 s window.
    settings = dataclasses.replace(BASE, retry_budget_ratio=0.0, retry_budget_min_per_s=0.2)
    gw = Gateway([response(503, {})], settings)
    assert reason(await gw.request(deadline=5.0)) is Reason.INSURER_ERROR
    assert len(gw.insurer.calls) == 3  # two retries: the whole budget
    updates = await gw.request(deadline=5.0)
    assert len(gw.insurer.calls) == 4  # no retry left
    last = updates[-1][1]
    assert isinstance(last, Failed) and "retry budget spent" in last.detail
    assert gw.guard.budget.exhausted_total == 1 and gw.guard.retries_total == 2


class RecordingClock(FakeClock):
    """A fake clock that remembers when each sleep would end."""

    def __init__(self) -> None:
        super().__init__()
        self.wake_ups: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.wake_ups.append(self.monotonic() + max(0.0, seconds))
        await super().sleep(seconds)


@pytest.mark.parametrize("seed", range(20))
async def test_nothing_sleeps_or_calls_past_the_deadline(seed: int) -> None:
    rng = random.Random(seed)
    deadline = rng.uniform(0.05, 3.0)
    settings = dataclasses.replace(BASE, retry_max_attempts=10, retry_base_s=0.2, retry_cap_s=1.0)
    clock = RecordingClock()
    failures: list[Step] = [UNAVAILABLE, response(503, {}), response(429, {}, {"retry-after": "0.3"})]
    steps = [rng.choice(failures)]
    insurer = Insurer(clock, [created(50), *[processing(50)] * 3, *steps])
    flow = OfferFlow(settings, DIALECTS["rest"], insurer, clock, InsurerGuard(settings, clock, rng=rng))
    updates: list[tuple[float, Update]] = []

    async def consume() -> None:
        async for update in flow.run(CREATE, deadline):
            updates.append((clock.monotonic(), update))

    task = asyncio.create_task(consume())
    await clock.advance(deadline + 10)
    assert task.done()
    await task
    assert all(wake <= deadline + 1e-9 for wake in clock.wake_ups)
    assert all(at + timeout <= deadline + 1e-9 for at, _, timeout in insurer.calls)
    assert updates[-1][0] <= deadline and isinstance(updates[-1][1], Failed)


# --- quota and bulkhead ---------------------------------------------------------------------


async def test_a_call_waits_for_the_quota_while_the_deadline_allows() -> None:
    settings = dataclasses.replace(BASE, rate_limit_per_s=1.0, rate_limit_burst=1)
    gw = Gateway([response(400, {"field": "vin"})], settings)
    first, second = gw.start(deadline=5.0), gw.start(deadline=5.0)
    await gw.clock.advance(6.0)
    assert first.task is not None and second.task is not None
    await first.task
    await second.task
    assert gw.insurer.times == [0.0, 1.0]  # the second waited one interval for its token


async def test_the_quota_refusing_within_the_deadline_is_rate_limited_without_a_call() -> None:
    settings = dataclasses.replace(BASE, rate_limit_per_s=1.0, rate_limit_burst=1)
    gw = Gateway([response(400, {"field": "vin"})], settings)
    first = gw.start(deadline=5.0)
    late = gw.start(deadline=0.5)  # the next token comes at 1.0
    await gw.clock.settle()
    assert first.task is not None and first.task.done()
    assert isinstance(late.last, Failed) and late.last.reason is Reason.RATE_LIMITED
    assert late.updates[-1][0] == 0.0  # at once
    assert len(gw.insurer.calls) == 1
    assert gw.guard.rate_limited_total == 1


async def test_polls_never_exceed_the_quota() -> None:
    settings = dataclasses.replace(BASE, rate_limit_per_s=2.0, rate_limit_burst=1)
    gw = Gateway([created(10), *[processing(10)] * 20, QUOTED], settings)
    await gw.request(deadline=20.0)
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(gw.insurer.times)]
    assert len(gaps) == 21 and min(gaps) >= 0.5  # the insurer hinted 10 ms; the quota allows 2/s


async def test_a_full_bulkhead_fails_the_call_at_once() -> None:
    settings = dataclasses.replace(BASE, max_in_flight=1)
    gw = Gateway([HANG], settings)
    hanging = gw.start(deadline=60.0)
    await gw.clock.settle()
    assert gw.insurer.in_flight == 1
    refused = gw.start(deadline=60.0)
    await gw.clock.settle()
    assert isinstance(refused.last, Failed) and refused.last.reason is Reason.UNAVAILABLE
    assert "in flight" in refused.last.detail
    assert len(gw.insurer.calls) == 1 and gw.guard.bulkhead.rejected_total == 1
    assert gw.guard.retries_total == 0  # a full bulkhead is not retried
    assert hanging.task is not None
    hanging.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hanging.task
    assert gw.guard.bulkhead.in_flight == 0


# --- adaptive polling -----------------------------------------------------------------------


async def test_without_a_hint_the_first_poll_comes_at_the_insurers_median_time_to_offer() -> None:
    gw = Gateway([created(), processing(), QUOTED, created(), QUOTED], dataclasses.replace(BASE))
    await gw.request()
    # Polls at 1.0 (not ready) and 2.5 (the offer): it was ready around 1.75 s after creation.
    assert gw.insurer.times == [0.0, 1.0, 2.5]
    assert gw.flow.ready_times.median() == 1.75
    start = gw.clock.monotonic()
    await gw.request()
    assert [round(t - start, 6) for t in gw.insurer.times[3:]] == [0.0, 1.75]


async def test_retry_after_on_a_pending_answer_is_honoured_beyond_the_poll_cap() -> None:
    pending = response(200, {"status": "PROCESSING"}, {"retry-after": "8"})
    gw = Gateway([created(100), pending, QUOTED], dataclasses.replace(BASE))
    await gw.request()
    assert gw.insurer.times == [0.0, 0.1, 8.1]


async def test_retry_after_as_an_http_date_on_a_pending_answer_paces_the_poll() -> None:
    clock_probe = FakeClock()
    pending = response(200, {"status": "PROCESSING"}, {"retry-after": http_date(clock_probe, 3.0)})
    gw = Gateway([created(1000), pending, QUOTED], dataclasses.replace(BASE))
    await gw.request()
    assert gw.insurer.times == [0.0, 1.0, 3.0]


async def test_the_bodys_exact_hint_wins_over_a_rounded_retry_after() -> None:
    pending = response(200, {"status": "PROCESSING", "estimatedReadyInMs": 300}, {"retry-after": "1"})
    gw = Gateway([created(100), pending, QUOTED], dataclasses.replace(BASE))
    await gw.request()
    assert gw.insurer.times == [0.0, 0.1, 0.4]


async def test_a_retry_after_beyond_the_deadline_ends_polling_at_once() -> None:
    pending = response(200, {"status": "PROCESSING"}, {"retry-after": "30"})
    gw = Gateway([created(100), pending], dataclasses.replace(BASE))
    updates = await gw.request(deadline=10.0)
    assert gw.insurer.times == [0.0, 0.1]
    assert reason(updates) is Reason.DEADLINE and updates[-1][0] == 0.1


# --- settings -------------------------------------------------------------------------------


def test_resilience_settings_have_the_documented_defaults() -> None:
    s = GatewaySettings.from_env(DEV_ENV | {"OSAGO_GATEWAY_INSURER": "alfa", "OSAGO_GATEWAY_BASE_URL": "http://x"})
    b = s.breaker_config()
    assert (b.window_type, b.window_size, b.minimum_calls, b.failure_rate_threshold) == ("count", 20, 10, 0.5)
    assert (b.slow_call_rate_threshold, b.slow_call_duration_s, b.open_duration_s, b.half_open_probes) == (
        1.0,
        4.0,
        10.0,
        2,
    )
    assert (s.rate_limit_per_s, s.rate_limit_burst) == (50.0, 100)
    assert s.retry_policy() == type(s.retry_policy())(base_s=0.1, cap_s=2.0, max_attempts=3)
    assert (s.retry_budget_ratio, s.max_in_flight, s.redis_url) == (0.2, 200, None)


def test_every_resilience_threshold_is_read_from_the_environment() -> None:
    env = {
        "OSAGO_GATEWAY_INSURER": "alfa",
        "OSAGO_GATEWAY_BASE_URL": "http://x",
        "OSAGO_GATEWAY_BREAKER_WINDOW_TYPE": "time",
        "OSAGO_GATEWAY_BREAKER_WINDOW": "30",
        "OSAGO_GATEWAY_BREAKER_MIN_CALLS": "5",
        "OSAGO_GATEWAY_BREAKER_FAILURE_RATE": "0.25",
        "OSAGO_GATEWAY_BREAKER_SLOW_CALL_RATE": "0.8",
        "OSAGO_GATEWAY_BREAKER_SLOW_CALL_S": "2",
        "OSAGO_GATEWAY_BREAKER_OPEN_S": "3",
        "OSAGO_GATEWAY_BREAKER_HALF_OPEN_PROBES": "1",
        "OSAGO_GATEWAY_RATE_LIMIT_PER_S": "7.5",
        "OSAGO_GATEWAY_RATE_LIMIT_BURST": "9",
        "OSAGO_GATEWAY_RETRY_MAX_ATTEMPTS": "4",
        "OSAGO_GATEWAY_RETRY_BASE_S": "0.05",
        "OSAGO_GATEWAY_RETRY_CAP_S": "1",
        "OSAGO_GATEWAY_RETRY_BUDGET_RATIO": "0.1",
        "OSAGO_GATEWAY_RETRY_BUDGET_MIN_PER_S": "0.5",
        "OSAGO_GATEWAY_RETRY_BUDGET_WINDOW_S": "20",
        "OSAGO_GATEWAY_MAX_IN_FLIGHT": "50",
        "OSAGO_GATEWAY_READY_WINDOW": "7",
        "OSAGO_REDIS_URL": "redis://redis:6379/0",
        "OSAGO_GATEWAY_REDIS_TIMEOUT_S": "0.1",
        "OSAGO_GATEWAY_REDIS_RETRY_S": "5",
    }
    s = GatewaySettings.from_env(DEV_ENV | env)
    b = s.breaker_config()
    assert (b.window_type, b.window_size, b.minimum_calls, b.failure_rate_threshold) == ("time", 30, 5, 0.25)
    assert (b.slow_call_rate_threshold, b.slow_call_duration_s, b.open_duration_s, b.half_open_probes) == (
        0.8,
        2.0,
        3.0,
        1,
    )
    assert (s.rate_limit_per_s, s.rate_limit_burst, s.max_in_flight, s.ready_window) == (7.5, 9, 50, 7)
    p = s.retry_policy()
    assert (p.max_attempts, p.base_s, p.cap_s) == (4, 0.05, 1.0)
    assert (s.retry_budget_ratio, s.retry_budget_min_per_s, s.retry_budget_window_s) == (0.1, 0.5, 20.0)
    assert (s.redis_url, s.redis_timeout_s, s.redis_retry_s) == ("redis://redis:6379/0", 0.1, 5.0)


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("OSAGO_GATEWAY_BREAKER_FAILURE_RATE", "1.5", "failure_rate_threshold"),
        ("OSAGO_GATEWAY_BREAKER_WINDOW_TYPE", "sliding", "breaker_window_type"),
        ("OSAGO_GATEWAY_BREAKER_MIN_CALLS", "ten", "OSAGO_GATEWAY_BREAKER_MIN_CALLS"),
        ("OSAGO_GATEWAY_RATE_LIMIT_PER_S", "0", "rate_per_s"),
        ("OSAGO_GATEWAY_RETRY_MAX_ATTEMPTS", "0", "max_attempts"),
        ("OSAGO_GATEWAY_RETRY_CAP_S", "0.01", "base_s <= cap_s"),
        ("OSAGO_GATEWAY_MAX_IN_FLIGHT", "0", "max_in_flight"),
        ("OSAGO_REDIS_URL", "http://redis", "redis_url"),
    ],
)
def test_nonsense_resilience_settings_fail_fast(variable: str, value: str, named: str) -> None:
    env = {"OSAGO_GATEWAY_INSURER": "alfa", "OSAGO_GATEWAY_BASE_URL": "http://x", variable: value}
    with pytest.raises(SettingsError, match=named):
        GatewaySettings.from_env(DEV_ENV | env)


def test_a_guard_takes_an_injected_rate_limiter() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(RateLimitConfig(1.0, 1), clock)
    assert InsurerGuard(BASE, clock, limiter).limiter is limiter


@dataclass
class FlakyShared:
    """A shared quota whose Redis is down while `down` is set."""

    down: bool = True
    calls: int = 0
    waits_total: int = 0

    async def acquire(self, deadline: float | None) -> bool:
        self.calls += 1
        if self.down:
            raise redis.ConnectionError("refused")
        return True

    async def try_acquire(self) -> float:
        return 0.0 if await self.acquire(None) else 1.0


async def test_while_redis_fails_the_local_quota_is_used_and_redis_is_retried_after_the_cooldown() -> None:
    clock = FakeClock()
    shared = FlakyShared()
    local = LocalRateLimiter(RateLimitConfig(1.0, 2), clock)
    limiter = FallbackRateLimiter(shared, local, "alfa", clock, cooldown_s=1.0)
    assert await limiter.acquire(None) and await limiter.try_acquire() == 0.0  # the local burst
    assert shared.calls == 1 and limiter.failing  # one failure, then Redis left alone
    assert not await limiter.acquire(clock.monotonic() + 0.5)  # the local quota is spent
    await clock.advance(1.0)
    shared.down = False
    assert await limiter.acquire(None)
    assert shared.calls == 2 and not limiter.failing and limiter.errors_total == 1
