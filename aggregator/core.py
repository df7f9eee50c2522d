"""The aggregator's use cases, free of transport: create a quote request and run its session,
read a snapshot, follow its events from any instance, drain.

Where things live: the store holds the record (requests, every event, the insurers' answers,
who runs each session under which lease epoch); the bus carries events to followers on other
instances; the runner holds the sessions running on this instance and their live streams.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import socket
import uuid
from collections.abc import AsyncGenerator, Callable
from datetime import date, timedelta
from typing import Any

from osago.v1 import aggregator_service_pb2, application_pb2, events_pb2, quote_pb2
from prometheus_client.core import CounterMetricFamily, Metric

from aggregator.admission import LIMITS, Admission
from aggregator.bus import BusUnavailable, EventBus
from aggregator.cache import ResultCache
from aggregator.live import is_final
from aggregator.metrics import AggregatorMetrics
from aggregator.runner import SessionRunner
from aggregator.session import OfferSource, session_started
from aggregator.settings import AggregatorSettings
from aggregator.shedding import LoadShedding, LoopLag
from aggregator.store import RUNNING, RequestRecord, RequestStore, StoreUnavailable
from osago_common.clock import SYSTEM_CLOCK, Clock
from osago_common.dates import default_policy_start, moscow_today
from osago_common.metrics import Collect, counter, gauge
from osago_common.validation import FieldViolation, normalise_text, normalise_vin, validate_application

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 128
MAX_REQUEST_ID = 128
# A follower on another instance waits this long on the bus before looking again.
BUS_WAIT_S = 5.0
# How often a follower reads the store when the bus cannot help (missing stream, bus down).
STORE_POLL_S = 1.0
# Requests whose personal data one purge statement erases.
PURGE_BATCH = 500


class InvalidRequest(ValueError):
    """The request breaks the contract; carries every field violation."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations


class NotFound(LookupError):
    """No such quote request (never created, or past retention)."""


class Unavailable(Exception):
    """This instance cannot serve the call now (storage unreachable, shutting down); another
    instance, or a retry in a moment, can. The message says why, without internal detail."""


def check_request_id(request_id: str) -> None:
    """A request id the API could have given: 1 to 128 printable ASCII characters (ids are 128
    random bits, hex: unguessable)."""
    if not request_id:
        raise InvalidRequest([FieldViolation("request_id", "is required")])
    if len(request_id) > MAX_REQUEST_ID or not (request_id.isascii() and request_id.isprintable()):
        raise InvalidRequest(
            [FieldViolation("request_id", f"must be at most {MAX_REQUEST_ID} printable ASCII characters")]
        )


def new_instance_id(name: str = "") -> str:
    """A new id for this run of an instance: its name (the host's, or OSAGO_INSTANCE_NAME) and a
    random part, so a restarted process never passes for the one that ran before it."""
    return f"{name or socket.gethostname()}-{uuid.uuid4().hex[:8]}"


