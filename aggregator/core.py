"""The aggregator's use cases, free of transport: create a quote request and run its session,
read a snapshot, follow the event log."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import uuid
from collections.abc import AsyncGenerator, Callable
from datetime import date, timedelta

from osago.v1 import aggregator_service_pb2, application_pb2, events_pb2

from aggregator.eventlog import EventLog, UnknownRequest
from aggregator.session import OfferSource, QuoteSession, SessionPlan, session_started
from aggregator.settings import AggregatorSettings
from aggregator.store import RequestRecord, RequestStore
from osago_common import tracing
from osago_common.clock import SYSTEM_CLOCK, Clock
from osago_common.dates import default_policy_start, moscow_today
from osago_common.validation import FieldViolation, validate_application

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 128


class InvalidRequest(ValueError):
    """The request breaks the contract; carries every field violation."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations


class NotFound(LookupError):
    """No such quote request (never created, or past retention)."""


class Aggregator:
    def __init__(
        self,
        settings: AggregatorSettings,
        source: OfferSource,
        store: RequestStore,
        events: EventLog,
        clock: Clock = SYSTEM_CLOCK,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._settings = settings
        self._source = source
        self._store = store
        self._events = events
        self._clock = clock
        self._new_id = new_id
        self._insurers = tuple((g.insurer_id, g.insurer_name) for g in settings.gateways)
        self._sessions: dict[str, asyncio.Task[int]] = {}
        self._watchers: collections.Counter[str] = collections.Counter()
        self._expiry: collections.deque[tuple[float, str]] = collections.deque()
        self._sweeper: asyncio.Task[None] | None = None

    async def create(
        self, application: application_pb2.Application | None, idempotency_key: str, time_limit_s: float | None
    ) -> tuple[RequestRecord, bool]:
        """Validates and stores a request and starts its session; with an idempotency key already
        used for the same application, returns that request (flag False) and starts nothing."""
        violations: list[FieldViolation] = []
        if application is None:
            violations.append(FieldViolation("application", "is required"))
        else:
            violations += validate_application(application, moscow_today(self._clock))
        if len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            violations.append(FieldViolation("idempotency_key", f"must be at most {MAX_IDEMPOTENCY_KEY} characters"))
        if time_limit_s is not None and time_limit_s <= 0:
            violations.append(FieldViolation("time_limit", "must be positive"))
        if violations:
            raise InvalidRequest(violations)
        assert application is not None
        application = normalised(application, moscow_today(self._clock))
        limit = min(self._settings.session_limit_s, time_limit_s or self._settings.session_limit_s)
        now = self._clock.now()
        record = RequestRecord(
            request_id=self._new_id(),
            created_at=now,
            deadline=now + timedelta(seconds=limit),
            insurers=self._insurers,
            idempotency_key=idempotency_key,
            fingerprint=hashlib.sha256(application.SerializeToString(deterministic=True)).hexdigest(),
        )
        stored, created = await self._store.create(record)
        if not created:
            if stored.fingerprint != record.fingerprint:
                raise InvalidRequest(
                    [FieldViolation("idempotency_key", "was already used for a different application")]
                )
            return stored, False
        await self._events.open(record.request_id)
        await self._events.append(session_started(record.request_id, record.insurers, self._clock, record.deadline))
        plan = SessionPlan(record.request_id, application, record.insurers, self._clock.monotonic() + limit, limit)
        session = QuoteSession(plan, self._source, self._events, self._clock, gateway_margin_s=self._settings.gateway_margin_s)
        task = asyncio.create_task(_traced(session), name=f"session:{record.request_id}")
        self._sessions[record.request_id] = task
        task.add_done_callback(lambda _t: self._finished(record.request_id))
        self._ensure_sweeper()
        return record, True

    def _finished(self, request_id: str) -> None:
        self._sessions.pop(request_id, None)
        self._expiry.append((self._clock.monotonic() + self._settings.retention_s, request_id))

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="retention-sweeper")

    async def _sweep(self) -> None:
        while self._sessions or self._expiry:
            now = self._clock.monotonic()
            while self._expiry and self._expiry[0][0] <= now:
                _, request_id = self._expiry.popleft()
                await self._store.delete(request_id)
                await self._events.drop(request_id)
            wait = self._expiry[0][0] - now if self._expiry else self._settings.retention_s
            await self._clock.sleep(min(max(wait, 0.0), 30.0))

    async def events(self, request_id: str, after_seq: int) -> AsyncGenerator[events_pb2.QuoteEvent, None]:
        """Replays the events after `after_seq`, then follows the session to its end."""
        if after_seq < 0:
            raise InvalidRequest([FieldViolation("after_seq", "must not be negative")])
        if not request_id:
            raise InvalidRequest([FieldViolation("request_id", "is required")])
        self._watchers[request_id] += 1
        try:
            stream = self._events.follow(request_id, after_seq)
            try:
                first = await anext(stream)
            except UnknownRequest:
                raise NotFound(request_id) from None
            except StopAsyncIteration:
                return
            yield first
            async for event in stream:
                yield event
        finally:
            self._watchers[request_id] -= 1
            if self._watchers[request_id] <= 0:
                del self._watchers[request_id]

    def release(self, request_id: str) -> None:
        """The caller that started a session went away: cancel the session unless someone
        picks it up (StreamQuoteEvents) within the orphan grace period."""
        task = self._sessions.get(request_id)
        if task is None:
            return

        async def cancel_if_orphaned() -> None:
            await self._clock.sleep(self._settings.orphan_grace_s)
            if self._watchers[request_id] <= 0 and not task.done():
                log.info("cancelling an unwatched session", extra={"request_id": request_id})
                task.cancel()

        asyncio.create_task(cancel_if_orphaned(), name=f"orphan:{request_id}")

    async def snapshot(self, request_id: str) -> aggregator_service_pb2.QuoteRequest:
        """The request with everything gathered so far, folded from its event log."""
        if not request_id:
            raise InvalidRequest([FieldViolation("request_id", "is required")])
        record = await self._store.get(request_id)
        if record is None:
            raise NotFound(request_id)
        try:
            logged = await self._events.read(request_id)
        except UnknownRequest:
            raise NotFound(request_id) from None
        return fold(record, logged)

    async def close(self) -> None:
        """Cancels every running session (each finishes with CANCELLED) and the sweeper."""
        tasks = list(self._sessions.values())
        if self._sweeper is not None:
            tasks.append(self._sweeper)  # type: ignore[arg-type]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _traced(session: QuoteSession) -> int:
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
        },
        record_exception=False,
        set_status_on_exception=False,
    ):
        return await session.run()


def normalised(application: application_pb2.Application, today: date) -> application_pb2.Application:
    """The application every insurer is sent: defaults made explicit, so all insurers quote the
    same policy (an empty start date means tomorrow, Moscow time; no months of use means 12)."""
    result = application_pb2.Application()
    result.CopyFrom(application)
    if not result.policy_start_date:
        result.policy_start_date = default_policy_start(today).isoformat()
    if result.usage_months == 0:
        result.usage_months = 12
    return result


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
