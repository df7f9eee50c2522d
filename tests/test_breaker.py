"""The circuit breaker's state machine, driven by a fake clock: every transition, exactly."""

from __future__ import annotations

import asyncio

import pytest

from osago_common.breaker import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    Permit,
)
from osago_common.clock import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
FAST = 0.1


def make(clock: FakeClock, **overrides: object) -> CircuitBreaker:
    settings: dict[str, object] = {
        "window_size": 10,
        "minimum_calls": 4,
        "failure_rate_threshold": 0.5,
        "open_duration_s": 10.0,
        "half_open_probes": 2,
    }
    settings.update(overrides)
    return CircuitBreaker(BreakerConfig(**settings), clock)  # type: ignore[arg-type]


def permit(breaker: CircuitBreaker) -> Permit:
    granted = breaker.try_acquire()
    assert granted is not None
    return granted


def succeed(breaker: CircuitBreaker, times: int = 1, duration: float = FAST) -> None:
    for _ in range(times):
        permit(breaker).success(duration)


def fail(breaker: CircuitBreaker, times: int = 1, duration: float = FAST) -> None:
    for _ in range(times):
        permit(breaker).failure(duration)


async def open_breaker(clock: FakeClock, **overrides: object) -> CircuitBreaker:
    breaker = make(clock, **overrides)
    fail(breaker, breaker.config.minimum_calls)
    assert breaker.state is OPEN
    return breaker


async def test_breaker_starts_closed_and_lets_calls_through() -> None:
    breaker = make(FakeClock())
    assert breaker.state is CLOSED
    succeed(breaker, 50)
    assert breaker.state is CLOSED
    assert breaker.rejected_total == 0


async def test_failures_do_not_open_before_minimum_calls() -> None:
    breaker = make(FakeClock(), minimum_calls=5)
    fail(breaker, 4)  # 100 % failures, but only 4 calls
    assert breaker.state is CLOSED
    fail(breaker)
    assert breaker.state is OPEN
    assert breaker.opened_total == 1


async def test_opens_when_failure_rate_reaches_threshold() -> None:
    breaker = make(FakeClock(), minimum_calls=4, failure_rate_threshold=0.5)
    succeed(breaker, 3)
    fail(breaker, 2)  # 2 / 5 = 40 %
    assert breaker.state is CLOSED
    fail(breaker)  # 3 / 6 = 50 %: at the threshold
    assert breaker.state is OPEN


async def test_failure_rate_below_threshold_keeps_it_closed() -> None:
    breaker = make(FakeClock(), window_size=10, minimum_calls=10, failure_rate_threshold=0.5)
    for _ in range(20):  # S S F, S S F, ...: never more than 4 failures in 10 calls
        succeed(breaker, 2)
        fail(breaker)
    assert breaker.state is CLOSED
    # The last 10 calls hold 4 failures (calls 51, 54, 57, 60); one more keeps 4 of 10 (51 left),
    # a second makes 5 of 10.
    fail(breaker)
    assert breaker.state is CLOSED
    fail(breaker)
    assert breaker.state is OPEN


async def test_count_window_forgets_calls_older_than_its_size() -> None:
    breaker = make(FakeClock(), window_size=4, minimum_calls=4)
    fail(breaker)
    succeed(breaker, 3)
    fail(breaker)  # window: S S S F — the first failure has left it
    assert breaker.state is CLOSED
    fail(breaker)  # S S F F = 50 %
    assert breaker.state is OPEN


async def test_count_window_smaller_than_minimum_calls_can_still_open() -> None:
    breaker = make(FakeClock(), window_size=3, minimum_calls=10)
    fail(breaker, 3)
    assert breaker.state is OPEN


async def test_slow_calls_count_by_slow_call_duration() -> None:
    breaker = make(FakeClock(), minimum_calls=4, slow_call_duration_s=4.0, slow_call_rate_threshold=0.75)
    succeed(breaker, 2, duration=3.999)  # not slow
    succeed(breaker, 2, duration=4.0)  # slow: at the duration
    assert breaker.state is CLOSED
    succeed(breaker, 2, duration=10.0)  # 4 slow of 6
    assert breaker.state is CLOSED
    succeed(breaker, 2, duration=10.0)  # 6 slow of 8 = 75 %
    assert breaker.state is OPEN


