"""One quote session: ask every insurer at once, log each answer as it comes, finish by the
deadline whatever the insurers do. Plain asyncio with an injected clock; no transport here.

A session may be resumed on another instance from what it logged (`history`): insurers that
already answered are not asked again, the others are asked again under the same request id
(their gateways resume the insurer application), and it still ends by its original deadline.
A session may also be detached (its instance drains, or lost its lease): it then stops asking
and writes nothing more, leaving the rest to the instance that takes it over.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from opentelemetry import trace
from osago.v1 import application_pb2, events_pb2, gateway_service_pb2, quote_pb2

from aggregator.store import LeaseLost
from osago_common import tracing
from osago_common.clock import Clock, set_timestamp

log = logging.getLogger(__name__)

Reason = quote_pb2.FailureReason
Status = events_pb2.SessionStatus
Progress = events_pb2.InsurerProgressState
# The module's constants, not the enum wrapper's attributes (a Python-level lookup each): read
# for every update of every insurer.
_ACCEPTED = events_pb2.INSURER_PROGRESS_STATE_ACCEPTED
_PENDING = events_pb2.INSURER_PROGRESS_STATE_PENDING

# Failures that say "could not get an answer" rather than "answered no": when every insurer
# fails this way at once, the cause is most likely shared (e.g. the national registry is down).
OUTAGE_REASONS = frozenset(
    {
        Reason.FAILURE_REASON_UNAVAILABLE,
        Reason.FAILURE_REASON_TIMEOUT,
        Reason.FAILURE_REASON_INSURER_ERROR,
        Reason.FAILURE_REASON_BAD_RESPONSE,
        Reason.FAILURE_REASON_CIRCUIT_OPEN,
    }
)


class OfferSource(Protocol):
    """Where offers come from: the insurer gateways."""

    def request_offer(
        self, insurer_id: str, request_id: str, application: application_pb2.Application, timeout_s: float
    ) -> AsyncIterator[gateway_service_pb2.RequestOfferResponse]:
        """Streams one insurer's updates until an offer or a failure. Transport failures come as
        a final `failed` update, never as an exception."""


class SessionLog(Protocol):
    """Where a session's events go: numbered, stored, published (aggregator.writer)."""

    async def append(self, event: events_pb2.QuoteEvent) -> events_pb2.QuoteEvent:
        """Logs the event under the next seq; raises LeaseLost when this instance no longer runs
        the session. An event handed over is logged even if the caller stops waiting."""

    async def append_all(self, events: Sequence[events_pb2.QuoteEvent]) -> None:
        """Logs the events, in order, under the next seqs (as `append` does each)."""

    async def logged(self) -> Sequence[events_pb2.QuoteEvent]:
        """Every event the session logged (those before it came to this instance included), once
        none handed over is still being written."""


@dataclass(frozen=True)
class SessionPlan:
    request_id: str
    application: application_pb2.Application
    # (insurer_id, insurer_name) in the order they are asked.
    insurers: tuple[tuple[str, str], ...]
    # On the clock's monotonic scale.
    deadline: float
    limit_s: float
    # Offers from the cache of results, by insurer: those insurers are not asked again.
    cached: Mapping[str, quote_pb2.Quote] = field(default_factory=dict)


@dataclass
class _Tally:
    quotes: int = 0
    failures: list[Reason.ValueType] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)
    progress: dict[str, int] = field(default_factory=dict)

    def count(self, event: events_pb2.QuoteEvent) -> None:
        kind = event.WhichOneof("payload")
        if kind == "quote_received":
            self.quotes += 1
            self.answered.add(event.quote_received.quote.insurer_id)
        elif kind == "insurer_failed":
            self.failures.append(event.insurer_failed.reason)
            self.answered.add(event.insurer_failed.insurer_id)
        elif kind == "insurer_progress":
            self.progress[event.insurer_progress.insurer_id] = event.insurer_progress.state


