"""Getting one offer from one insurer: create the application, then poll it until an offer, a
decline, a failure or the deadline. Transport-free: the HTTP call and the clock are injected, and
every call goes through the insurer's guard (breaker, quota, bulkhead, retries).

The injected HTTP function must finish within the timeout it is given: it answers an
`HttpResponse` or raises one of the `TransportError`s of insurer_gateway.exchange.

Polling adapts to the insurer: the first poll comes at its hint, else at the median time its
recent offers took; hintless polls then back off by `poll_backoff` up to the cap. A Retry-After
header on a pending answer is honoured as the earliest next poll (not capped), unless the body
carries a more precise hint of its own (the simulator's "calc" insurer sends both: exact
milliseconds in the body, whole seconds rounded up in the header).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import deque
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
from insurer_gateway.settings import GatewaySettings
from osago_common.clock import Clock
from osago_common.dates import default_policy_start, moscow_today

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


class ReadyTimes:
    """How long the insurer's recent offers took from its accepting the application.

    Each offer's time is estimated as the middle between the last "not ready" and the poll that
    found it: first polls that always find the offer pull the median down, first polls that come
    too early push it up, so it settles near the insurer's real time.
    """

    def __init__(self, size: int) -> None:
        self._times: deque[float] = deque(maxlen=size)

    def record(self, seconds: float) -> None:
        self._times.append(max(0.0, seconds))

    def median(self) -> float | None:
        return statistics.median(self._times) if self._times else None

    def quantile(self, q: float) -> float | None:
        """The nearest-rank q-quantile (0 < q <= 1) of the recent times: their tail."""
        if not self._times:
            return None
        ordered = sorted(self._times)
        return ordered[max(1, math.ceil(q * len(ordered))) - 1]


class OfferFlow:
    """The create-then-poll conversation with one insurer, as a stream of updates."""

    def __init__(
        self,
        settings: GatewaySettings,
        dialect: Dialect,
        http: HttpFunction,
        clock: Clock,
        guard: InsurerGuard | None = None,
    ) -> None:
        self._settings = settings
        self._dialect = dialect
        self._http = http
        self._clock = clock
        self.guard = guard or InsurerGuard(settings, clock)
        self.ready_times = ReadyTimes(settings.ready_window)

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

    async def _poll(self, created: Created, retry_after: float | None, deadline: float) -> AsyncGenerator[Update, None]:
        s = self._settings
        call = self._dialect.poll_request(created.application_id)
        accepted_at = not_ready_at = self._clock.monotonic()
        hint = created.poll_hint_s
        hintless = 0
        polls = 0
        last_pending: float | None = None
        final_used = False
        while True:
            refused = self.guard.circuit_open("poll")
            if refused is not None:  # the breaker opened meanwhile: no point waiting to poll
                yield refused
                return
            wait, floor = self._wait(hint, retry_after, hintless)
            remaining = deadline - self._clock.monotonic()
            if wait >= remaining:
                # The next regular poll would come too late: make one last poll just before the
                # deadline (unless the insurer asked us not to come that early), then give up.
                last = max(0.0, remaining - s.final_poll_lead_s)
                if final_used or remaining <= 0 or (floor is not None and floor > last):
                    yield failed(Reason.DEADLINE, f"still pending after {polls} polls")
                    return
                final_used = True
                wait = last
            await self._clock.sleep(wait)
            sent_at = self._clock.monotonic()
            answer = await self.guard.send(self._http, call, deadline, "poll", self._read_poll)
            received = self._clock.now()
            polls += 1
            if isinstance(answer, Failed):
                yield answer
                return
            outcome, retry_after = answer
            if isinstance(outcome, NotReady):
                hint = outcome.poll_hint_s
                hintless = 0 if hint is not None or retry_after is not None else hintless + 1
                now = not_ready_at = self._clock.monotonic()
                if last_pending is None or now - last_pending >= s.pending_heartbeat_s:
                    last_pending = now
                    yield Pending(polls)
                continue
            if isinstance(outcome, Offer):
                self.ready_times.record((not_ready_at + sent_at) / 2 - accepted_at)
                yield dataclasses.replace(outcome, obtained_at=received)
            elif isinstance(outcome, Declined):
                yield Failed(Reason.DECLINED, outcome.reason or MESSAGES[Reason.DECLINED], "declined")
            elif isinstance(outcome, NotFound):
                yield failed(Reason.INSURER_ERROR, "poll: the insurer lost the application (404)")
            return

    def _wait(self, hint: float | None, retry_after: float | None, hintless: int) -> tuple[float, float | None]:
        return poll_wait(self._settings, self.ready_times.median(), hint, retry_after, hintless)


def poll_wait(
    s: GatewaySettings, median: float | None, hint: float | None, retry_after: float | None, hintless: int
) -> tuple[float, float | None]:
    """The pause before the next poll, and the insurer's Retry-After when it sets the pause.

    The body's own hint (clamped) wins; else Retry-After, honoured as is; else a growing pause
    from the insurer's median time-to-offer (or the default interval), clamped. (A function of
    its own so that the load benchmark's bare baseline polls by the very same policy.)
    """
    if hint is not None and hint != retry_after:
        return min(max(hint, s.min_poll_interval_s), s.max_poll_interval_s), None
    if retry_after is not None:
        return max(retry_after, s.min_poll_interval_s), retry_after
    base = median if median is not None else s.default_poll_interval_s
    growth = s.poll_backoff ** min(hintless, 64)  # bounded: a float power can overflow
    return min(max(base * growth, s.min_poll_interval_s), s.max_poll_interval_s), None