async def test_slow_failures_count_as_both_failed_and_slow() -> None:
    breaker = make(FakeClock(), minimum_calls=4, failure_rate_threshold=1.0, slow_call_rate_threshold=0.5)
    succeed(breaker, 2)
    fail(breaker, 2, duration=5.0)
    assert breaker.state is OPEN


async def test_time_window_keeps_calls_younger_than_window_seconds() -> None:
    clock = FakeClock()
    breaker = make(clock, window_type="time", window_size=10, minimum_calls=4)
    fail(breaker, 3)  # at t = 0
    await clock.advance(9.5)
    fail(breaker)  # 4 failures within 10 s
    assert breaker.state is OPEN


async def test_time_window_drops_old_calls_as_the_clock_moves() -> None:
    clock = FakeClock()
    breaker = make(clock, window_type="time", window_size=10, minimum_calls=4)
    fail(breaker, 3)  # t = 0
    await clock.advance(10.0)  # the bucket of second 0 has left the window
    fail(breaker)  # only 1 call in the window now (4 failures would open it)
    assert breaker.state is CLOSED
    succeed(breaker, 3)  # 1 failure of 4
    assert breaker.state is CLOSED


async def test_time_window_slides_second_by_second() -> None:
    async def opens(earlier_at: float, third_at: float) -> bool:
        """Two failures at `earlier_at`, a third at `third_at`: all three in the window (the
        minimum) open the breaker, so it opens exactly while the earlier second is kept."""
        clock = FakeClock()
        breaker = make(clock, window_type="time", window_size=10, minimum_calls=3, failure_rate_threshold=1.0)
        await clock.advance(earlier_at)
        fail(breaker, 2)
        await clock.advance(third_at - earlier_at)
        fail(breaker)
        return breaker.state is OPEN

    assert await opens(0.0, 9.5)  # second 0 is kept until t = 10
    assert not await opens(0.0, 10.0)
    assert await opens(5.5, 14.9)  # the bucket of second 5: seconds 5..14 are kept at t = 14.9
    assert not await opens(5.5, 15.0)  # seconds 6..15


async def test_open_breaker_fails_fast_without_a_permit() -> None:
    clock = FakeClock()
    breaker = await open_breaker(clock)
    for _ in range(5):
        assert breaker.try_acquire() is None
    assert breaker.rejected_total == 5
    await clock.advance(9.999)
    assert breaker.try_acquire() is None
    assert breaker.state is OPEN
    assert breaker.retry_after_s() == pytest.approx(0.001)


async def test_open_turns_half_open_after_open_duration_on_access() -> None:
    clock = FakeClock()
    breaker = await open_breaker(clock, open_duration_s=10.0)
    await clock.advance(10.0)
    assert breaker.state is HALF_OPEN
    assert breaker.retry_after_s() is None


async def test_half_open_closes_when_every_probe_succeeds_with_a_fresh_window() -> None:
    clock = FakeClock()
    breaker = await open_breaker(clock, half_open_probes=2)
    await clock.advance(10.0)
    first, second = permit(breaker), permit(breaker)
    first.success(FAST)
    assert breaker.state is HALF_OPEN
    second.success(FAST)
    assert breaker.state is CLOSED
    fail(breaker, 3)  # below minimum_calls again: the window of 4 failures was reset
    assert breaker.state is CLOSED


async def test_half_open_reopens_on_a_probe_failure() -> None:
    clock = FakeClock()
    breaker = await open_breaker(clock, half_open_probes=2)
    await clock.advance(10.0)
    first, second = permit(breaker), permit(breaker)
    first.success(FAST)
    second.failure(FAST)
    assert breaker.state is OPEN
    assert breaker.opened_total == 2
    assert breaker.try_acquire() is None
    await clock.advance(9.0)
    assert breaker.state is OPEN  # a full open_duration again, counted from the reopening
    await clock.advance(1.0)
    assert breaker.state is HALF_OPEN


