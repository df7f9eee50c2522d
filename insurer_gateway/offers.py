"""Getting one offer from one insurer: create the application, then poll it until an offer, a
decline, a failure or the deadline. Transport-free: the HTTP call and the clock are injected.

The injected HTTP function must finish within the timeout it is given: it answers an
`HttpResponse` or raises one of the `TransportError`s below.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta, timezone
from typing import Any

from insurer_gateway.dialects import (
    BadResponse,
    Created,
    Declined,
    Dialect,
    HttpCall,
    HttpResponse,
    NotFound,
    NotReady,
    Offer,
    Rejected,
)
from insurer_gateway.dialects.mapping import iso_date
from insurer_gateway.settings import GatewaySettings
from osago_common.clock import Clock


class TransportError(Exception):
    """An HTTP call gave no response; the message never holds the data sent."""


class HttpTimeout(TransportError):
    """No complete response within the call's timeout."""


class HttpUnavailable(TransportError):
    """The insurer could not be reached, or the connection broke (refused, reset, closed)."""


class HttpProtocolError(TransportError):
    """The response was not valid HTTP, or its body was too large."""


HttpFunction = Callable[[HttpCall, float], Awaitable[HttpResponse]]


class Reason(enum.Enum):
    """Why no offer came; the names match osago.v1.FailureReason without its prefix."""

    TIMEOUT = enum.auto()
    DEADLINE = enum.auto()
    UNAVAILABLE = enum.auto()
    DECLINED = enum.auto()
    RATE_LIMITED = enum.auto()
    BAD_RESPONSE = enum.auto()
    INSURER_ERROR = enum.auto()


# What the customer may read for each reason (a decline carries the insurer's own words).
MESSAGES: dict[Reason, str] = {
    Reason.TIMEOUT: "The insurer did not answer in time.",
    Reason.DEADLINE: "The insurer's offer did not come before the time limit.",
    Reason.UNAVAILABLE: "The insurer cannot be reached right now.",
    Reason.DECLINED: "The insurer declined the application.",
    Reason.RATE_LIMITED: "The insurer is receiving too many requests right now.",
    Reason.BAD_RESPONSE: "The insurer answered something we could not understand.",
    Reason.INSURER_ERROR: "The insurer reported an error of its own.",
}


@dataclass(frozen=True)
class Accepted:
    """The insurer accepted the application under this id."""

    application_id: str


@dataclass(frozen=True)
class Pending:
    """The insurer is still computing after `polls` polls."""

    polls: int


@dataclass(frozen=True)
class Failed:
    """No offer; `message` is for the customer, `detail` for operators (no personal data)."""

    reason: Reason
    message: str
    detail: str = ""


Update = Accepted | Pending | Offer | Failed


def failed(reason: Reason, detail: str = "") -> Failed:
    return Failed(reason, MESSAGES[reason], detail)


