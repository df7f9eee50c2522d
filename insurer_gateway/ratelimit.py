"""The insurer's quota as a GCRA rate limiter: in-process, or in Redis shared by every replica.

GCRA keeps one number per quota, the theoretical arrival time (TAT). A call at `now` is admitted
when `max(TAT, now) + interval - now <= burst * interval`, and then moves TAT forward by one
interval: up to `burst` calls at once, then one every `1 / rate_per_s` seconds. Both
implementations compute in whole microseconds, so their arithmetic is exact and identical.

A call that must wait reserves its slot first and then sleeps until it, so waiters are served in
order without polling; a waiter cancelled while sleeping leaves its slot unused (the quota errs on
the safe side). A wait that would pass the deadline is refused at once, without reserving.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio

from osago_common.clock import Clock

_US = 1_000_000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateLimitConfig:
    """`rate_per_s` calls per second on average, up to `burst` at once."""

    rate_per_s: float
    burst: int

    def __post_init__(self) -> None:
        if not 0.0 < self.rate_per_s <= _US:
            raise ValueError("rate_per_s must be in (0, 1000000]")
        if self.burst < 1:
            raise ValueError("burst must be at least 1")

    @property
    def interval_us(self) -> int:
        return max(1, round(_US / self.rate_per_s))


class RateLimiter(Protocol):
    async def acquire(self, deadline: float | None) -> bool:
        """Takes a token, waiting only while `deadline` (clock.monotonic scale) allows.

        False at once when the wait needed would end past the deadline; never sleeps past it.
        """

    async def try_acquire(self) -> float:
        """0.0 when a token was taken now, else the seconds to wait for one (nothing taken)."""

    @property
    def waits_total(self) -> int:
        """Calls `acquire` admitted after a wait for their slot (osago_quota_waits_total)."""


class _Reserver(Protocol):
    waits_total: int

    async def reserve(self, max_wait_us: int | None) -> tuple[bool, int]: ...


def _wait_limit_us(clock: Clock, deadline: float | None) -> int | None:
    """The longest wait the deadline allows, in microseconds; None when unbounded."""
    if deadline is None:
        return None
    # Whole microseconds, rounded down; the epsilon absorbs float noise at an exact boundary.
    return math.floor((deadline - clock.monotonic()) * _US + 1e-6)


async def _acquire(limiter: _Reserver, clock: Clock, deadline: float | None) -> bool:
    max_wait_us = _wait_limit_us(clock, deadline)
    if max_wait_us is not None and max_wait_us < 0:
        return False
    admitted, wait_us = await limiter.reserve(max_wait_us)
    if not admitted:
        return False
    wait = wait_us / _US
    if deadline is not None and clock.monotonic() + wait > deadline + 1e-6:  # µs granularity
        # The reservation took long enough (a slow round trip to Redis) that its slot now falls
        # past the deadline: give up on it rather than sleep past the deadline or call early.
        return False
    if wait > 0:
        limiter.waits_total += 1
        await clock.sleep(wait)
    return True


class LocalRateLimiter:
    """The quota of one process (for a single replica, or when no Redis is configured)."""

    def __init__(self, config: RateLimitConfig, clock: Clock) -> None:
        self.config = config
        self._clock = clock
        self._tat_us: int | None = None
        self.waits_total = 0

    async def reserve(self, max_wait_us: int | None) -> tuple[bool, int]:
        """(admitted, µs until the slot): reserves a slot unless its wait exceeds `max_wait_us`."""
        now = round(self._clock.monotonic() * _US)
        interval = self.config.interval_us
        tat = now if self._tat_us is None else max(self._tat_us, now)
        wait = max(0, tat + interval - now - self.config.burst * interval)
        if max_wait_us is not None and wait > max_wait_us:
            return False, wait
        self._tat_us = tat + interval
        return True, wait

    async def acquire(self, deadline: float | None) -> bool:
        return await _acquire(self, self._clock, deadline)

    async def try_acquire(self) -> float:
        admitted, wait_us = await self.reserve(0)
        return 0.0 if admitted else wait_us / _US


# KEYS[1]: the quota's key. ARGV: interval µs, burst, longest wait µs (-1: unbounded), and an
# optional "now" in µs (tests only; otherwise the server's clock, shared by every replica).
# Returns {admitted 0/1, wait µs}. The key expires once the bucket would be full again.
GCRA_LUA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local wait = tat + interval - now - burst * interval
if wait < 0 then wait = 0 end
if max_wait >= 0 and wait > max_wait then
  return {0, wait}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
           'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
return {1, wait}
"""


