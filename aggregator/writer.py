"""Where a running session's events go, in this order: numbered, committed to the store under
the session's lease (fenced), handed to this instance's live followers, then published on the
bus for followers elsewhere. One write at a time per session, so seqs reach every reader in
order; an event is never published before it is committed.

Events handed over while a write is in flight go together in the next one (one statement, one
publish): a session's burst of updates, ten insurers accepting the application within a few
milliseconds, costs a round trip or two to the store instead of one each, and the last of them
waits for two writes instead of ten. An event once handed over is written even if its caller
stops waiting (a session's deadline cancels its insurers' tasks mid-write): a task takes the
write up where the caller left it; `logged` says what the log holds once nothing is in flight."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from osago.v1 import events_pb2

from aggregator.bus import BusUnavailable, EventBus
from aggregator.live import LiveStream
from aggregator.store import Lease, RequestStore, StoreUnavailable
from osago_common.clock import Clock

log = logging.getLogger(__name__)

# Waits between attempts to commit while the store is unreachable (seconds, growing to the last).
STORE_RETRY_S = (0.05, 0.1, 0.2, 0.5, 1.0)


def _retrieved(done: asyncio.Future[None]) -> None:
    """Marks a write's outcome as seen: its callers may all have stopped waiting for it."""
    if not done.cancelled():
        done.exception()


class SessionWriter:
    """Implements aggregator.session.SessionLog for one session on this instance."""

    def __init__(
        self,
        lease: Lease,
        next_seq: int,
        store: RequestStore,
        bus: EventBus,
        live: LiveStream,
        clock: Clock,
        *,
        keep_until: datetime,
        give_up_at: float,
        on_logged: Callable[[events_pb2.QuoteEvent], None] | None = None,
    ) -> None:
        self.lease = lease
        self._next = next_seq
        self._store = store
        self._bus = bus
        self._live = live
        self._clock = clock
        self._keep_until = keep_until
        # On the clock's monotonic scale: past it, an unreachable store fails the write.
        self._give_up_at = give_up_at
        # Told of every event once it is committed (the metrics count the insurers' answers).
        self._on_logged = on_logged
        # Events handed over and not yet taken by a write, and what their callers wait for.
        self._queue: list[events_pb2.QuoteEvent] = []
        self._queued: asyncio.Future[None] | None = None
        # The batch being written (numbered), whether it is committed yet, what its callers wait for.
        self._batch: list[events_pb2.QuoteEvent] | None = None
        self._committed = False
        self._inflight: asyncio.Future[None] | None = None
        # Someone is writing: a caller, or the task carrying on after a caller was stopped midway.
        self._busy = False
        self._task: asyncio.Task[None] | None = None

    async def append(self, event: events_pb2.QuoteEvent) -> events_pb2.QuoteEvent:
        await self.append_all((event,))
        return event

    async def append_all(self, events: Sequence[events_pb2.QuoteEvent]) -> None:
        if not events:
            return
        if self._queued is None:
            self._queued = asyncio.get_running_loop().create_future()
            self._queued.add_done_callback(_retrieved)
        done = self._queued
        self._queue.extend(events)
        if self._busy:
            # Shielded: a caller that stops waiting leaves its events to be written.
            await asyncio.shield(done)
            return
        # Nobody is writing: this caller writes, at once (a task of its own would cost a turn of
        # the event loop per write), until nothing is queued; stopped midway, it leaves the rest
        # to a task that takes the interrupted batch up again.
        self._busy = True
        try:
            await self._drain()
        except asyncio.CancelledError:
            self._task = asyncio.create_task(self._carry_on(), name=f"log:{self.lease.request_id}")
            self._task.add_done_callback(self._stopped)
            raise
        await done  # settled by now: raises what failed the write

    async def logged(self) -> list[events_pb2.QuoteEvent]:
        while self._busy:
            if self._task is not None:
                await asyncio.wait((self._task,))
                continue
            pending = [f for f in (self._inflight, self._queued) if f is not None and not f.done()]
            await (asyncio.wait(pending) if pending else asyncio.sleep(0))
        return list(self._live.events)

    async def _drain(self) -> None:
        """Writes until nothing is queued, the batch an interrupted writer left first."""
        while True:
            if self._batch is None:
                if not self._queue:
                    self._busy = False
                    return
                self._batch, self._queue = self._queue, []
                self._inflight, self._queued = self._queued, None
                self._committed = False
                for offset, event in enumerate(self._batch):
                    event.seq = self._next + offset
            done = self._inflight
            assert done is not None
            try:
                await self._write(self._batch)
            except Exception as error:  # noqa: BLE001 - raised to every caller of the batch
                # Nothing of the batch was stored; later events still get their own try.
                done.set_exception(error)
            else:
                done.set_result(None)
            self._batch = None

    async def _carry_on(self) -> None:
        try:
            await self._drain()
        except asyncio.CancelledError:
            self._abandon()
            raise
        finally:
            self._task = None

    def _stopped(self, task: asyncio.Task[None]) -> None:
        if self._task is task:  # cancelled before it started: its body never ran
            self._task = None
            self._abandon()

    def _abandon(self) -> None:
        """The writing task was cancelled (the instance stops): nobody is left to write for."""
        for waiting in (self._inflight, self._queued):
            if waiting is not None and not waiting.done():
                waiting.cancel()
        self._queue, self._queued, self._inflight, self._batch = [], None, None, None
        self._busy = False

    async def _write(self, batch: list[events_pb2.QuoteEvent]) -> None:
        """Commits the batch, unless an interrupted writer did (the store takes a batch it already
        holds again without storing it twice), then publishes it."""
        if not self._committed:
            await self._commit(batch)
            self._committed = True
            self._next += len(batch)
            if self._on_logged is not None:
                for event in batch:
                    self._on_logged(event)
            self._live.extend(batch)
        try:
            await self._bus.publish(batch, self._keep_until)
        except BusUnavailable:
            # Followers elsewhere read the store when the bus fails them; nothing is lost.
            log.warning("events not published: the bus is unavailable", extra={"request_id": self.lease.request_id})

    async def _commit(self, batch: list[events_pb2.QuoteEvent]) -> None:
        attempt = 0
        while True:
            try:
                await self._store.append(self.lease, batch)
                return
            except StoreUnavailable:
                wait = STORE_RETRY_S[min(attempt, len(STORE_RETRY_S) - 1)]
                if self._clock.monotonic() + wait > self._give_up_at:
                    raise
                attempt += 1
                await self._clock.sleep(wait)
