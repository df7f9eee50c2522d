"""Where a running session's events go, in this order: numbered, committed to the store under
the session's lease (fenced), handed to this instance's live followers, then published on the
bus for followers elsewhere. One event at a time per session, so seqs reach every reader in
order; an event is never published before it is committed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from osago.v1 import events_pb2

from aggregator.bus import BusUnavailable, EventBus
from aggregator.live import LiveStream
from aggregator.store import Lease, RequestStore, StoreUnavailable
from osago_common.clock import Clock

log = logging.getLogger(__name__)

# Waits between attempts to commit while the store is unreachable (seconds, growing to the last).
STORE_RETRY_S = (0.05, 0.1, 0.2, 0.5, 1.0)


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
        self._lock = asyncio.Lock()
        # Told of every event once it is committed (the metrics count the insurers' answers).
        self._on_logged = on_logged

    async def append(self, event: events_pb2.QuoteEvent) -> events_pb2.QuoteEvent:
        async with self._lock:
            event.seq = self._next
            await self._commit(event)
            self._next += 1
            if self._on_logged is not None:
                self._on_logged(event)
            self._live.append(event)
            try:
                await self._bus.publish([event], self._keep_until)
            except BusUnavailable:
                # Followers elsewhere read the store when the bus fails them; nothing is lost.
                log.warning("event not published: the bus is unavailable", extra={"request_id": event.request_id})
            return event

    async def _commit(self, event: events_pb2.QuoteEvent) -> None:
        attempt = 0
        while True:
            try:
                await self._store.append(self.lease, [event])
                return
            except StoreUnavailable:
                wait = STORE_RETRY_S[min(attempt, len(STORE_RETRY_S) - 1)]
                if self._clock.monotonic() + wait > self._give_up_at:
                    raise
                attempt += 1
                await self._clock.sleep(wait)
