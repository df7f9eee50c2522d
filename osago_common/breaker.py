"""A circuit breaker (one per insurer in the gateways, one per gateway in the aggregator), with
resilience4j's semantics and an injected clock.

CLOSED: calls go through and their outcomes fill a sliding window (the last `window_size` calls,
or the calls of the last `window_size` seconds in one-second buckets). Once the window holds at
least `minimum_calls`, a failure rate or a slow-call rate at or above its threshold opens the
breaker. OPEN: every call fails fast for `open_duration_s`; the move to HALF_OPEN happens lazily,
when the state is next looked at. HALF_OPEN: `half_open_probes` permits go to probe calls while
everyone else fails fast; a probe failure reopens the breaker, and once every probe has succeeded
the breaker closes with an empty window (or reopens if the probes were slow at the slow-call
threshold). A permit's verdict counts only in the state it was granted in: a call that began
before the breaker changed state is ignored.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from osago_common.clock import Clock


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """Thresholds; `window_size` counts calls for a "count" window, seconds for a "time" one."""

    window_type: Literal["count", "time"] = "count"
    window_size: int = 20
    minimum_calls: int = 10
    failure_rate_threshold: float = 0.5
    slow_call_rate_threshold: float = 1.0
    slow_call_duration_s: float = 4.0
    open_duration_s: float = 10.0
    half_open_probes: int = 2

    def __post_init__(self) -> None:
        if self.window_type not in ("count", "time"):
            raise ValueError(f"window_type must be 'count' or 'time', not {self.window_type!r}")
        for name in ("window_size", "minimum_calls", "half_open_probes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1]")
        for name in ("slow_call_duration_s", "open_duration_s"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name} must be positive")


@dataclass
class _Counts:
    calls: int = 0
    failed: int = 0
    slow: int = 0

    def add(self, failed: bool, slow: bool, sign: int = 1) -> None:
        self.calls += sign
        self.failed += sign * failed
        self.slow += sign * slow


class _CountWindow:
    """The outcomes of the last `size` calls."""

    def __init__(self, size: int) -> None:
        self._outcomes: deque[tuple[bool, bool]] = deque()
        self._size = size
        self._totals = _Counts()

    def record(self, failed: bool, slow: bool, now: float) -> None:
        if len(self._outcomes) == self._size:
            self._totals.add(*self._outcomes.popleft(), sign=-1)
        self._outcomes.append((failed, slow))
        self._totals.add(failed, slow)

    def totals(self, now: float) -> _Counts:
        return self._totals


class _TimeWindow:
    """The outcomes of the calls of the last `seconds` seconds, in one-second buckets."""

    def __init__(self, seconds: int) -> None:
        self._buckets: deque[tuple[int, _Counts]] = deque()
        self._seconds = seconds
        self._totals = _Counts()

    def _expire(self, now: float) -> int:
        second = math.floor(now)
        while self._buckets and self._buckets[0][0] <= second - self._seconds:
            counts = self._buckets.popleft()[1]
            self._totals.calls -= counts.calls
            self._totals.failed -= counts.failed
            self._totals.slow -= counts.slow
        return second

    def record(self, failed: bool, slow: bool, now: float) -> None:
        second = self._expire(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append((second, _Counts()))
        self._buckets[-1][1].add(failed, slow)
        self._totals.add(failed, slow)

    def totals(self, now: float) -> _Counts:
        self._expire(now)
        return self._totals


class Permit:
    """Leave to make one call; report its outcome once with `success`, `failure` or `release`."""

    def __init__(self, breaker: CircuitBreaker, epoch: int) -> None:
        self._breaker = breaker
        self._epoch = epoch
        self.done = False

    def success(self, duration_s: float) -> None:
        """The call got a usable answer (a decline counts: the insurer is working)."""
        self._report(failed=False, duration_s=duration_s)

    def failure(self, duration_s: float) -> None:
        """The call failed in a way that says the insurer is unhealthy."""
        self._report(failed=True, duration_s=duration_s)

    def release(self) -> None:
        """The call ended without a verdict (e.g. cancelled): frees a probe slot, counts nothing."""
        if not self.done:
            self.done = True
            self._breaker._on_release(self._epoch)

    def _report(self, failed: bool, duration_s: float) -> None:
        if not self.done:
            self.done = True
            self._breaker._on_outcome(self._epoch, failed, duration_s)


class CircuitBreaker:
    """One insurer's breaker. Single-threaded (asyncio): no method awaits, so each is atomic."""

    def __init__(
        self,
        config: BreakerConfig,
        clock: Clock,
        on_transition: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        self._epoch = 0  # bumped on every transition; stale permits are ignored
        self._window = self._new_window()
        self._opened_at = 0.0
        self._probes_in_flight = 0
        self._probes_succeeded = 0
        self._probes_slow = 0
        self.rejected_total = 0
        self.opened_total = 0
        # State changes by the state entered (osago_breaker_transitions_total).
        self.transitions = dict.fromkeys(BreakerState, 0)

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self.clock.monotonic() >= self._opened_at + self.config.open_duration_s:
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    def try_acquire(self) -> Permit | None:
        """A permit for one call, or None: fail fast without calling the insurer."""
        state = self.state
        if state is BreakerState.HALF_OPEN:
            if self._probes_in_flight + self._probes_succeeded >= self.config.half_open_probes:
                state = BreakerState.OPEN  # every probe slot is taken
            else:
                self._probes_in_flight += 1
        if state is BreakerState.OPEN:
            self.rejected_total += 1
            return None
        return Permit(self, self._epoch)

    def retry_after_s(self) -> float | None:
        """Seconds until an open breaker lets probes through; None unless open."""
        if self.state is not BreakerState.OPEN:
            return None
        return max(0.0, self._opened_at + self.config.open_duration_s - self.clock.monotonic())

    def _new_window(self) -> _CountWindow | _TimeWindow:
        if self.config.window_type == "count":
            return _CountWindow(self.config.window_size)
        return _TimeWindow(self.config.window_size)

    def _minimum_calls(self) -> int:
        # As in resilience4j, a count window smaller than minimum_calls can still open.
        if self.config.window_type == "count":
            return min(self.config.minimum_calls, self.config.window_size)
        return self.config.minimum_calls

    def _on_outcome(self, epoch: int, failed: bool, duration_s: float) -> None:
        if epoch != self._epoch:
            return
        slow = duration_s >= self.config.slow_call_duration_s
        if self._state is BreakerState.CLOSED:
            now = self.clock.monotonic()
            self._window.record(failed, slow, now)
            totals = self._window.totals(now)
            if totals.calls >= self._minimum_calls() and (
                totals.failed / totals.calls >= self.config.failure_rate_threshold
                or totals.slow / totals.calls >= self.config.slow_call_rate_threshold
            ):
                self._transition(BreakerState.OPEN)
        elif self._state is BreakerState.HALF_OPEN:
            self._probes_in_flight -= 1
            if failed:
                self._transition(BreakerState.OPEN)
                return
            self._probes_succeeded += 1
            self._probes_slow += slow
            probes = self.config.half_open_probes
            if self._probes_succeeded >= probes:
                slow_rate = self._probes_slow / probes
                too_slow = slow_rate >= self.config.slow_call_rate_threshold
                self._transition(BreakerState.OPEN if too_slow else BreakerState.CLOSED)

    def _on_release(self, epoch: int) -> None:
        if epoch == self._epoch and self._state is BreakerState.HALF_OPEN:
            self._probes_in_flight -= 1

    def _transition(self, to: BreakerState) -> None:
        before = self._state
        self._state = to
        self._epoch += 1
        self.transitions[to] += 1
        self._probes_in_flight = self._probes_succeeded = self._probes_slow = 0
        if to is BreakerState.OPEN:
            self._opened_at = self.clock.monotonic()
            self.opened_total += 1
        elif to is BreakerState.CLOSED:
            self._window = self._new_window()
        if self._on_transition is not None:
            self._on_transition(before, to)