class OfferFlow:
    """The create-then-poll conversation with one insurer, as a stream of updates."""

    def __init__(
        self, settings: GatewaySettings, dialect: Dialect, http: HttpFunction, clock: Clock
    ) -> None:
        self._settings = settings
        self._dialect = dialect
        self._http = http
        self._clock = clock

    def prepare(self, request_id: str, application: Any) -> HttpCall:
        """The call creating the insurer application; raises InvalidApplication.

        The idempotency key and reference are derived from the request id, so calling again
        with the same request id resumes the application the insurer already has.
        """
        if application.policy_start_date:
            start = iso_date(application.policy_start_date, "policy_start_date")
        else:
            start = self.tomorrow()
        key = f"{request_id}:{self._settings.insurer_id}"
        return self._dialect.create_request(request_id, key, application, start)

    def tomorrow(self) -> date:
        return (self._clock.now().astimezone(timezone.utc) + timedelta(days=1)).date()

    async def run(self, create: HttpCall, deadline: float) -> AsyncGenerator[Update, None]:
        """Streams Accepted, then Pending now and then, then one Offer or Failed, and stops.

        `deadline` is on the clock's monotonic scale; nothing runs or sleeps past it.
        """
        response = await self._send(create, deadline, "create")
        if isinstance(response, Failed):
            yield response
            return
        try:
            created = self._dialect.parse_create(response)
        except BadResponse as exc:
            yield failed(Reason.BAD_RESPONSE, f"create: {exc}")
            return
        if isinstance(created, Rejected):
            yield failed(Reason.DECLINED, f"create: application data refused ({created.field})")
            return
        yield Accepted(created.application_id)
        async for update in self._poll(created, deadline):
            yield update

    async def _poll(self, created: Created, deadline: float) -> AsyncGenerator[Update, None]:
        s = self._settings
        call = self._dialect.poll_request(created.application_id)
        hint = created.poll_hint_s
        hintless = 0
        polls = 0
        last_pending: float | None = None
        final_used = False
        while True:
            wait = self._wait(hint, hintless)
            remaining = deadline - self._clock.monotonic()
            if wait >= remaining:
                # The next regular poll would come too late: make one last poll just before the
                # deadline, then give up.
                if final_used or remaining <= 0:
                    yield failed(Reason.DEADLINE, f"still pending after {polls} polls")
                    return
                final_used = True
                wait = max(0.0, remaining - s.final_poll_lead_s)
            await self._clock.sleep(wait)
            response = await self._send(call, deadline, "poll")
            polls += 1
            if isinstance(response, Failed):
                yield response
                return
            try:
                outcome = self._dialect.parse_poll(response)
            except BadResponse as exc:
                yield failed(Reason.BAD_RESPONSE, f"poll: {exc}")
                return
            if isinstance(outcome, NotReady):
                hint = outcome.poll_hint_s
                hintless = 0 if hint is not None else hintless + 1
                now = self._clock.monotonic()
                if last_pending is None or now - last_pending >= s.pending_heartbeat_s:
                    last_pending = now
                    yield Pending(polls)
                continue
            if isinstance(outcome, Offer):
                yield outcome
            elif isinstance(outcome, Declined):
                yield Failed(Reason.DECLINED, outcome.reason or MESSAGES[Reason.DECLINED], "declined")
            elif isinstance(outcome, NotFound):
                yield failed(Reason.INSURER_ERROR, "poll: the insurer lost the application (404)")
            return

    def _wait(self, hint: float | None, hintless: int) -> float:
        """The pause before the next poll: the insurer's hint, or a growing default, clamped."""
        s = self._settings
        growth = s.poll_backoff ** min(hintless, 64)  # bounded: a float power can overflow
        wait = hint if hint is not None else s.default_poll_interval_s * growth
        return min(max(wait, s.min_poll_interval_s), s.max_poll_interval_s)

    async def _send(self, call: HttpCall, deadline: float, step: str) -> HttpResponse | Failed:
        """One HTTP call within its timeout and the deadline; failures mapped to reasons."""
        limit = self._settings.http_timeout_s
        remaining = deadline - self._clock.monotonic()
        if remaining <= 0:
            return failed(Reason.DEADLINE, f"{step}: deadline reached")
        timeout = min(limit, remaining)
        try:
            response = await self._http(call, timeout)
        except HttpTimeout:
            if timeout < limit:
                return failed(Reason.DEADLINE, f"{step}: deadline reached during the call")
            return failed(Reason.TIMEOUT, f"{step}: no answer within {limit:g} s")
        except HttpUnavailable as exc:
            return failed(Reason.UNAVAILABLE, f"{step}: {exc}")
        except HttpProtocolError as exc:
            return failed(Reason.BAD_RESPONSE, f"{step}: {exc}")
        if response.status == 429:
            return failed(Reason.RATE_LIMITED, f"{step}: HTTP 429")
        if response.status >= 500:
            return failed(Reason.INSURER_ERROR, f"{step}: HTTP {response.status}")
        return response
