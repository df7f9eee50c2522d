"""The events of the sessions running on this instance, for the followers on this instance:
they read here, without a round trip to the bus. A stream ends with the session's final event,
or is closed when the session leaves this instance (handed over, or its lease lost); followers
then go on from the bus and the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from osago.v1 import events_pb2


def is_final(event: events_pb2.QuoteEvent) -> bool:
    return bool(event.WhichOneof("payload") == "session_finished")


class LiveStream:
    """One running session's events from seq 1: those logged before it came to this instance
    (a session taken over), then those logged here."""

    __slots__ = ("_changed", "closed", "events")

    def __init__(self, history: list[events_pb2.QuoteEvent] | None = None) -> None:
        self.events: list[events_pb2.QuoteEvent] = list(history or [])
        self.closed = False
        self._changed = asyncio.Event()

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
        # Wake every follower, and give the next change a fresh event to wait on.
        self._changed.set()
        self._changed = asyncio.Event()

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
            await self._changed.wait()