class RedisRateLimiter:
    """The quota shared by every replica using the same Redis `key`, on the server's clock.

    `server_time=False` makes the script use this process's clock instead: only for tests that
    drive time with a fake clock, never with several replicas.
    """

    def __init__(
        self,
        config: RateLimitConfig,
        redis: redis.asyncio.Redis,
        key: str,
        clock: Clock,
        *,
        server_time: bool = True,
    ) -> None:
        self.config = config
        self._script = redis.register_script(GCRA_LUA)
        self._key = key
        self._clock = clock
        self._server_time = server_time
        self.waits_total = 0

    async def reserve(self, max_wait_us: int | None) -> tuple[bool, int]:
        """(admitted, µs until the slot), atomically in Redis; see LocalRateLimiter.reserve."""
        args: list[int] = [
            self.config.interval_us,
            self.config.burst,
            -1 if max_wait_us is None else max_wait_us,
        ]
        if not self._server_time:
            args.append(round(self._clock.monotonic() * _US))
        admitted, wait_us = await self._script(keys=[self._key], args=args)
        return bool(admitted), int(wait_us)

    async def acquire(self, deadline: float | None) -> bool:
        return await _acquire(self, self._clock, deadline)

    async def try_acquire(self) -> float:
        admitted, wait_us = await self.reserve(0)
        return 0.0 if admitted else wait_us / _US


class FallbackRateLimiter:
    """The quota shared in Redis; while Redis fails, this process's own quota instead.

    A Redis outage then neither stops every call (failing closed would take down all insurers
    with Redis) nor lifts the quota altogether: each replica keeps to the full quota on its own,
    so the insurer may see up to (replicas × quota) until Redis is back. After a failure Redis is
    left alone for `cooldown_s`, so a hung Redis costs one timeout per cool-down, not one per
    call. Logged on each change.
    """

    def __init__(self, shared: RateLimiter, local: RateLimiter, name: str, clock: Clock, cooldown_s: float) -> None:
        self._shared = shared
        self._local = local
        self._name = name
        self._clock = clock
        self._cooldown_s = cooldown_s
        self._retry_at: float | None = None  # while failing: when to try Redis again
        self.errors_total = 0

    @property
    def failing(self) -> bool:
        return self._retry_at is not None

    @property
    def waits_total(self) -> int:
        return self._shared.waits_total + self._local.waits_total

    async def acquire(self, deadline: float | None) -> bool:
        if self._cooling():
            return await self._local.acquire(deadline)
        try:
            admitted = await self._shared.acquire(deadline)
        except redis.RedisError as exc:
            self._failed(exc)
            return await self._local.acquire(deadline)
        self._recovered()
        return admitted

    async def try_acquire(self) -> float:
        if self._cooling():
            return await self._local.try_acquire()
        try:
            wait = await self._shared.try_acquire()
        except redis.RedisError as exc:
            self._failed(exc)
            return await self._local.try_acquire()
        self._recovered()
        return wait

    def _cooling(self) -> bool:
        return self._retry_at is not None and self._clock.monotonic() < self._retry_at

    def _failed(self, exc: Exception) -> None:
        self.errors_total += 1
        if self._retry_at is None:
            log.warning("rate limit %s: Redis failed (%s); using this process's quota", self._name, type(exc).__name__)
        self._retry_at = self._clock.monotonic() + self._cooldown_s

    def _recovered(self) -> None:
        if self._retry_at is not None:
            self._retry_at = None
            log.warning("rate limit %s: Redis is back; using the shared quota", self._name)
