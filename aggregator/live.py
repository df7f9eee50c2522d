"""The events of the sessions running on this instance, for the followers on this instance:
they read here, without a round trip to the bus. A stream ends with the session's final event,
or is closed when the session leaves this instance (handed over, or its lease lost); followers
then go on from the bus and the store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from osago.v1 import events_pb2


def is_final(event: events_pb2.QuoteEvent) -> bool:
    return bool(event.WhichOneof("payload") == "session_finished")


class Changes:
    """Wakes whoever waits for the next change. What a fresh asyncio.Event per change did, for a
    future per wait instead: an Event costs several µs to make, and a session's log changes some
    thirty times (its live stream and the embedded bus each made one per write)."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def waiting(self) -> int:
        """How many wait now."""
        return len(self._waiters)

    def notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def wait(self) -> Coroutine[Any, Any, None]:
        """Done at the first `notify` after this call, even when the returned coroutine starts
        later (`asyncio.wait_for` runs it in a task of its own), as an Event's `wait` was."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return self._until(waiter)

    async def _until(self, waiter: asyncio.Future[None]) -> None:
        try:
            await waiter
        finally:
            if not waiter.done() or waiter.cancelled():
                # Stopped waiting (cancelled, timed out): not kept until the next change.
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)


class LiveStream:
    """One running session's events from seq 1: those logged before it came to this instance
    (a session taken over), then those logged here."""

    __slots__ = ("_changes", "closed", "events")

    def __init__(self, history: list[events_pb2.QuoteEvent] | None = None) -> None:
        self.events: list[events_pb2.QuoteEvent] = list(history or [])
        self.closed = False
        self._changes = Changes()

    def append(self, event: events_pb2.QuoteEvent) -> None:
        self.events.append(event)
        self._wake()

    def extend(self, events: list[events_pb2.QuoteEvent]) -> None:
        self.events.extend(events)
        self._wake()

    def close(self) -> None:
        """No more events will come here (the session left this instance)."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changes.notify()  # every follower

    async def follow(self, after_seq: int) -> AsyncIterator[events_pb2.QuoteEvent]:
        """The events after `after_seq`, then new ones as they come, until the final event or
        until the stream is closed."""
        # Events are numbered from 1 without gaps: seq n sits at index n - 1.
        position = max(0, after_seq)
        while True:
            while position < len(self.events):
                event = self.events[position]
                position += 1
                yield event
                if is_final(event):
                    return
            if self.closed:
                return
            await self._changes.wait()
