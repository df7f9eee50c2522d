"""Injectable clocks: the real one, and a fake one for exact, sleep-free tests of timing logic."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp


class Clock(Protocol):
    """Time as the services see it."""

    def monotonic(self) -> float:
        """Seconds on a monotonic scale, for deadlines and durations."""

    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware (UTC)."""

    async def sleep(self, seconds: float) -> None:
        """Waits `seconds` of this clock's time."""


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_timestamp(stamp: Timestamp, moment: datetime) -> None:
    """`stamp` set to `moment` (timezone-aware), exactly as `stamp.FromDatetime(moment)` sets it,
    in a sixth of the time: FromDatetime goes through a time tuple and `calendar.timegm`, about
    5 µs here, and the aggregator stamps some thirty events a session."""
    since = moment - _EPOCH
    stamp.seconds = since.days * 86_400 + since.seconds
    stamp.nanos = since.microseconds * 1000


class FakeClock:
    """A clock that moves only when a test calls `advance`.

    `sleep` parks the caller until the clock has been advanced past its wake-up time; `advance`
    wakes sleepers in time order and lets the event loop run between wake-ups, so code that
    sleeps, wakes and sleeps again inside the advanced span behaves as under real time.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._mono = 0.0
        self._start = start or datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()

    def monotonic(self) -> float:
        return self._mono

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._mono)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._ids), fut))
        await fut

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting (cancelled ones excluded)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def settle(self) -> None:
        """Lets every runnable task run until nothing more happens without the clock moving."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Moves time forward by `seconds`, waking each sleeper at its own time."""
        target = self._mono + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, fut = heapq.heappop(self._sleepers)
            self._mono = max(self._mono, when)
            if not fut.done():
                fut.set_result(None)
            await self.settle()
        self._mono = target
        await self.settle()
