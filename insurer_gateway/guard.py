"""Every HTTP call to the insurer goes through `InsurerGuard.send`: circuit breaker, quota,
bulkhead, timeout, then retries of transient failures. One guard per insurer per process.

Pure: the HTTP function, the clock, the rate limiter and the random source are injected.

One attempt: a breaker permit (none: CIRCUIT_OPEN at once, no HTTP call), a token of the
insurer's quota (waiting only while the deadline allows, else RATE_LIMITED), a bulkhead slot
(none: UNAVAILABLE at once), then the call within min(HTTP timeout, time left).

What the breaker is told about an attempt:
- failure: connect error, a full HTTP timeout, 5xx, invalid HTTP, an answer off the API's schema;
- success: any answer the dialect understands, declines and 4xx data refusals included (the
  insurer is working; it just said no);
- nothing (the permit is released): 429, a call cut short by our own deadline, a cancelled call,
  a call refused by our quota or bulkhead. A 429 is the insurer protecting itself from load, not
  a sign it is broken: the quota and Retry-After are the answer to it. Counting it would open
  the breaker on a busy but healthy insurer and turn "slow down a little" into "stop for
  `breaker_open_s`" for every customer.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from opentelemetry import trace

from insurer_gateway.bulkhead import Bulkhead
from insurer_gateway.exchange import (
    BadResponse,
    HttpCall,
    HttpFunction,
    HttpProtocolError,
    HttpResponse,
    HttpTimeout,
    HttpUnavailable,
    retry_after_s,
)
from insurer_gateway.outcomes import Failed, Reason, failed
from insurer_gateway.ratelimit import LocalRateLimiter, RateLimiter
from insurer_gateway.retry import RetryBudget, next_delay
from insurer_gateway.settings import GatewaySettings
from osago_common import tracing
from osago_common.breaker import BreakerState, CircuitBreaker, Permit
from osago_common.clock import Clock

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Transient:
    """An attempt failed in a way another attempt may not (connect error, timeout, 5xx, 429)."""

    failed: Failed
    retry_after_s: float | None = None


class InsurerGuard:
    """The resilience state of one insurer: breaker, quota, bulkhead, retry budget, counters."""

    def __init__(
        self,
        settings: GatewaySettings,
        clock: Clock,
        limiter: RateLimiter | None = None,
        rng: random.Random | None = None,
        observe_call: Callable[[str, float], None] | None = None,
    ) -> None:
        """`observe_call(step, seconds)` is told how long every HTTP call that reached the
        insurer took, whatever its outcome (osago_insurer_call_duration_seconds)."""
        self._settings = settings
        self._clock = clock
        self.breaker = CircuitBreaker(settings.breaker_config(), clock, self._on_transition)
        self.limiter: RateLimiter = limiter or LocalRateLimiter(settings.rate_limit_config(), clock)
        self.bulkhead = Bulkhead(settings.max_in_flight)
        self.policy = settings.retry_policy()
        self.budget = RetryBudget(
            clock,
            ratio=settings.retry_budget_ratio,
            min_per_s=settings.retry_budget_min_per_s,
            window_s=settings.retry_budget_window_s,
        )
        self._rng = rng or random.Random()  # noqa: S311 - retry jitter; nothing secret is drawn
        self.retries_total = 0  # retries sent to the insurer
        self.rate_limited_total = 0  # attempts our quota refused
        self.last_blamed = ""  # the last call that failed or was slow, as the opening's log says
        self._observe_call = observe_call

    @property
    def breaker_state(self) -> BreakerState:
        return self.breaker.state

    def circuit_open(self, step: str) -> Failed | None:
        """CIRCUIT_OPEN (counted as a rejection) when the breaker is open right now, else None."""
        if self.breaker.state is not BreakerState.OPEN:
            return None
        self.breaker.try_acquire()  # refused: counts the rejection
        return self._open_failure(step)

    async def send(
        self,
        http: HttpFunction,
        call: HttpCall,
        deadline: float,
        step: str,
        parse: Callable[[HttpResponse], T],
    ) -> T | Failed:
        """The call's answer read by `parse`, or why there is none; never runs past `deadline`.

        Transient failures are retried with full-jitter backoff (or the insurer's Retry-After
        when longer) while attempts, the retry budget and the deadline allow. Only a call marked
        `idempotent` by whoever built it is retried (a poll; a create carrying its
        Idempotency-Key, which the insurer answers with the application it already made instead
        of making a second one); any other call is tried once.
        """
        attempt = 0
        while True:
            outcome = await self._attempt(http, call, deadline, step, parse, attempt + 1)
            if not isinstance(outcome, _Transient):
                return outcome
            if not call.idempotent or self.policy.max_attempts <= 1:
                return outcome.failed
            delay = next_delay(
                self.policy,
                attempt,
                self._rng,
                self._clock.monotonic(),
                deadline,
                outcome.retry_after_s,
            )
            if delay is None:
                return _after(outcome.failed, attempt + 1)
            if not self.budget.can_retry():
                trace.get_current_span().add_event("osago.retry_budget_spent", {tracing.STEP: step})
                return _after(outcome.failed, attempt + 1, "retry budget spent")
            self.budget.record_retry()  # when planned: concurrent retries cannot overshoot
            await self._clock.sleep(delay)
            attempt += 1

    async def _attempt(
        self,
        http: HttpFunction,
        call: HttpCall,
        deadline: float,
        step: str,
        parse: Callable[[HttpResponse], T],
        attempt: int,
    ) -> T | Failed | _Transient:
        """One attempt (`attempt` counts from 1); past the breaker, traced (when spans are
        recorded) as an `insurer_http` span: step, attempt, HTTP status, and the failure with
        whether it may be retried. The HTTP call itself is its child, a CLIENT span of the
        aiohttp instrumentation."""
        if deadline - self._clock.monotonic() <= 0:
            return failed(Reason.DEADLINE, f"{step}: deadline reached")
        permit = self.breaker.try_acquire()
        if permit is None:
            return self._open_failure(step)
        if attempt == 1:  # a call, for the retry budget, once the breaker let it through
            self.budget.record_call()
        try:
            if not tracing.recording():
                # Nothing records spans: the attempt's span would be made and dropped unseen (a
                # few per cent of a gateway's profile, docs/BENCHMARKS.md); the RequestOffer span
                # stays current, so log lines keep the session's trace id.
                return await self._permitted(http, call, deadline, step, parse, attempt > 1, permit)
            with tracing.tracer(__name__).start_as_current_span(
                "insurer_http",
                kind=trace.SpanKind.INTERNAL,
                attributes={tracing.STEP: step, tracing.ATTEMPT: attempt},
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                outcome = await self._permitted(http, call, deadline, step, parse, attempt > 1, permit)
                failure = outcome.failed if isinstance(outcome, _Transient) else outcome
                if isinstance(failure, Failed):
                    retryable = isinstance(outcome, _Transient)
                    span.set_attributes({tracing.FAILURE: failure.reason.name.lower(), tracing.RETRYABLE: retryable})
                return outcome
        finally:
            if not permit.done:  # no verdict: cancelled, refused by us, 429, cut by the deadline
                permit.release()

    async def _permitted(
        self,
        http: HttpFunction,
        call: HttpCall,
        deadline: float,
        step: str,
        parse: Callable[[HttpResponse], T],
        retry: bool,
        permit: Permit,
    ) -> T | Failed | _Transient:
        """The attempt once the breaker let it through: quota, bulkhead, the call, its verdict."""
        if not await self.limiter.acquire(deadline):
            self.rate_limited_total += 1
            return failed(Reason.RATE_LIMITED, f"{step}: no room in the quota before the deadline")
        # A full bulkhead means calls pile up on a slow insurer: fail this one now instead of
        # queueing it; UNAVAILABLE, as the insurer cannot take more right now (RATE_LIMITED
        # is kept for its quota).
        if not self.bulkhead.try_enter():
            return failed(Reason.UNAVAILABLE, f"{step}: {self.bulkhead.max_in_flight} calls in flight")
        limit = self._settings.http_timeout_s
        started = self._clock.monotonic()
        timeout = min(limit, deadline - started)
        try:
            if timeout <= 0:
                return failed(Reason.DEADLINE, f"{step}: deadline reached")
            self.retries_total += retry
            response = await self._timed(http, call, timeout, step)
        except HttpTimeout:
            if timeout < limit:  # cut short by our deadline: no verdict on the insurer
                return failed(Reason.DEADLINE, f"{step}: deadline reached during the call")
            self._blame(permit, self._clock.monotonic() - started, f"{step}: no answer within {limit:g} s")
            return _Transient(failed(Reason.TIMEOUT, f"{step}: no answer within {limit:g} s"))
        except HttpUnavailable as exc:
            self._blame(permit, self._clock.monotonic() - started, f"{step}: {exc}")
            return _Transient(failed(Reason.UNAVAILABLE, f"{step}: {exc}"))
        except HttpProtocolError as exc:
            self._blame(permit, self._clock.monotonic() - started, f"{step}: {exc}")
            return failed(Reason.BAD_RESPONSE, f"{step}: {exc}")
        finally:
            self.bulkhead.leave()
        duration = self._clock.monotonic() - started
        if tracing.recording():
            trace.get_current_span().set_attribute(tracing.HTTP_STATUS, response.status)
        if response.status == 429:
            return _Transient(failed(Reason.RATE_LIMITED, f"{step}: HTTP 429"), self._retry_after(response))
        if response.status >= 500:
            self._blame(permit, duration, f"{step}: HTTP {response.status}")
            return _Transient(
                failed(Reason.INSURER_ERROR, f"{step}: HTTP {response.status}"),
                self._retry_after(response),
            )
        try:
            parsed = parse(response)
        except BadResponse as exc:
            self._blame(permit, duration, f"{step}: {exc}")
            return failed(Reason.BAD_RESPONSE, f"{step}: {exc}")
        if duration >= self.breaker.config.slow_call_duration_s:
            self.last_blamed = f"{step}: answered in {duration:.1f} s (slow)"
        permit.success(duration)
        return parsed

    def _blame(self, permit: Permit, duration: float, what: str) -> None:
        """Tells the breaker the attempt failed; what failed is kept for the log line of the
        breaker opening (no personal data: steps, statuses, exception types)."""
        self.last_blamed = what
        permit.failure(duration)

    async def _timed(self, http: HttpFunction, call: HttpCall, timeout: float, step: str) -> HttpResponse:
        """The call, its duration observed unless it was cancelled (no answer, no verdict)."""
        if self._observe_call is None:
            return await http(call, timeout)
        started = self._clock.monotonic()
        try:
            response = await http(call, timeout)
        except (HttpTimeout, HttpUnavailable, HttpProtocolError):
            self._observe_call(step, self._clock.monotonic() - started)
            raise
        self._observe_call(step, self._clock.monotonic() - started)
        return response

    def _retry_after(self, response: HttpResponse) -> float | None:
        return retry_after_s(response.headers, self._clock.now())

    def _open_failure(self, step: str) -> Failed:
        """CIRCUIT_OPEN, recorded as an event of the current span (the call's RequestOffer)."""
        trace.get_current_span().add_event("osago.breaker_rejected", {tracing.STEP: step})
        wait = self.breaker.retry_after_s()
        probes = f"; probes in {wait:.1f} s" if wait is not None else "; probes under way"
        return dataclasses.replace(failed(Reason.CIRCUIT_OPEN, f"{step}: circuit open{probes}"), retry_after_s=wait)

    def _on_transition(self, before: BreakerState, after: BreakerState) -> None:
        if after is BreakerState.OPEN:
            log.warning(
                "circuit breaker: insurer=%s %s -> open (last failed or slow call: %s)",
                self._settings.insurer_id,
                before.value,
                self.last_blamed or "none",
            )
            return
        log.info("circuit breaker: insurer=%s %s -> %s", self._settings.insurer_id, before.value, after.value)


def _after(failure: Failed, attempts: int, why: str = "") -> Failed:
    """The last failure, its detail saying how many attempts were made (and why no more)."""
    if attempts <= 1 and not why:
        return failure
    note = f" (after {attempts} attempt{'s' if attempts > 1 else ''}{'; ' + why if why else ''})"
    return Failed(failure.reason, failure.message, failure.detail + note)
