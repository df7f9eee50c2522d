"""The offer flow of an insurer that calls back: the create is the poll flow's (through the guard,
with the callback URL the dialect writes into it), then the stream waits for the callback, which
the inbox hands over wherever it landed (insurer_gateway.inbox). Two requests per application
reach the insurer's side: the create, and its callback to us.

A callback that never comes is covered by a safety-net poll of the insurer's status endpoint:
slow, paced by the tail of the insurer's recent times-to-offer (`callback_poll_factor` × their
p95 after the create, at least `callback_poll_min_s`), backing off by `poll_backoff`, and one
last poll just before the deadline, so an offer the insurer has is never lost to a lost callback.
Until MIN_TIMES times are known it waits `callback_poll_default_s`: the first callbacks of a cold
start are the fastest ones, and a tail drawn from a few of them polled applications whose
callbacks were merely on time. Before each poll the inbox is asked for a stored callback (one
whose wake-up was missed costs no request). A failed poll ends nothing: the callback may still
come; only the deadline ends the wait. An open breaker skips the poll, for the same reason; a
callback arriving during a poll ends the wait at once. Times-to-offer are learned from
callbacks only, which say exactly when the offer came.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections.abc import AsyncGenerator
from datetime import datetime

from insurer_gateway.dialects import CallbackDialect, Created, Declined, NotFound, NotReady, Offer, PollOutcome
from insurer_gateway.exchange import BadResponse, HttpFunction
from insurer_gateway.guard import InsurerGuard
from insurer_gateway.inbox import CallbackInbox, unseal
from insurer_gateway.offers import OfferFlow, Pending, Update
from insurer_gateway.outcomes import MESSAGES, Failed, Reason, failed
from insurer_gateway.polling import MIN_TIMES
from insurer_gateway.settings import GatewaySettings
from osago_common.clock import Clock

# The tail of the recent times-to-offer the safety-net poll is paced by.
TAIL_QUANTILE = 0.95


class CallbackFlow(OfferFlow):
    """Create, then wait for the callback; a safety-net poll now and then."""

    def __init__(
        self,
        settings: GatewaySettings,
        dialect: CallbackDialect,
        http: HttpFunction,
        clock: Clock,
        inbox: CallbackInbox,
        guard: InsurerGuard | None = None,
    ) -> None:
        super().__init__(settings, dialect, http, clock, guard)
        self._callbacks = dialect
        self._inbox = inbox
        self.callbacks_total = 0  # outcomes that came by callback
        self.safety_polls_total = 0  # status polls made

    def first_safety_poll_s(self) -> float:
        """How long after the create the first safety-net poll comes."""
        s = self._settings
        tail = self.ready_times.quantile(TAIL_QUANTILE) if len(self.ready_times) >= MIN_TIMES else None
        pause = s.callback_poll_default_s if tail is None else tail * s.callback_poll_factor
        return max(pause, s.callback_poll_min_s)

    def _await_outcome(
        self, created: Created, retry_after: float | None, deadline: float
    ) -> AsyncGenerator[Update, None]:
        return self._wait_for_callback(created.application_id, deadline)

    async def _wait_for_callback(self, application_id: str, deadline: float) -> AsyncGenerator[Update, None]:
        s = self._settings
        accepted_at = self._clock.monotonic()
        with self._inbox.waiting(application_id) as arrival:
            body = await self._inbox.stored(application_id)
            if body is not None:  # it came before the create's answer, or to an earlier stream
                yield self._delivered(body, None)
                return
            polls = 0
            pause = self.first_safety_poll_s()
            final_at = deadline - s.final_poll_lead_s
            poll_at = min(accepted_at + pause, final_at)
            heartbeat_at = accepted_at + s.pending_heartbeat_s
            last_failure: Failed | None = None
            while True:
                wake_at = min(poll_at, heartbeat_at, deadline)
                body = await self._until(arrival, wake_at - self._clock.monotonic())
                if body is not None:
                    yield self._delivered(body, accepted_at)
                    return
                now = self._clock.monotonic()
                if now >= deadline:
                    yield _no_callback(polls, last_failure)
                    return
                if now >= heartbeat_at:
                    heartbeat_at = now + s.pending_heartbeat_s
                    yield Pending(polls)
                if now < poll_at:
                    continue
                final = poll_at >= final_at
                pause *= s.poll_backoff
                poll_at = math.inf if final else min(now + pause, final_at)
                body = await self._inbox.stored(application_id)
                if body is not None:
                    yield self._delivered(body, accepted_at)
                    return
                if self.guard.circuit_open("poll") is not None:
                    continue  # the callback may still come
                polls += 1
                self.safety_polls_total += 1
                answer = await self._safety_poll(application_id, arrival, deadline)
                if answer is None:  # the callback came while the poll was under way
                    yield self._delivered(arrival.result(), accepted_at)
                    return
                if isinstance(answer, Failed):
                    last_failure = answer
                    continue
                last_failure = None
                end = _polled(answer[0], self._clock.now())
                if end is not None:
                    yield end
                    return

    async def _safety_poll(
        self, application_id: str, arrival: asyncio.Future[bytes], deadline: float
    ) -> tuple[PollOutcome, float | None] | Failed | None:
        """The status poll's answer, or None when the callback arrived first (the poll is then
        abandoned: a slow or hanging insurer does not hold back an outcome we already have)."""
        call = self._dialect.poll_request(application_id)
        poll = asyncio.ensure_future(self.guard.send(self._http, call, deadline, "poll", self._read_poll))
        try:
            await asyncio.wait((arrival, poll), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not poll.done():
                poll.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poll
        if arrival.done() and not arrival.cancelled():
            return None
        return poll.result()

    async def _until(self, arrival: asyncio.Future[bytes], seconds: float) -> bytes | None:
        """The callback's body once it arrives, or None after `seconds` of the clock."""
        if not arrival.done() and seconds > 0:
            sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
            try:
                await asyncio.wait((arrival, sleeper), return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
        return arrival.result() if arrival.done() and not arrival.cancelled() else None

    def _delivered(self, data: bytes, accepted_at: float | None) -> Offer | Failed:
        """The update a callback makes; an offer's time is learned when the stream saw it arrive
        (`accepted_at`: when it began waiting). The offer is stamped `obtained_at` with the moment
        the endpoint accepted the callback (a body stored unsealed: now)."""
        body, received = unseal(data)
        try:
            pushed = self._callbacks.read_callback(body)
        except BadResponse as exc:  # verified and read once already by the endpoint
            return failed(Reason.BAD_RESPONSE, f"callback: {exc}")
        self.callbacks_total += 1
        if isinstance(pushed.outcome, Declined):
            return Failed(Reason.DECLINED, pushed.outcome.reason or MESSAGES[Reason.DECLINED], "declined")
        if accepted_at is not None:
            self.ready_times.record(self._clock.monotonic() - accepted_at)
        return dataclasses.replace(pushed.outcome, obtained_at=received or self._clock.now())


def _polled(outcome: PollOutcome, received: datetime) -> Offer | Failed | None:
    """What a safety-net poll's answer, received at `received`, ends the stream with (None:
    still pending)."""
    if isinstance(outcome, NotReady):
        return None
    if isinstance(outcome, Declined):
        return Failed(Reason.DECLINED, outcome.reason or MESSAGES[Reason.DECLINED], "declined")
    if isinstance(outcome, NotFound):
        return failed(Reason.INSURER_ERROR, "poll: the insurer lost the application (404)")
    return dataclasses.replace(outcome, obtained_at=received)


def _no_callback(polls: int, last_failure: Failed | None) -> Failed:
    """Why the stream ends at the deadline: the last safety-net poll's failure, else DEADLINE."""
    if last_failure is not None:
        return dataclasses.replace(last_failure, detail=f"no callback; last safety-net poll: {last_failure.detail}")
    return failed(Reason.DEADLINE, f"no callback, still pending after {polls} safety-net polls")