class Aggregator:
    def __init__(
        self,
        settings: AggregatorSettings,
        source: OfferSource,
        store: RequestStore,
        bus: EventBus,
        cache: ResultCache,
        clock: Clock = SYSTEM_CLOCK,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        *,
        owner: str | None = None,
        shared: bool = False,
        admission: Admission | None = None,
        metrics: AggregatorMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._bus = bus
        self._cache = cache
        self._clock = clock
        self._new_id = new_id
        # With a shared store a draining instance hands its sessions over; alone it finishes them.
        self._shared = shared
        self._admission = admission
        self.metrics = metrics if metrics is not None else AggregatorMetrics(g.insurer_id for g in settings.gateways)
        self.runner = SessionRunner(
            settings,
            source,
            store,
            bus,
            cache,
            clock,
            owner or new_instance_id(settings.instance_name),
            self.metrics,
        )
        self._insurers = tuple((g.insurer_id, g.insurer_name) for g in settings.gateways)
        self._watchers: collections.Counter[str] = collections.Counter()
        self._accepting = True
        # Set when this instance drains: followers waiting on the bus end at once.
        self._stopping = asyncio.Event()
        # False while the store or the bus does not answer: new sessions are refused.
        self.backends_ok = True
        self._tasks: set[asyncio.Task[None]] = set()
        self._upkeep: asyncio.Task[None] | None = None
        self._expiry: collections.deque[tuple[float, str]] = collections.deque()
        self._sweeper: asyncio.Task[None] | None = None
        self.shedding = LoadShedding(
            settings.max_sessions,
            settings.shed_loop_lag_s,
            settings.shed_retry_s,
            LoopLag(clock),
            shed_queue_wait_s=settings.shed_queue_wait_s,
            running=lambda: len(self.runner.running),
        )
        self.metrics.registry.register(Collect(self._instance_metrics))

    def _instance_metrics(self) -> list[Metric]:
        """The counts this instance keeps anyway, read at scrape time."""
        refused = CounterMetricFamily(
            "osago_sessions_rate_limited",
            "New sessions refused by the rate limits on creation, by the limit: the customer's or the instance's.",
            labels=["limit"],
        )
        for limit in LIMITS:
            refused.add_metric([limit], self._admission.refused[limit] if self._admission is not None else 0)
        shed = CounterMetricFamily(
            "osago_sessions_shed",
            "New sessions refused by load shedding, by the signal that refused: sessions running "
            "(OSAGO_MAX_SESSIONS), loop_lag, queue_wait (the calls' wait at the door), adaptive_cap.",
            labels=["signal"],
        )
        for signal, count in self.shedding.shed_by.items():
            shed.add_metric([signal], count)
        return [
            gauge("osago_sessions_running", "Sessions running on this instance.", len(self.runner.running)),
            shed,
            gauge(
                "osago_queue_wait_seconds",
                "How long the instance's own probe call last waited at its door (gRPC's queue of calls not taken yet).",
                self.shedding.queue.current() if self.shedding.queue is not None else 0.0,
            ),
            gauge(
                "osago_sessions_cap",
                "The adaptive cap on sessions running here, lowered while calls wait too long at the door (0: none).",
                self.shedding.cap or 0.0,
            ),
            counter(
                "osago_sessions_taken_over",
                "Sessions taken over from an instance whose lease lapsed or that released them.",
                self.runner.taken_over_total,
            ),
            refused,
        ]

    @property
    def owner(self) -> str:
        return self.runner.owner

    def start(self) -> None:
        """Starts keeping this instance's lease and taking over orphaned sessions, the purge of
        personal data past its retention, and measuring the event loop's lag when load shedding
        watches it."""
        self._upkeep = asyncio.create_task(self.runner.maintain(), name="session-upkeep")
        self._spawn(self._purge_regularly(), "personal-data-purge")
        if self.shedding.watches_lag:
            self._spawn(self.shedding.lag.run(), "loop-lag")

    async def _stop_upkeep(self) -> None:
        """No more takeovers here: a stopping instance must not claim what it hands over."""
        upkeep, self._upkeep = self._upkeep, None
        if upkeep is not None:
            upkeep.cancel()
            await asyncio.gather(upkeep, return_exceptions=True)

    async def _purge_regularly(self) -> None:
        while True:
            try:
                await self.purge_personal_data()
            except Exception:
                log.exception("the purge of personal data failed; it runs again later")
            await self._clock.sleep(self._settings.purge_interval_s)

    async def purge_personal_data(self) -> int:
        """Erases the personal data of finished requests created more than
        `personal_data_retention_s` ago (the insurers' answers and the events stay). Every
        instance may run it at once: each request is purged once. Returns how many were."""
        now = self._clock.now()
        before = now - timedelta(seconds=self._settings.personal_data_retention_s)
        total = 0
        while True:
            try:
                purged = await self._store.purge_personal(before, now, PURGE_BATCH)
            except StoreUnavailable:
                break
            total += purged
            if purged < PURGE_BATCH:
                break
        if total:
            log.info("erased the personal data of %d finished requests", total)
        return total

    def _spawn(self, coro: Any, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def create(
        self,
        application: application_pb2.Application | None,
        idempotency_key: str,
        time_limit_s: float | None,
        *,
        customer_id: str = "",
        fresh: bool = False,
        limit_key: str = "",
    ) -> tuple[RequestRecord, bool]:
        """Validates and stores a request and starts its session; with an idempotency key the
        customer already used for the same application, returns that request (flag False) and
        starts nothing. Unless `fresh`, offers of an identical application still in the cache of
        results are given at once (marked from the cache) and those insurers are not asked.
        A valid request beyond the rate limits of `limit_key` (admission) raises RateLimited; one
        arriving while this instance is saturated raises Busy (load shedding), before anything
        is stored."""
        violations: list[FieldViolation] = []
        today = moscow_today(self._clock)
        if application is None:
            violations.append(FieldViolation("application", "is required"))
        else:
            violations += validate_application(application, today)
        if len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            violations.append(FieldViolation("idempotency_key", f"must be at most {MAX_IDEMPOTENCY_KEY} characters"))
        elif not idempotency_key.isprintable():
            violations.append(FieldViolation("idempotency_key", "must not contain control characters"))
        if time_limit_s is not None and time_limit_s <= 0:
            violations.append(FieldViolation("time_limit", "must be positive"))
        if violations:
            raise InvalidRequest(violations)
        assert application is not None
        # Before anything is stored or counted: a refusal costs the saturated instance next to
        # nothing, and no customer's rate limit. (A retried idempotency key is refused too
        # meanwhile; retried later, it finds its request.)
        self.shedding.admit(len(self.runner.running))
        if self._admission is not None:
            self._admission.admit(limit_key)
        if not self._accepting:
            raise Unavailable("this instance is shutting down; please retry")
        if not self.backends_ok:
            raise Unavailable("the quote service's storage is unavailable; please retry in a moment")
        application = normalised(application, today)
        limit = min(self._settings.session_limit_s, time_limit_s or self._settings.session_limit_s)
        now = self._clock.now()
        record = RequestRecord(
            request_id=self._new_id(),
            created_at=now,
            deadline=now + timedelta(seconds=limit),
            insurers=self._insurers,
            idempotency_key=idempotency_key,
            fingerprint=hashlib.sha256(application.SerializeToString(deterministic=True)).hexdigest(),
            customer_id=customer_id,
        )
        first = session_started(record.request_id, record.insurers, self._clock, record.deadline)
        cached = [] if fresh else await self._cache.get(record.fingerprint)
        try:
            stored, lease = await self._store.create(
                record, application.SerializeToString(), vehicle_data(application), first, self.owner
            )
        except StoreUnavailable:
            raise Unavailable("the quote service's storage is unavailable; please retry in a moment") from None
        if lease is None:
            if stored.fingerprint != record.fingerprint:
                raise InvalidRequest(
                    [FieldViolation("idempotency_key", "was already used for a different application")]
                )
            return stored, False
        with contextlib.suppress(BusUnavailable):
            await self._bus.publish([first], record.deadline + timedelta(seconds=self._settings.retention_s))
        asked = {insurer_id for insurer_id, _ in record.insurers}
        from_cache: dict[str, quote_pb2.Quote] = {}
        for quote in cached:
            if quote.insurer_id in asked:
                quote.from_cache = True
                from_cache[quote.insurer_id] = quote
        running = self.runner.start(record, lease, application, [first], from_cache)
        self.metrics.started.inc()
        running.task.add_done_callback(lambda _t: self._finished(record.request_id))
        return record, True

    def _finished(self, request_id: str) -> None:
        if self._shared:
            return  # the shared store keeps requests (personal data is purged by retention)
        self._expiry.append((self._clock.monotonic() + self._settings.retention_s, request_id))
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="retention-sweeper")

    async def _sweep(self) -> None:
        """Forgets finished requests once their retention has passed (the embedded store)."""
        while self._expiry:
            now = self._clock.monotonic()
            while self._expiry and self._expiry[0][0] <= now:
                _, request_id = self._expiry.popleft()
                await self._store.forget(request_id)
                await self._bus.drop(request_id)
            if self._expiry:
                await self._clock.sleep(min(max(self._expiry[0][0] - now, 0.0), 30.0))

    async def events(self, request_id: str, after_seq: int) -> AsyncGenerator[events_pb2.QuoteEvent, None]:
        """Replays the events after `after_seq`, then follows the session to its end, from
        wherever it runs: this instance's live stream, else the bus, else the store."""
        if after_seq < 0:
            raise InvalidRequest([FieldViolation("after_seq", "must not be negative")])
        check_request_id(request_id)
        self._watchers[request_id] += 1
        # Events written from now on reach this client live: their delivery lag is measured
        # (those written before are a replay).
        since = self._clock.now().timestamp()
        try:
            last = after_seq
            record: RequestRecord | None = None
            idle = False
            next_mark = 0.0
            while True:
                running = self.runner.running.get(request_id)
                if running is not None and not running.live.closed:
                    async for event in running.live.follow(last):
                        self._measure(event, since)
                        yield event
                        last = event.seq
                        if is_final(event):
                            return
                    continue  # the session left this instance: look again
                if not self._accepting:
                    raise Unavailable("this instance is shutting down; resume on another")
                if record is None or idle:
                    record = await self._get(request_id)
                if record.status != RUNNING:  # finished: the store has every event
                    for event in await self._stored_events(request_id, last):
                        yield event
                    return
                if self._clock.monotonic() >= next_mark:
                    # Tell the instance running it that a client follows (orphan grace).
                    next_mark = self._clock.monotonic() + self._settings.orphan_grace_s / 2
                    with contextlib.suppress(BusUnavailable):
                        await self._bus.watch(request_id, self._settings.orphan_grace_s)
                batch = await self._next_events(record, last)
                idle = not batch
                for event in batch:
                    if event.seq != last + 1:
                        break  # a gap: the next round reads it from the store
                    self._measure(event, since)
                    yield event
                    last = event.seq
                    if is_final(event):
                        return
        finally:
            self._watchers[request_id] -= 1
            if self._watchers[request_id] <= 0:
                del self._watchers[request_id]

    def _measure(self, event: events_pb2.QuoteEvent, since: float) -> None:
        """The delivery lag of an event written while its client listened (`since`)."""
        written = event.time.seconds + event.time.nanos / 1e9
        if written >= since:
            self.metrics.delivery_lag.observe(max(0.0, self._clock.now().timestamp() - written))

    async def _get(self, request_id: str) -> RequestRecord:
        try:
            record = await self._store.get(request_id)
        except StoreUnavailable:
            raise Unavailable("the quote service's storage is unavailable; please retry in a moment") from None
        if record is None:
            raise NotFound(request_id)
        return record

    async def _stored_events(self, request_id: str, after_seq: int) -> list[events_pb2.QuoteEvent]:
        try:
            return await self._store.events(request_id, after_seq)
        except StoreUnavailable:
            raise Unavailable("the quote service's storage is unavailable; please retry in a moment") from None

    async def _next_events(self, record: RequestRecord, last: int) -> list[events_pb2.QuoteEvent]:
        """The events after `last` of a session running elsewhere (or finished): from the bus,
        waiting for them; from the store when the bus has no stream, shows a gap, or fails, and
        once the session is past its deadline (its end is in the store whatever the bus got)."""
        overdue = self._clock.now() > record.deadline + timedelta(seconds=self._settings.store_grace_s)
        batch: list[events_pb2.QuoteEvent] | None
        reading = asyncio.ensure_future(self._bus.read(record.request_id, last, 0 if overdue else BUS_WAIT_S))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not reading.done():
                reading.cancel()
        if not reading.done() or reading.cancelled():
            raise Unavailable("this instance is shutting down; resume on another")
        try:
            batch = reading.result()
        except BusUnavailable:
            batch = None
        if batch is not None and not overdue and (not batch or batch[0].seq == last + 1):
            return batch
        try:
            stored = await self._store.events(record.request_id, last)
        except StoreUnavailable:
            stored = []
        if not stored:
            await self._clock.sleep(STORE_POLL_S)
        return stored

    def release(self, request_id: str) -> None:
        """The caller that started a session went away: cancel the session unless someone picks
        it up (StreamQuoteEvents, on any instance) within the orphan grace period."""
        running = self.runner.running.get(request_id)
        if running is None or running.taken_over:
            return

        async def cancel_if_orphaned() -> None:
            await self._clock.sleep(self._settings.orphan_grace_s)
            if self._watchers[request_id] > 0 or running.task.done():
                return
            try:
                if await self._bus.watched(request_id):
                    return
            except BusUnavailable:
                pass
            log.info("cancelling an unwatched session", extra={"request_id": request_id})
            running.task.cancel()

        self._spawn(cancel_if_orphaned(), f"orphan:{request_id}")

    async def snapshot(self, request_id: str) -> aggregator_service_pb2.QuoteRequest:
        """The request with everything gathered so far, folded from its events."""
        check_request_id(request_id)
        record = await self._get(request_id)
        try:
            logged = await self._store.events(request_id)
        except StoreUnavailable:
            raise Unavailable("the quote service's storage is unavailable; please retry in a moment") from None
        return fold(record, logged)

    async def check_backends(self, timeout_s: float) -> bool:
        """Whether the store and the bus answer within `timeout_s`; new sessions are refused
        while they do not."""
        try:
            await asyncio.wait_for(asyncio.gather(self._store.check(), self._bus.check()), timeout_s)
            ok = True
        except (StoreUnavailable, BusUnavailable, TimeoutError):
            ok = False
        except Exception:
            log.exception("backend check failed")
            ok = False
        if ok != self.backends_ok:
            log.warning("storage %s", "is back" if ok else "is unavailable: new sessions are refused")
        self.backends_ok = ok
        return ok

    async def drain(self, grace_s: float) -> None:
        """Takes no new session, then hands the running ones over to other instances (a shared
        store) or lets them finish within `grace_s` (this instance alone)."""
        self._accepting = False
        self._stopping.set()
        await self._stop_upkeep()
        if self._shared:
            await self.runner.hand_over()
        else:
            await self.runner.finish(grace_s)

    async def close(self) -> None:
        """Stops background work, and the sessions still running here: handed over to other
        instances with a shared store, else cancelled (each finishes CANCELLED)."""
        self._accepting = False
        self._stopping.set()
        await self._stop_upkeep()
        if self._shared:
            await self.runner.hand_over()
        tasks = list(self._tasks)
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.runner.close()


def normalised(application: application_pb2.Application, today: date) -> application_pb2.Application:
    """The application every insurer is sent: defaults made explicit, so all insurers quote the
    same policy (an empty start date means tomorrow, Moscow time; no months of use means 12),
    and every text in Unicode NFC with its surrounding spaces trimmed."""
    result = application_pb2.Application()
    result.CopyFrom(application)
    normalise_text(result)
    if result.vehicle.vin:
        result.vehicle.vin = normalise_vin(result.vehicle.vin)
    if not result.policy_start_date:
        result.policy_start_date = default_policy_start(today).isoformat()
    if result.usage_months == 0:
        result.usage_months = 12
    return result


def vehicle_data(application: application_pb2.Application) -> dict[str, Any]:
    """What the policy is about, without personal data (no names, dates of birth, licences,
    document numbers, VIN or plate): kept beside the request for analytics."""
    vehicle = application.vehicle
    return {
        "make": vehicle.make,
        "model": vehicle.model,
        "year": vehicle.year,
        "power_hp": vehicle.power_hp,
        "category": application_pb2.VehicleCategory.Name(vehicle.category),
        "purpose": application_pb2.VehiclePurpose.Name(vehicle.purpose),
        "region": application.owner.registration_region,
        "drivers": len(application.drivers),
        "unlimited_drivers": application.unlimited_drivers,
        "policy_start_date": application.policy_start_date,
        "usage_months": application.usage_months,
    }


def fold(record: RequestRecord, logged: list[events_pb2.QuoteEvent]) -> aggregator_service_pb2.QuoteRequest:
    snapshot = aggregator_service_pb2.QuoteRequest(
        request_id=record.request_id, status=events_pb2.SessionStatus.SESSION_STATUS_RUNNING
    )
    snapshot.created_at.FromDatetime(record.created_at)
    snapshot.deadline.FromDatetime(record.deadline)
    for insurer_id, name in record.insurers:
        snapshot.insurers.add(insurer_id=insurer_id, insurer_name=name)
    for event in logged:
        kind = event.WhichOneof("payload")
        if kind == "quote_received":
            snapshot.quotes.append(event.quote_received.quote)
        elif kind == "insurer_failed":
            snapshot.failures.append(event.insurer_failed)
        elif kind == "session_finished":
            snapshot.status = event.session_finished.status
        snapshot.last_seq = event.seq
    return snapshot
