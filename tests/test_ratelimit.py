"""The GCRA rate limiter: exact admission counts over simulated time, in-process and in a real
Redis (started by the fixture), and one quota shared by two replicas."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio

from insurer_gateway.ratelimit import (
    LocalRateLimiter,
    RateLimitConfig,
    RateLimiter,
    RedisRateLimiter,
)
from osago_common.clock import SYSTEM_CLOCK, FakeClock, SystemClock
from osago_mesh.servers import redis_server

MakeLimiter = Callable[[RateLimitConfig, FakeClock], RateLimiter]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def new_key() -> str:
    return f"test:ratelimit:{uuid.uuid4().hex}"


functional = pytest.mark.functional


@pytest.fixture(params=["local", pytest.param("redis", marks=functional)])
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[MakeLimiter]:
    """Both implementations, on the fake clock (the Redis script then takes the test's time)."""
    if request.param == "local":
        yield LocalRateLimiter
        return
    client = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_url"))

    def make(config: RateLimitConfig, clock: FakeClock) -> RateLimiter:
        return RedisRateLimiter(config, client, new_key(), clock, server_time=False)

    try:
        yield make
    finally:
        await client.aclose()


async def until(condition: Callable[[], bool]) -> None:
    """Waits (in short real steps, ten seconds at most) for tasks to reach a state, e.g. to start
    sleeping once their round trip to Redis is done."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def drain(limiter: RateLimiter) -> int:
    """Takes every token available right now."""
    admitted = 0
    while await limiter.try_acquire() == 0.0:
        admitted += 1
    return admitted


# --- the algorithm, on simulated time, for both implementations ---


async def test_a_full_bucket_admits_exactly_burst_then_says_how_long_to_wait(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(RateLimitConfig(rate_per_s=10, burst=5), FakeClock())
    assert [await limiter.try_acquire() for _ in range(5)] == [0.0] * 5
    assert await limiter.try_acquire() == 0.1
    assert await limiter.try_acquire() == 0.1  # a refusal takes nothing


async def test_exact_admission_counts_over_simulated_time(make_limiter: MakeLimiter) -> None:
    clock = FakeClock()
    limiter = make_limiter(RateLimitConfig(rate_per_s=10, burst=5), clock)
    per_second = [await drain(limiter)]
    for _ in range(10):
        admitted = 0
        for _ in range(40):
            await clock.advance(0.025)
            admitted += await drain(limiter)
        per_second.append(admitted)
    assert per_second == [5] + [10] * 10


async def test_fractional_rate_admits_one_call_every_interval(make_limiter: MakeLimiter) -> None:
    clock = FakeClock()
    limiter = make_limiter(RateLimitConfig(rate_per_s=0.5, burst=1), clock)
    admitted_at = []
    for tick in range(101):  # t = 0 .. 10 s in 0.1 s steps
        if await limiter.try_acquire() == 0.0:
            admitted_at.append(tick / 10)
        await clock.advance(0.1)
    assert admitted_at == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]


async def test_an_idle_bucket_refills_only_up_to_burst(make_limiter: MakeLimiter) -> None:
    clock = FakeClock()
    limiter = make_limiter(RateLimitConfig(rate_per_s=10, burst=3), clock)
    assert await drain(limiter) == 3
    await clock.advance(0.2)
    assert await drain(limiter) == 2
    await clock.advance(3600)
    assert await drain(limiter) == 3


async def test_acquire_waits_for_the_next_token_within_the_deadline(
    make_limiter: MakeLimiter,
) -> None:
    clock = FakeClock()
    limiter = make_limiter(RateLimitConfig(rate_per_s=10, burst=1), clock)
    assert await limiter.acquire(deadline=None)
    task = asyncio.create_task(limiter.acquire(deadline=1.0))
    await until(lambda: clock.sleepers == 1)
    await clock.advance(0.099)
    assert not task.done()
    await clock.advance(0.001)
    assert task.done() and task.result() is True
    assert clock.monotonic() == pytest.approx(0.1)


async def test_acquire_refuses_at_once_when_the_wait_would_pass_the_deadline(
    make_limiter: MakeLimiter,
) -> None:
    clock = FakeClock()
    limiter = make_limiter(RateLimitConfig(rate_per_s=10, burst=1), clock)
    assert await limiter.try_acquire() == 0.0
    assert await limiter.acquire(deadline=0.099) is False  # the token comes at 0.1
    assert clock.monotonic() == 0.0 and clock.sleepers == 0
    assert await limiter.acquire(deadline=-1.0) is False  # deadline already passed
    # The refusals reserved nothing: the token is still there at 0.1.
    await clock.advance(0.1)
    assert await limiter.try_acquire() == 0.0


async def test_acquire_with_the_deadline_exactly_at_the_token_is_admitted(
    make_limiter: MakeLimiter,
) -> None:
    clock = FakeClock()
    limiter = make_limiter(RateLimitConfig(rate_per_s=4, burst=1), clock)
    assert await limiter.try_acquire() == 0.0
    task = asyncio.create_task(limiter.acquire(deadline=0.25))
    await until(lambda: clock.sleepers == 1)
    await clock.advance(0.25)
    assert await task is True


async def test_a_slot_pushed_past_the_deadline_by_a_slow_reservation_is_given_up() -> None:
    clock = FakeClock()

    class SlowRoundTrip(LocalRateLimiter):
        async def reserve(self, max_wait_us: int | None) -> tuple[bool, int]:
            result = await super().reserve(max_wait_us)
            await clock.advance(0.05)  # the answer arrives 50 ms later
            return result

    limiter = SlowRoundTrip(RateLimitConfig(rate_per_s=10, burst=1), clock)
    assert await limiter.acquire(deadline=None)  # answered at 0.05
    # At 0.05 a wait of 0.05 fits the deadline 0.12, so the slot at 0.1 is reserved; but the
    # answer comes at 0.10, and sleeping 0.05 from there would end at 0.15, past the deadline.
    assert await limiter.acquire(deadline=0.12) is False
    assert clock.monotonic() == pytest.approx(0.10)
    assert clock.sleepers == 0
    # The abandoned slot stays used: the quota errs on the safe side.
    assert await limiter.try_acquire() == pytest.approx(0.1)


async def test_acquire_at_a_float_unfriendly_time_is_admitted_exactly_at_the_deadline() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(RateLimitConfig(rate_per_s=5, burst=1), clock)
    await clock.advance(0.1)
    assert await limiter.try_acquire() == 0.0  # next token at 0.3; 0.1 + 0.2 != 0.3 in floats
    task = asyncio.create_task(limiter.acquire(deadline=0.3))
    await clock.settle()
    assert clock.sleepers == 1
    await clock.advance(0.2)
    assert await task is True


async def test_waiters_are_admitted_one_interval_apart_in_arrival_order() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(RateLimitConfig(rate_per_s=10, burst=1), clock)
    finished: list[tuple[int, float]] = []

    async def waiter(number: int) -> None:
        assert await limiter.acquire(deadline=None)
        finished.append((number, clock.monotonic()))

    tasks = [asyncio.create_task(waiter(n)) for n in range(5)]
    await clock.advance(1.0)
    await asyncio.gather(*tasks)
    assert [n for n, _ in finished] == [0, 1, 2, 3, 4]
    assert [at for _, at in finished] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


async def test_random_load_never_waits_past_a_deadline_nor_exceeds_the_quota() -> None:
    clock = FakeClock()
    config = RateLimitConfig(rate_per_s=5, burst=3)
    limiter = LocalRateLimiter(config, clock)
    rng = random.Random(7)
    admitted_at: list[float] = []
    refused = 0

    async def caller(start: float, patience: float) -> None:
        nonlocal refused
        await clock.sleep(start)
        deadline = clock.monotonic() + patience
        if await limiter.acquire(deadline):
            assert clock.monotonic() <= deadline + 1e-9
            admitted_at.append(clock.monotonic())
        else:
            assert clock.monotonic() == pytest.approx(deadline - patience)  # refused at once
            refused += 1

    tasks = [asyncio.create_task(caller(rng.uniform(0, 20), rng.choice([0.0, 0.1, 0.5, 2.0]))) for _ in range(300)]
    await clock.advance(30)
    await asyncio.gather(*tasks)
    assert refused > 0 and len(admitted_at) > 0
    admitted_at.sort()
    # In any span of `w` seconds at most burst + rate × w calls are admitted.
    for i, start in enumerate(admitted_at):
        for j in range(i, len(admitted_at)):
            span = admitted_at[j] - start
            assert j - i + 1 <= config.burst + config.rate_per_s * span + 1e-6
    assert len(admitted_at) <= config.burst + config.rate_per_s * 22


def test_invalid_config_is_refused() -> None:
    with pytest.raises(ValueError, match=r"rate_per_s must be in \(0, 1000000\]"):
        RateLimitConfig(rate_per_s=0, burst=1)
    with pytest.raises(ValueError, match="burst must be at least 1"):
        RateLimitConfig(rate_per_s=1, burst=0)


# --- the Redis limiter on the server's own clock ---


@functional
async def test_redis_admits_exactly_burst_and_sets_a_ttl(redis_client: redis.asyncio.Redis) -> None:
    key = new_key()
    limiter = RedisRateLimiter(RateLimitConfig(rate_per_s=0.01, burst=5), redis_client, key, SYSTEM_CLOCK)
    assert await drain(limiter) == 5
    wait = await limiter.try_acquire()
    assert 90.0 < wait <= 100.0  # one token per 100 s, less the (server) time since the last
    ttl_ms = await redis_client.pttl(key)
    assert 0 < ttl_ms <= 500_000  # the key lapses once the bucket would be full again


class RecordingClock(SystemClock):
    """The real clock, noting how long each sleep was asked for."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await super().sleep(seconds)


@functional
async def test_redis_refills_over_real_time(redis_client: redis.asyncio.Redis) -> None:
    clock = RecordingClock()
    limiter = RedisRateLimiter(RateLimitConfig(rate_per_s=2, burst=1), redis_client, new_key(), clock)
    assert await limiter.try_acquire() == 0.0
    # The next token is up to 0.5 s away on the server's clock: refused at once, without a wait.
    assert await limiter.acquire(deadline=clock.monotonic() + 0.005) is False
    assert clock.slept == []
    # Admitted after sleeping what is left of the interval, as Redis computed it.
    assert await limiter.acquire(deadline=clock.monotonic() + 5.0) is True
    [waited] = clock.slept
    assert 0.0 < waited <= 0.5


@functional
async def test_redis_script_is_reloaded_after_a_script_flush(redis_client: redis.asyncio.Redis) -> None:
    limiter = RedisRateLimiter(RateLimitConfig(rate_per_s=0.01, burst=2), redis_client, new_key(), SYSTEM_CLOCK)
    assert await limiter.try_acquire() == 0.0
    await redis_client.script_flush()
    assert await limiter.try_acquire() == 0.0
    assert await limiter.try_acquire() > 0.0


@functional
async def test_two_replicas_sharing_a_key_never_admit_more_than_the_burst(redis_url: str) -> None:
    key = new_key()
    config = RateLimitConfig(rate_per_s=0.01, burst=10)  # no refill within the test
    clients = [redis.asyncio.Redis.from_url(redis_url) for _ in range(2)]
    try:
        replicas = [RedisRateLimiter(config, client, key, SYSTEM_CLOCK) for client in clients]
        results = await asyncio.gather(*(r.try_acquire() for r in replicas for _ in range(100)))
        assert results.count(0.0) == 10
    finally:
        for client in clients:
            await client.aclose()


@functional
async def test_two_replicas_waiting_for_tokens_share_one_quota(redis_url: str) -> None:
    key = new_key()
    config = RateLimitConfig(rate_per_s=50, burst=5)
    clients = [redis.asyncio.Redis.from_url(redis_url) for _ in range(2)]
    # Both replicas on one fake clock, whose time the Redis script then takes: the slots are exact.
    clock = FakeClock()
    try:
        replicas = [RedisRateLimiter(config, client, key, clock, server_time=False) for client in clients]
        deadline = 0.2
        admitted_at: list[float] = []

        async def call(limiter: RedisRateLimiter) -> None:
            if await limiter.acquire(deadline):
                admitted_at.append(clock.monotonic())

        calls = [asyncio.create_task(call(r)) for r in replicas for _ in range(40)]
        # Each caller is answered at once (admitted from the burst, or refused) or sleeps until
        # its reserved slot.
        await until(lambda: sum(c.done() for c in calls) + clock.sleepers == len(calls))
        await clock.advance(1.0)
        await asyncio.gather(*calls)
        # Together: the burst at once, then one slot every 20 ms up to the deadline, none past it.
        assert sorted(admitted_at) == pytest.approx([0.0] * 5 + [0.02 * k for k in range(1, 11)])
    finally:
        for client in clients:
            await client.aclose()
