"""The live event streams every aggregator instance reads: the events of each request, published
by whichever instance runs it, read from any.

Two implementations behind one `EventBus` protocol, held to one contract suite:
`MemoryEventBus` (this process; the embedded default) and `RedisEventBus` (a Redis stream per
request: `XADD` with the event's seq as the entry id, so publishing twice or out of order stores
nothing twice; a Pub/Sub notice wakes the readers; the stream expires after the session plus
retention).

The bus is not the record: the store is (an event is committed there before it is published).
A reader that finds a stream missing or with a gap (expired, flushed, Redis restarted, a publish
lost) fills in from the store; see aggregator.follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import redis.asyncio
import redis.exceptions
from osago.v1 import events_pb2

from aggregator.live import Changes
from osago_common.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

# Redis keys and the Pub/Sub channel; the request id follows the prefixes.
STREAM_PREFIX = "osago:events:"
WATCH_PREFIX = "osago:watch:"
NOTICE_CHANNEL = "osago:events"
# Entries read per XRANGE.
READ_BATCH = 256


class BusUnavailable(Exception):
    """The bus cannot be reached."""


class EventBus(Protocol):
    async def publish(self, events: Sequence[events_pb2.QuoteEvent], keep_until: datetime) -> None:
        """Publishes events of one request in seq order; an event already published (same seq or
        older than the last) is skipped. The stream is kept at least until `keep_until`."""

    async def read(self, request_id: str, after_seq: int, wait_s: float) -> list[events_pb2.QuoteEvent] | None:
        """The published events with seq > after_seq, waiting up to `wait_s` for one when there
        is none yet ([] then). None when the bus holds no stream for the request (never
        published, expired or lost): the store has the record."""

    async def watch(self, request_id: str, ttl_s: float) -> None:
        """Marks the request as followed by a client (on any instance) for `ttl_s`."""

    async def watched(self, request_id: str) -> bool:
        """Whether a client marked the request as followed and the mark has not lapsed."""

    async def drop(self, request_id: str) -> None:
        """Forgets a request's stream."""

    async def check(self) -> None:
        """Returns when the bus answers; raises BusUnavailable otherwise."""

    async def close(self) -> None:
        """Stops reading and releases connections."""


@dataclass
class _Stream:
    events: list[events_pb2.QuoteEvent] = field(default_factory=list)
    changes: Changes = field(default_factory=Changes)


