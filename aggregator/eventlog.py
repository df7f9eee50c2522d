"""The per-request event log every client stream reads: append-only, numbered 1, 2, 3, ...

`MemoryEventLog` is the embedded implementation (one process); a Redis Streams one can stand in
for it behind the same `EventLog` protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

from osago.v1 import events_pb2


class UnknownRequest(LookupError):
    """No event log exists for the request."""


class EventLog(Protocol):
    async def open(self, request_id: str) -> None:
        """Creates the empty log of a new request."""

    async def append(self, event: events_pb2.QuoteEvent) -> events_pb2.QuoteEvent:
        """Appends `event` to its request's log, giving it the next seq; returns it."""

    def follow(self, request_id: str, after_seq: int) -> AsyncIterator[events_pb2.QuoteEvent]:
        """Yields the events after `after_seq`, then new ones as they come, until the one that
        finishes the session. Raises UnknownRequest for a request with no log."""

    async def read(self, request_id: str) -> list[events_pb2.QuoteEvent]:
        """Every event logged so far. Raises UnknownRequest."""

    async def drop(self, request_id: str) -> None:
        """Forgets a request's log (retention)."""


def is_final(event: events_pb2.QuoteEvent) -> bool:
    return bool(event.WhichOneof("payload") == "session_finished")


class _Stream:
    __slots__ = ("events", "changed")

    def __init__(self) -> None:
        self.events: list[events_pb2.QuoteEvent] = []
        self.changed = asyncio.Event()


class MemoryEventLog:
    """The event log kept in this process."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}

    async def open(self, request_id: str) -> None:
        self._streams.setdefault(request_id, _Stream())

    def _stream(self, request_id: str) -> _Stream:
        try:
            return self._streams[request_id]
        except KeyError:
            raise UnknownRequest(request_id) from None

    async def append(self, event: events_pb2.QuoteEvent) -> events_pb2.QuoteEvent:
        stream = self._stream(event.request_id)
        if stream.events and is_final(stream.events[-1]):
            raise RuntimeError("the session already finished")
        event.seq = len(stream.events) + 1
        stream.events.append(event)
        # Wake every follower, and give the next append a fresh event to wait on.
        stream.changed.set()
        stream.changed = asyncio.Event()
        return event

    async def follow(self, request_id: str, after_seq: int) -> AsyncIterator[events_pb2.QuoteEvent]:
        stream = self._stream(request_id)
        position = max(0, after_seq)
        while True:
            while position < len(stream.events):
                event = stream.events[position]
                position += 1
                yield event
                if is_final(event):
                    return
            if stream.events and is_final(stream.events[-1]):
                return
            await stream.changed.wait()

    async def read(self, request_id: str) -> list[events_pb2.QuoteEvent]:
        return list(self._stream(request_id).events)

    async def drop(self, request_id: str) -> None:
        self._streams.pop(request_id, None)
