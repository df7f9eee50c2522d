"""Getting one offer from one insurer: create the application, then poll it until an offer, a
decline, a failure or the deadline. Transport-free: the HTTP call and the clock are injected, and
every call goes through the insurer's guard (breaker, quota, bulkhead, retries).

The injected HTTP function must finish within the timeout it is given: it answers an
`HttpResponse` or raises one of the `TransportError`s of insurer_gateway.exchange.

Polling adapts to the insurer (insurer_gateway.polling): its hints are followed once they have
proved right, however long; hints that prove vague are replaced by polls at the learned
quantiles of its time-to-offer; without hints, the median time its recent offers took, backing
off by `poll_backoff` up to the cap. A Retry-After header on a pending answer is honoured as the
earliest next poll (not capped), unless the body carries a more precise hint of its own (the
simulator's "calc" insurer sends both: exact milliseconds in the body, whole seconds rounded up
in the header).

An open breaker does not end an application the insurer has already accepted: its polls wait
until the breaker lets calls through again, while the deadline allows (`OfferFlow._sit_out`);
only a create is refused CIRCUIT_OPEN at once (nothing was asked of the insurer yet).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from osago.v1 import application_pb2

from insurer_gateway.dialects import (
    Created,
    CreateOutcome,
    Declined,
    Dialect,
    NotFound,
    NotReady,
    Offer,
    PollOutcome,
    Rejected,
)
from insurer_gateway.dialects.mapping import iso_date
from insurer_gateway.exchange import HttpCall, HttpFunction, HttpResponse, retry_after_s
from insurer_gateway.guard import InsurerGuard
from insurer_gateway.outcomes import MESSAGES, Failed, Reason, failed
from insurer_gateway.polling import PollLearning, ReadyTimes, Tracker, next_poll, poll_wait
from insurer_gateway.settings import GatewaySettings
from osago_common.clock import Clock
from osago_common.dates import default_policy_start, moscow_today

# While an open breaker's probes are under way, a waiting poll looks again this much later; every
# wait for the breaker is lengthened by a random part of REOPEN_SPREAD_S.
PROBES_RECHECK_S = 1.0
REOPEN_SPREAD_S = 1.0

__all__ = [
    "MESSAGES",
    "Accepted",
    "Failed",
    "OfferFlow",
    "Pending",
    "ReadyTimes",
    "Reason",
    "Update",
    "failed",
    "poll_wait",
]


@dataclass(frozen=True)
class Accepted:
    """The insurer accepted the application under this id."""

    application_id: str


@dataclass(frozen=True)
class Pending:
    """The insurer is still computing after `polls` polls."""

    polls: int


Update = Accepted | Pending | Offer | Failed


class OfferFlow:
    """The create-then-poll conversation with one insurer, as a stream of updates."""

    def __init__(
        self,
        settings: GatewaySettings,
        dialect: Dialect,
        http: HttpFunction,
        clock: Clock,
        guard: InsurerGuard | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._dialect = dialect
        self._http = http
        self._clock = clock
        self.guard = guard or InsurerGuard(settings, clock)
        self.learning = PollLearning(settings)
        self._rng = rng or random.Random()  # noqa: S311 - spreads polls in time; nothing secret is drawn
        self.ready_times = self.learning.ready_times

    def prepare(self, request_id: str, application: application_pb2.Application) -> HttpCall:
        """The call creating the insurer application; raises InvalidApplication.

        The idempotency key and reference are derived from the request id, so calling again
        with the same request id resumes the application the insurer already has; the key is
        what makes retrying a failed create safe: the dialect marks the call `idempotent` (see
        InsurerGuard.send).
        """
        if application.policy_start_date:
            start = iso_date(application.policy_start_date, "policy_start_date")
        else:  # the aggregator always fills it in; a caller of its own may not
            start = default_policy_start(moscow_today(self._clock))
        key = f"{request_id}:{self._settings.insurer_id}"
        return self._dialect.create_request(request_id, key, application, start)

    async def run(self, create: HttpCall, deadline: float) -> AsyncGenerator[Update, None]:
        """Streams Accepted, then Pending now and then, then one Offer or Failed, and stops.

        `deadline` is on the clock's monotonic scale; nothing runs or sleeps past it. With the
        insurer's breaker open, the first update is CIRCUIT_OPEN, without any HTTP call.
        """
        answer = await self.guard.send(self._http, create, deadline, "create", self._read_create)
        if isinstance(answer, Failed):
            yield answer
            return
        created, retry_after = answer
        if isinstance(created, Rejected):
            yield failed(Reason.DECLINED, f"create: application data refused ({created.field})")
            return
        yield Accepted(created.application_id)
        async for update in self._await_outcome(created, retry_after, deadline):
            yield update

    def _await_outcome(
        self, created: Created, retry_after: float | None, deadline: float
    ) -> AsyncGenerator[Update, None]:
        """What follows the create: polling (insurer_gateway.callback_flow waits for a callback)."""
        return self._poll(created, retry_after, deadline)

    def _read_create(self, response: HttpResponse) -> tuple[CreateOutcome, float | None]:
        return self._dialect.parse_create(response), self._retry_after(response)

    def _read_poll(self, response: HttpResponse) -> tuple[PollOutcome, float | None]:
        return self._dialect.parse_poll(response), self._retry_after(response)

    def _retry_after(self, response: HttpResponse) -> float | None:
        return retry_after_s(response.headers, self._clock.now())

    async def _sit_out(self, refused: Failed, deadline: float) -> bool:
        """Waits out the insurer's open breaker for an application it has already accepted (its
        offer may well come: giving the application up would lose it), until the breaker lets
        calls through again, or a moment while its probes are under way; each waiter a random
        part of a second more, so those it held back do not all poll at once. False, at once,
        when the deadline would come first: the application ends CIRCUIT_OPEN, as before."""
        wait = refused.retry_after_s if refused.retry_after_s is not None else PROBES_RECHECK_S
        room = deadline - self._settings.final_poll_lead_s - self._clock.monotonic() - wait
        if room <= 0:
            return False
        await self._clock.sleep(wait + self._rng.uniform(0.0, min(REOPEN_SPREAD_S, room)))
        return True

    async def _poll(self, created: Created, retry_after: float | None, deadline: float) -> AsyncGenerator[Update, None]:
        s = self._settings
        call = self._dialect.poll_request(created.application_id)
        accepted_at = self._clock.monotonic()
        hint = created.poll_hint_s
        track = Tracker(self.learning)
        track.start(hint)
        hintless = 0
        polls = 0
        last_pending: float | None = None
        final_used = False
        # The poll waited out the breaker: it goes as soon as it may, and an outcome it finds
        # teaches nothing of the insurer's times (when it was ready is unknown).
        waited = False
        answered = accepted_at  # when the insurer last answered (its Retry-After counts from it)
        while True:
            now = self._clock.monotonic()
            wait, floor = poll_wait(s, track.learned(), hint, retry_after, hintless, now - accepted_at)
            if waited:  # at once, unless the insurer's last Retry-After says later
                wait = 0.0 if floor is None else max(0.0, answered + floor - now)
            step = next_poll(s, wait, floor, deadline - now, final_used)
            if step is None:
                yield failed(Reason.DEADLINE, f"still pending after {polls} polls")
                return
            wait, final_used = step
            await self._clock.sleep(wait)
            sent_at = self._clock.monotonic()
            answer = await self.guard.send(self._http, call, deadline, "poll", self._read_poll)
            received = self._clock.now()
            if isinstance(answer, Failed) and answer.reason is Reason.CIRCUIT_OPEN:
                # Refused before any call (it opened, or its probes are taken): the poll was
                # due; it waits for the breaker, while the deadline allows, then goes at once.
                if await self._sit_out(answer, deadline):
                    waited = True
                    continue
                yield answer
                return
            polls += 1
            if isinstance(answer, Failed):
                yield answer
                return
            outcome, retry_after = answer
            now = answered = self._clock.monotonic()
            ready = isinstance(outcome, Offer | Declined)
            hint = outcome.poll_hint_s if isinstance(outcome, NotReady) else None
            if not (waited and ready):
                track.answered(sent_at - accepted_at, now - accepted_at, ready, hint, isinstance(outcome, Offer))
            waited = False
            if isinstance(outcome, NotReady):
                hintless = 0 if hint is not None or retry_after is not None else hintless + 1
                if last_pending is None or now - last_pending >= s.pending_heartbeat_s:
                    last_pending = now
                    yield Pending(polls)
                continue
            if isinstance(outcome, Offer):
                yield dataclasses.replace(outcome, obtained_at=received)
            elif isinstance(outcome, Declined):
                yield Failed(Reason.DECLINED, outcome.reason or MESSAGES[Reason.DECLINED], "declined")
            elif isinstance(outcome, NotFound):
                yield failed(Reason.INSURER_ERROR, "poll: the insurer lost the application (404)")
            return
