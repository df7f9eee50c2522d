"""One contract for both event buses: the embedded one and Redis streams (a private server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio
from osago.v1 import events_pb2

from aggregator.bus import STREAM_PREFIX, EventBus, MemoryEventBus, RedisEventBus
from osago_common.clock import FakeClock

pytestmark = pytest.mark.functional


def later() -> datetime:
    """A keep-until ten minutes from now: from the moment of the call, not of the module's import
    (a slow suite reaches these tests more than ten minutes after collecting them)."""
    return datetime.now(UTC) + timedelta(minutes=10)


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    if request.param == "memory":
        yield MemoryEventBus()
        return
    async with RedisEventBus.open(request.getfixturevalue("redis_db")) as shared:
        yield shared


def event(seq: int, request_id: str = "r1") -> events_pb2.QuoteEvent:
    made = events_pb2.QuoteEvent(request_id=request_id, seq=seq)
    made.insurer_progress.insurer_id = f"insurer-{seq}"
    return made


async def test_published_events_read_back_from_any_point(bus: EventBus) -> None:
    await bus.publish([event(1), event(2)], later())
    await bus.publish([event(3)], later())
    assert [e.seq for e in await bus.read("r1", 0, 0)] == [1, 2, 3]  # type: ignore[union-attr]
    tail = await bus.read("r1", 2, 0)
    assert tail is not None and [(e.seq, e.insurer_progress.insurer_id) for e in tail] == [(3, "insurer-3")]
    assert await bus.read("r1", 3, 0) == []


async def test_an_unknown_request_has_no_stream(bus: EventBus) -> None:
    assert await bus.read("nobody", 0, 0) is None


async def test_publishing_again_or_late_stores_nothing_twice(bus: EventBus) -> None:
    await bus.publish([event(1), event(2)], later())
    await bus.publish([event(2), event(3)], later())  # 2 again (a takeover republishing)
    await bus.publish([event(1)], later())  # a stale owner's late publish
    assert [e.seq for e in await bus.read("r1", 0, 0)] == [1, 2, 3]  # type: ignore[union-attr]


async def test_a_waiting_reader_wakes_when_an_event_is_published(bus: EventBus) -> None:
    await bus.publish([event(1)], later())
    reader = asyncio.create_task(bus.read("r1", 1, 30.0))
    await asyncio.sleep(0)  # the reader starts; wherever it is, the event must reach it
    await bus.publish([event(2)], later())
    found = await asyncio.wait_for(reader, 10.0)  # far less than the reader's 30 s wait
    assert [e.seq for e in found or []] == [2]


async def test_streams_are_kept_apart(bus: EventBus) -> None:
    await bus.publish([event(1, "a"), event(2, "a")], later())
    await bus.publish([event(1, "b")], later())
    assert [e.request_id for e in await bus.read("b", 0, 0) or []] == ["b"]


async def test_a_dropped_stream_is_gone(bus: EventBus) -> None:
    await bus.publish([event(1)], later())
    await bus.drop("r1")
    assert await bus.read("r1", 0, 0) is None


async def test_a_watch_mark_lasts_its_ttl() -> None:
    clock = FakeClock()
    bus = MemoryEventBus(clock)
    assert not await bus.watched("r1")
    await bus.watch("r1", 5.0)
    assert await bus.watched("r1")
    await clock.advance(5.1)
    assert not await bus.watched("r1")


async def test_redis_watch_marks_expire_and_streams_expire_at_their_time(redis_db: str) -> None:
    async with RedisEventBus.open(redis_db) as bus:
        await bus.watch("r1", 60.0)
        assert await bus.watched("r1")
        await bus.publish([event(1)], datetime.now(UTC) + timedelta(seconds=60))
        client = redis.asyncio.Redis.from_url(redis_db)
        ttl_ms = await client.pttl(STREAM_PREFIX + "r1")
        assert 50_000 < ttl_ms <= 60_000
        await bus.publish([event(2)], datetime.now(UTC) - timedelta(seconds=1))  # already past
        assert await bus.read("r1", 0, 0) is None
        await client.aclose()


async def test_redis_flushed_is_a_missing_stream_not_an_error(redis_db: str) -> None:
    async with RedisEventBus.open(redis_db) as bus:
        await bus.publish([event(1), event(2)], later())
        client = redis.asyncio.Redis.from_url(redis_db)
        await client.flushall()
        await client.aclose()
        assert await bus.read("r1", 0, 0) is None
        await bus.publish([event(3)], later())  # the owner goes on: the stream starts again at 3
        assert [e.seq for e in await bus.read("r1", 2, 0) or []] == [3]