class MemoryEventBus:
    """Streams kept in this process."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._streams: dict[str, _Stream] = {}
        self._watched: dict[str, float] = {}
        self._clock = clock

    async def publish(self, events: Sequence[events_pb2.QuoteEvent], keep_until: datetime) -> None:
        if not events:
            return
        stream = self._streams.get(events[0].request_id)
        if stream is None:
            stream = self._streams[events[0].request_id] = _Stream()
        for event in events:
            if not stream.events or event.seq > stream.events[-1].seq:
                stream.events.append(event)
        stream.changes.notify()

    async def read(self, request_id: str, after_seq: int, wait_s: float) -> list[events_pb2.QuoteEvent] | None:
        stream = self._streams.get(request_id)
        if stream is None:
            return None
        newer = [e for e in stream.events if e.seq > after_seq]
        if newer or wait_s <= 0:
            return newer
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stream.changes.wait(), wait_s)
        if self._streams.get(request_id) is not stream:
            return None
        return [e for e in stream.events if e.seq > after_seq]

    async def watch(self, request_id: str, ttl_s: float) -> None:
        self._watched[request_id] = self._clock.monotonic() + ttl_s

    async def watched(self, request_id: str) -> bool:
        until = self._watched.get(request_id)
        return until is not None and until > self._clock.monotonic()

    async def drop(self, request_id: str) -> None:
        stream = self._streams.pop(request_id, None)
        self._watched.pop(request_id, None)
        if stream is not None:
            stream.changes.notify()

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _entry_id(seq: int) -> str:
    return f"0-{seq}"


def _seq(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[2])


class RedisEventBus:
    """A Redis stream per request, read by any instance; one Pub/Sub connection per instance
    wakes the readers waiting here (a notice is only a hint: readers also re-read on timeout)."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        # Also used for what else this instance keeps in Redis (the cache of results).
        self.client = client
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._listener: asyncio.Task[None] | None = None
        # Set while the notice channel is subscribed: a reader reads only after it, so a notice
        # for an event published after that read cannot be missed.
        self._subscribed = asyncio.Event()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str, *, timeout_s: float = 2.0) -> AsyncIterator[RedisEventBus]:
        client = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=10
        )
        bus = cls(client)
        try:
            yield bus
        finally:
            await bus.close()

    async def publish(self, events: Sequence[events_pb2.QuoteEvent], keep_until: datetime) -> None:
        if not events:
            return
        request_id = events[0].request_id
        key = STREAM_PREFIX + request_id
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.xadd(key, {"e": event.SerializeToString()}, id=_entry_id(event.seq))
                pipe.pexpireat(key, keep_until)
                pipe.publish(NOTICE_CHANNEL, request_id)
                results = await pipe.execute(raise_on_error=False)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise BusUnavailable("the event bus (Redis) is unavailable") from error
        for result in results[: len(events)]:
            # "equal or smaller than the target stream top item": published already.
            if isinstance(result, redis.exceptions.ResponseError) and "smaller" not in str(result):
                raise result

    async def read(self, request_id: str, after_seq: int, wait_s: float) -> list[events_pb2.QuoteEvent] | None:
        key = STREAM_PREFIX + request_id
        woken = asyncio.Event()
        self._waiters.setdefault(request_id, set()).add(woken)
        try:
            self._ensure_listener()
            if not self._subscribed.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._subscribed.wait(), min(wait_s, 2.0) if wait_s > 0 else 0.001)
            found = await self._range(key, after_seq)
            if found is None or found or wait_s <= 0:
                return found
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), wait_s)
            return await self._range(key, after_seq)
        finally:
            waiters = self._waiters.get(request_id)
            if waiters is not None:
                waiters.discard(woken)
                if not waiters:
                    del self._waiters[request_id]

    async def _range(self, key: str, after_seq: int) -> list[events_pb2.QuoteEvent] | None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xrange(key, min=f"({_entry_id(after_seq)}" if after_seq > 0 else "-", count=READ_BATCH)
                pipe.exists(key)
                entries, exists = await pipe.execute()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise BusUnavailable("the event bus (Redis) is unavailable") from error
        if not exists:
            return None
        found = []
        for entry_id, fields in entries:
            event = events_pb2.QuoteEvent()
            event.ParseFromString(fields[b"e"])
            if event.seq != _seq(entry_id):  # pragma: no cover - written only by publish
                raise ValueError(f"stream entry {entry_id!r} holds seq {event.seq}")
            found.append(event)
        return found

    def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="event-bus-notices")

    async def _listen(self) -> None:
        """Wakes the readers of each request a notice names, while any reader waits; reconnects
        after a failure (readers re-read on their own timeout meanwhile)."""
        while self._waiters:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(NOTICE_CHANNEL)
                # The subscription is confirmed by its first reply.
                while self._waiters:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._subscribed.set()
                        continue
                    data = message["data"]
                    request_id = data.decode() if isinstance(data, bytes) else str(data)
                    for woken in self._waiters.get(request_id, ()):
                        woken.set()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                log.warning("event bus notices interrupted; reconnecting")
                await asyncio.sleep(0.5)
            finally:
                self._subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def watch(self, request_id: str, ttl_s: float) -> None:
        try:
            await self._client.set(WATCH_PREFIX + request_id, b"1", px=max(1, int(ttl_s * 1000)))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise BusUnavailable("the event bus (Redis) is unavailable") from error

    async def watched(self, request_id: str) -> bool:
        try:
            return bool(await self._client.exists(WATCH_PREFIX + request_id))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise BusUnavailable("the event bus (Redis) is unavailable") from error

    async def drop(self, request_id: str) -> None:
        try:
            await self._client.delete(STREAM_PREFIX + request_id, WATCH_PREFIX + request_id)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise BusUnavailable("the event bus (Redis) is unavailable") from error

    async def check(self) -> None:
        try:
            await self._client.ping()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as error:
            raise BusUnavailable("the event bus (Redis) is unavailable") from error

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        await self._client.aclose()