async def test_half_open_reopens_when_probes_are_slow() -> None:
    clock = FakeClock()
    breaker = await open_breaker(clock, half_open_probes=2, slow_call_duration_s=4.0)
    await clock.advance(10.0)
    succeed(breaker, 2, duration=5.0)  # slow rate 100 % >= the default threshold of 1.0
    assert breaker.state is OPEN


async def test_half_open_gives_permits_only_to_the_probes_others_fail_fast() -> None:
    clock = FakeClock()
    breaker = await open_breaker(clock, half_open_probes=2)
    await clock.advance(10.0)
    rejected_before = breaker.rejected_total
    permits = [breaker.try_acquire() for _ in range(10)]
    granted = [p for p in permits if p is not None]
    assert len(granted) == 2
    assert breaker.rejected_total == rejected_before + 8
    granted[0].success(FAST)
    # One probe succeeded, one is in flight: both slots are used until the verdict.
    assert breaker.try_acquire() is None
    granted[1].success(FAST)
    assert breaker.state is CLOSED


async def test_concurrent_callers_in_half_open_only_probes_reach_the_insurer() -> None:
    clock = FakeClock()
    breaker = await open_breaker(clock, half_open_probes=2)
    await clock.advance(10.0)
    reached = 0
    release = asyncio.Event()

    async def caller() -> str:
        nonlocal reached
        granted = breaker.try_acquire()
        if granted is None:
            return "fast-fail"
        reached += 1
        await release.wait()
        granted.success(FAST)
        return "called"

    tasks = [asyncio.create_task(caller()) for _ in range(20)]
    await clock.settle()
    assert reached == 2
    release.set()
    results = await asyncio.gather(*tasks)
    assert results.count("called") == 2
    assert results.count("fast-fail") == 18
    assert breaker.state is CLOSED


async def test_release_frees_a_half_open_slot_without_a_verdict() -> None:
    clock = FakeClock()
    breaker = await open_breaker(clock, half_open_probes=1)
    await clock.advance(10.0)
    probe = permit(breaker)
    assert breaker.try_acquire() is None
    probe.release()
    assert breaker.state is HALF_OPEN  # no verdict
    permit(breaker).success(FAST)
    assert breaker.state is CLOSED


async def test_a_permit_reports_only_once() -> None:
    clock = FakeClock()
    breaker = await open_breaker(clock, half_open_probes=1)
    await clock.advance(10.0)
    probe = permit(breaker)
    probe.success(FAST)
    probe.failure(FAST)
    probe.release()
    assert breaker.state is CLOSED


async def test_verdicts_of_calls_from_an_earlier_state_are_ignored() -> None:
    clock = FakeClock()
    breaker = make(clock, minimum_calls=4)
    late = permit(breaker)  # granted while closed
    fail(breaker, 4)
    assert breaker.state is OPEN
    await clock.advance(10.0)
    probes = [permit(breaker), permit(breaker)]
    late.failure(FAST)  # from the closed state: must not reopen the half-open breaker
    assert breaker.state is HALF_OPEN
    for probe in probes:
        probe.success(FAST)
    assert breaker.state is CLOSED


async def test_transitions_are_reported_to_the_listener() -> None:
    clock = FakeClock()
    seen: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(
        BreakerConfig(minimum_calls=1, half_open_probes=1), clock, on_transition=lambda a, b: seen.append((a, b))
    )
    fail(breaker)
    await clock.advance(10.0)
    succeed(breaker)
    assert seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


@pytest.mark.parametrize(
    "overrides",
    [
        {"window_type": "sliding"},
        {"window_size": 0},
        {"minimum_calls": 0},
        {"half_open_probes": 0},
        {"failure_rate_threshold": 0.0},
        {"slow_call_rate_threshold": 1.5},
        {"open_duration_s": 0.0},
    ],
)
def test_invalid_config_is_refused(overrides: dict[str, object]) -> None:
    [name] = overrides  # the message (shown as a settings error) names the option
    with pytest.raises(ValueError, match=f"^{name} must"):
        BreakerConfig(**overrides)  # type: ignore[arg-type]
