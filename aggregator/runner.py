"""The sessions this instance runs: started here, or taken over from an instance that is gone.

The runner keeps this instance's lease alive (`heartbeat`), and every `takeover_scan_s` claims
the running sessions whose owner's lease lapsed (or that were released by a draining instance)
and resumes them: the events already logged are republished (the dead owner may have committed
some it never published), insurers that answered are not asked again, the others are asked
again under the same request id, and the session still ends by its original deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from osago.v1 import application_pb2, events_pb2, quote_pb2

from aggregator.bus import BusUnavailable, EventBus
from aggregator.cache import ResultCache
from aggregator.live import LiveStream
from aggregator.metrics import AggregatorMetrics
from aggregator.session import OfferSource, QuoteSession, SessionPlan
from aggregator.settings import AggregatorSettings
from aggregator.store import Claim, Lease, LeaseLost, RequestRecord, RequestStore, StoreUnavailable
from aggregator.writer import SessionWriter
from osago_common import tracing
from osago_common.clock import Clock

log = logging.getLogger(__name__)

Status = events_pb2.SessionStatus


@dataclass
class Running:
    """A session running on this instance."""

    record: RequestRecord
    session: QuoteSession
    task: asyncio.Task[int]
    live: LiveStream
    writer: SessionWriter
    # True for a session taken over from another instance (its original caller is elsewhere).
    taken_over: bool


class SessionRunner:
    def __init__(
        self,
        settings: AggregatorSettings,
        source: OfferSource,
        store: RequestStore,
        bus: EventBus,
        cache: ResultCache,
        clock: Clock,
        owner: str,
        metrics: AggregatorMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._source = source
        self._store = store
        self._bus = bus
        self._cache = cache
        self._clock = clock
        self.owner = owner
        self.running: dict[str, Running] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.taken_over_total = 0
        self.metrics = metrics if metrics is not None else AggregatorMetrics(g.insurer_id for g in settings.gateways)

    def start(
        self,
        record: RequestRecord,
        lease: Lease,
        application: application_pb2.Application,
        history: Sequence[events_pb2.QuoteEvent],
        cached: Mapping[str, quote_pb2.Quote] | None = None,
        *,
        taken_over: bool = False,
    ) -> Running:
        """Runs the session here from what it logged so far (`history`, seq 1 first)."""
        s = self._settings
        remaining = (record.deadline - self._clock.now()).total_seconds()
        limit = (record.deadline - record.created_at).total_seconds()
        plan = SessionPlan(
            record.request_id,
            application,
            record.insurers,
            self._clock.monotonic() + remaining,
            limit,
            cached=cached or {},
        )
        live = LiveStream(list(history))
        writer = SessionWriter(
            lease,
            len(history) + 1,
            self._store,
            self._bus,
            live,
            self._clock,
            keep_until=record.deadline + timedelta(seconds=s.retention_s),
            give_up_at=plan.deadline + s.store_grace_s,
            on_logged=self.metrics.event_logged,
        )
        session = QuoteSession(
            plan, self._source, writer, self._clock, gateway_margin_s=s.gateway_margin_s, history=history
        )
        task = asyncio.create_task(_traced(session, taken_over), name=f"session:{record.request_id}")
        running = Running(record, session, task, live, writer, taken_over)
        self.running[record.request_id] = running
        task.add_done_callback(lambda done: self._finished(running, done))
        return running

    def _finished(self, running: Running, task: asyncio.Task[int]) -> None:
        request_id = running.record.request_id
        if self.running.get(request_id) is running:
            del self.running[request_id]
        running.live.close()
        status = running.session.status
        if status is not None:  # its final event was logged here (CANCELLED included)
            record = running.record
            self.metrics.session_finished(status, record.created_at, record.deadline, self._clock.now())
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, LeaseLost):
            log.warning("session taken over by another instance", extra={"request_id": request_id})
        elif isinstance(error, StoreUnavailable):
            log.error("session stopped: the store stayed unavailable", extra={"request_id": request_id})
        elif error is not None:
            log.error("session failed", exc_info=error, extra={"request_id": request_id})
        elif not running.session.plan.cached:
            self._spawn(self._remember(running))

    async def _remember(self, running: Running) -> None:
        """Puts a fresh session's offers into the cache of results."""
        quotes = [e.quote_received.quote for e in running.live.events if e.WhichOneof("payload") == "quote_received"]
        if not quotes or self._settings.cache_ttl_s <= 0:
            return
        now = self._clock.now()
        ttl = min(
            [self._settings.cache_ttl_s]
            + [
                (q.valid_until.ToDatetime(tzinfo=now.tzinfo) - now).total_seconds()
                for q in quotes
                if q.HasField("valid_until")
            ]
        )
        if ttl > 0:
            with contextlib.suppress(Exception):
                await self._cache.put(running.record.fingerprint, quotes, ttl)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def resume(self, claim: Claim) -> Running | None:
        """Runs a claimed session here; finishes at once one whose deadline passed."""
        request_id = claim.record.request_id
        here = self.running.get(request_id)
        if here is not None:
            # This instance's own session, claimed back after its lease lapsed: it goes on under
            # the new epoch.
            here.writer.lease = claim.lease
            return here
        application = application_pb2.Application()
        application.ParseFromString(claim.application)
        keep_until = claim.record.deadline + timedelta(seconds=self._settings.retention_s)
        with contextlib.suppress(BusUnavailable):
            await self._bus.publish(claim.events, keep_until)
        self.taken_over_total += 1
        log.info("session taken over", extra={"request_id": request_id})
        return self.start(claim.record, claim.lease, application, claim.events, taken_over=True)

    async def maintain(self) -> None:
        """Keeps this instance's lease and takes over orphaned sessions, until cancelled."""
        s = self._settings
        while True:
            try:
                now = self._clock.now()
                if not await self._store.heartbeat(self.owner, now, s.lease_ttl_s):
                    await self._check_ownership()
                # A session this long past its deadline was not finished by its owner (its store
                # writes failed for good): whoever finds it finishes it.
                overdue = now - timedelta(seconds=s.store_grace_s + s.lease_ttl_s)
                claims = await self._store.claim_orphans(self.owner, now, s.takeover_batch, overdue_before=overdue)
                for claim in claims:
                    await self.resume(claim)
            except StoreUnavailable:
                log.warning("cannot renew the instance lease: the store is unavailable")
            except Exception:
                log.exception("session upkeep failed")
            await self._clock.sleep(s.takeover_scan_s)

    async def _check_ownership(self) -> None:
        """After this instance's lease lapsed (a pause, a partition): stops at once the sessions
        another instance took over (they could write nothing anyway: fenced), and goes on with
        those still held, under their current epoch."""
        log.warning("this instance's lease had lapsed; checking which sessions it still holds")
        running = list(self.running.values())
        held = await self._store.owned(self.owner, [r.record.request_id for r in running])
        for item in running:
            epoch = held.get(item.record.request_id)
            if epoch is None:
                log.warning("session taken over by another instance", extra={"request_id": item.record.request_id})
                item.session.detach()
                item.task.cancel()
            else:
                item.writer.lease = Lease(item.record.request_id, self.owner, epoch)

    async def hand_over(self) -> None:
        """Stops running every session here without writing anything and releases them, so
        other instances take them over at once."""
        running = list(self.running.values())
        started = self._clock.monotonic()
        for item in running:
            item.session.detach()
            item.task.cancel()
        await asyncio.gather(*(item.task for item in running), return_exceptions=True)
        stopped = self._clock.monotonic()
        try:
            await self._store.release([item.writer.lease for item in running])
        except StoreUnavailable:
            log.warning("could not release sessions; they are taken over once this lease lapses")
        else:
            log.info(
                "handed %d sessions over (stopped in %.0f ms, released in %.0f ms)",
                len(running),
                (stopped - started) * 1000,
                (self._clock.monotonic() - stopped) * 1000,
            )
        for item in running:
            item.live.close()

    async def finish(self, grace_s: float) -> None:
        """Lets the sessions here run to their end for up to `grace_s`, then cancels the rest."""
        tasks = [item.task for item in self.running.values()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Cancels every session (each finishes CANCELLED) and background work."""
        tasks = [item.task for item in self.running.values()] + list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _traced(session: QuoteSession, taken_over: bool) -> int:
    """Runs the session in its `quote_session` span: a child of the caller's trace when it sent
    one (the task inherits the context current at its creation), and the parent of every
    insurer call. The session sets its final status and counts on the span."""
    plan = session.plan
    with tracing.tracer(__name__).start_as_current_span(
        "quote_session",
        attributes={
            tracing.REQUEST_ID: plan.request_id,
            tracing.INSURERS_ASKED: len(plan.insurers),
            tracing.INSURER_IDS: [insurer_id for insurer_id, _ in plan.insurers],
            tracing.TAKEN_OVER: taken_over,
        },
        record_exception=False,
        set_status_on_exception=False,
    ):
        return await session.run()