class QuoteSession:
    """Runs one session to its end, appending every event to the log."""

    def __init__(
        self,
        plan: SessionPlan,
        source: OfferSource,
        events: SessionLog,
        clock: Clock,
        *,
        gateway_margin_s: float,
        history: Sequence[events_pb2.QuoteEvent] = (),
    ) -> None:
        self.plan = plan
        self._source = source
        self._events = events
        self._clock = clock
        self._margin = gateway_margin_s
        self._tally = _Tally()
        for event in history:
            self._tally.count(event)
        # The SessionStatus this session finished with, once its final event is logged here.
        self.status: int | None = None
        # Why unanswered insurer calls were stopped: "deadline", "cancelled" or "detached".
        self._stopped = "deadline"
        self._detached = False

    def detach(self) -> None:
        """Marks the session as handed over: once its task is cancelled it writes nothing more."""
        self._detached = True

    def _event(self) -> events_pb2.QuoteEvent:
        event = events_pb2.QuoteEvent(request_id=self.plan.request_id)
        set_timestamp(event.time, self._clock.now())
        return event

    async def run(self) -> int:
        """Runs the session; returns the SessionStatus it finished with. Raises CancelledError
        when cancelled (after logging CANCELLED, unless detached) and LeaseLost when another
        instance took the session over."""
        cached = [
            self._quote_event(insurer_id, name, quote)
            for insurer_id, name in self.plan.insurers
            if (quote := self.plan.cached.get(insurer_id)) is not None and insurer_id not in self._tally.answered
        ]
        if cached:
            await self._events.append_all(cached)
            for event in cached:
                self._tally.count(event)
        in_time = self.plan.deadline > self._clock.monotonic()  # a session resumed late: just finish
        tasks = [
            asyncio.create_task(self._ask(insurer_id, name), name=f"offer:{insurer_id}")
            for insurer_id, name in self.plan.insurers
            if insurer_id not in self._tally.answered and in_time
        ]
        timer = asyncio.create_task(self._clock.sleep(self.plan.deadline - self._clock.monotonic()))
        cancelled = False
        lost: LeaseLost | None = None
        try:
            waiting: set[asyncio.Task[None]] = set(tasks)
            while waiting:
                done, _ = await asyncio.wait({*waiting, timer}, return_when=asyncio.FIRST_COMPLETED)
                waiting -= done
                if timer in done:
                    break
                for task in done:
                    if isinstance(task.exception(), LeaseLost):
                        lost = task.exception()  # type: ignore[assignment]
                if lost is not None:
                    break
        except asyncio.CancelledError:
            cancelled = True
        finally:
            self._stopped = "detached" if self._detached or lost else "cancelled" if cancelled else "deadline"
            timer.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, timer, return_exceptions=True)
        if lost is not None:
            raise lost
        if self._detached:
            raise asyncio.CancelledError
        status = await self._finish(cancelled)
        if cancelled:
            raise asyncio.CancelledError
        return status

    async def _ask(self, insurer_id: str, name: str) -> None:
        """One insurer's call, in its `request_offer` CLIENT span (a child of the session's,
        parent of the gateway's SERVER span of each call: more than one when a call is resumed
        on another replica). When nothing records spans it is not made (ten a session, each
        dropped unseen); the gateways' spans then continue the session's trace directly."""
        if not tracing.recording():
            await self._collect(insurer_id, name)
            return
        with tracing.tracer(__name__).start_as_current_span(
            "request_offer",
            kind=trace.SpanKind.CLIENT,
            attributes={tracing.REQUEST_ID: self.plan.request_id, tracing.INSURER_ID: insurer_id},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                outcome = await self._collect(insurer_id, name)
            except asyncio.CancelledError:
                # The session stopped waiting: its deadline, cancelled, or handed over.
                span.set_attribute(tracing.OUTCOME, self._stopped)
                raise
            except LeaseLost:
                span.set_attribute(tracing.OUTCOME, "detached")
                raise
            span.set_attribute(tracing.OUTCOME, outcome)

    async def _collect(self, insurer_id: str, name: str) -> str:
        """Logs the insurer's updates until its answer; returns the outcome: "offer" or the
        failure reason (e.g. "declined")."""
        remaining = self.plan.deadline - self._clock.monotonic() - self._margin
        progress = self._tally.progress.get(insurer_id, Progress.INSURER_PROGRESS_STATE_UNSPECIFIED)
        try:
            updates = self._source.request_offer(
                insurer_id, self.plan.request_id, self.plan.application, max(remaining, 0.05)
            )
            async for update in updates:
                kind = update.WhichOneof("update")
                if kind == "offer":
                    await self._quote(insurer_id, name, update.offer)
                    return "offer"
                if kind == "failed":
                    await self._failed(insurer_id, name, update.failed.reason, update.failed.message)
                    return reason_name(update.failed.reason)
                state = _ACCEPTED if kind == "accepted" else _PENDING
                if state != progress:  # only changes of state reach the log
                    progress = state
                    self._tally.progress[insurer_id] = state
                    event = self._event()
                    told = event.insurer_progress
                    told.insurer_id, told.insurer_name, told.state = insurer_id, name, state
                    await self._events.append(event)
            await self._failed(
                insurer_id, name, Reason.FAILURE_REASON_BAD_RESPONSE, "the insurer's gateway ended without an answer"
            )
            return reason_name(Reason.FAILURE_REASON_BAD_RESPONSE)
        except (asyncio.CancelledError, LeaseLost):
            raise
        except Exception:
            log.exception("offer task failed", extra={"request_id": self.plan.request_id, "insurer_id": insurer_id})
            if insurer_id not in self._tally.answered:
                await self._failed(insurer_id, name, Reason.FAILURE_REASON_INTERNAL, "internal error")
            return reason_name(Reason.FAILURE_REASON_INTERNAL)

    def _quote_event(self, insurer_id: str, name: str, offer: quote_pb2.Quote) -> events_pb2.QuoteEvent:
        event = self._event()
        quote = event.quote_received.quote
        quote.CopyFrom(offer)
        quote.insurer_id = insurer_id
        quote.insurer_name = name
        return event

    def _failed_event(
        self, insurer_id: str, name: str, reason: Reason.ValueType, message: str
    ) -> events_pb2.QuoteEvent:
        event = self._event()
        event.insurer_failed.CopyFrom(
            events_pb2.InsurerFailed(insurer_id=insurer_id, insurer_name=name, reason=reason, message=message)
        )
        return event

    async def _quote(self, insurer_id: str, name: str, offer: quote_pb2.Quote) -> None:
        event = self._quote_event(insurer_id, name, offer)
        await self._events.append(event)
        self._tally.count(event)

    async def _failed(self, insurer_id: str, name: str, reason: Reason.ValueType, message: str) -> None:
        event = self._failed_event(insurer_id, name, reason, message)
        await self._events.append(event)
        self._tally.count(event)

    async def _finish(self, cancelled: bool) -> int:
        # What the log holds, not what the insurers' tasks counted: a task stopped by the deadline
        # while its answer was being written did not count it, and the answer is logged anyway.
        self._tally = _Tally()
        for logged in await self._events.logged():
            self._tally.count(logged)
        limit = f"{self.plan.limit_s:g} s"
        events = [
            self._failed_event(insurer_id, name, Reason.FAILURE_REASON_CANCELLED, "the request was cancelled")
            if cancelled
            else self._failed_event(
                insurer_id, name, Reason.FAILURE_REASON_DEADLINE, f"no offer within the {limit} limit"
            )
            for insurer_id, name in self.plan.insurers
            if insurer_id not in self._tally.answered
        ]
        for late in events:
            self._tally.count(late)
        asked = len(self.plan.insurers)
        quotes = self._tally.quotes
        failures = self._tally.failures
        # Gateways end their own calls just before the deadline, so some "late" insurers were
        # already reported DEADLINE by their gateway.
        out_of_time = failures.count(Reason.FAILURE_REASON_DEADLINE)
        if cancelled:
            status, message = Status.SESSION_STATUS_CANCELLED, "The request was cancelled."
        elif quotes == 0 and asked > 1 and all(r in OUTAGE_REASONS for r in failures):
            status = Status.SESSION_STATUS_UPSTREAM_OUTAGE
            message = (
                "No insurer could answer: all of them failed at once, which points to a shared "
                "outage (such as the national registry). Please try again in a few minutes."
            )
        else:
            status = Status.SESSION_STATUS_DEADLINE_EXCEEDED if out_of_time else Status.SESSION_STATUS_COMPLETED
            message = summary(asked, quotes, failures, limit)
        event = self._event()
        event.session_finished.CopyFrom(
            events_pb2.SessionFinished(
                status=status,
                insurers_asked=asked,
                quotes_received=quotes,
                insurers_failed=len(failures),
                message=message,
            )
        )
        events.append(event)
        await self._events.append_all(events)
        self.status = int(status)
        # The session's span (started by whoever runs the session); a no-op without one.
        trace.get_current_span().set_attributes(
            {tracing.STATUS: status_name(status), tracing.QUOTES: quotes, tracing.FAILED: len(failures)}
        )
        return int(status)


def summary(asked: int, quotes: int, failures: Sequence[Reason.ValueType], limit: str) -> str:
    """What became of every insurer asked, each outcome counted on its own: offers, declines,
    failures by kind, and those that ran out of time."""
    counts = Counter(failures)
    declined = counts.pop(Reason.FAILURE_REASON_DECLINED, 0)
    late = counts.pop(Reason.FAILURE_REASON_DEADLINE, 0)
    parts = [f"{_counted(quotes, 'offer')} from {_counted(asked, 'insurer')}"]
    if declined:
        parts.append(f"{declined} declined")
    if counts:
        kinds = ", ".join(f"{n} {reason_name(r).replace('_', ' ')}" for r, n in sorted(counts.items()))
        parts.append(f"{counts.total()} failed ({kinds})")
    if late:
        parts.append(f"{late} did not answer within the {limit} limit")
    if len(parts) == 1:
        parts.append("every insurer made an offer")
    return "; ".join(parts) + "."


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def reason_name(reason: Reason.ValueType) -> str:
    """A failure reason for spans and logs: "declined" for FAILURE_REASON_DECLINED."""
    try:
        return str(Reason.Name(reason)).removeprefix("FAILURE_REASON_").lower()
    except ValueError:  # a reason newer than this code
        return str(reason)


def status_name(status: Status.ValueType) -> str:
    return str(Status.Name(status)).removeprefix("SESSION_STATUS_").lower()


def session_started(
    request_id: str, insurers: Sequence[tuple[str, str]], clock: Clock, deadline_wall: datetime
) -> events_pb2.QuoteEvent:
    """The first event of a session."""
    event = events_pb2.QuoteEvent(request_id=request_id, seq=1)
    set_timestamp(event.time, clock.now())
    started = event.session_started
    for insurer_id, name in insurers:
        started.insurers.add(insurer_id=insurer_id, insurer_name=name)
    set_timestamp(started.deadline, deadline_wall)
    return event
