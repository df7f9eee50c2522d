"""Retries toward an insurer: full-jitter backoff and a retry budget (which failures are retried
is the guard's call: insurer_gateway.guard).

Full jitter (`uniform(0, min(cap, base * 2**attempt))`) spreads retries of many callers over
time; the budget (retries at most `ratio` × calls in a sliding window, plus a small reserve) keeps
a failing insurer from being sent more than `1 + ratio` times its normal load; and no retry is
planned whose sleep would end at or past the deadline.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from osago_common.clock import Clock


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; `max_attempts` counts the first call too."""

    base_s: float = 0.1
    cap_s: float = 2.0
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if not 0.0 < self.base_s <= self.cap_s:
            raise ValueError("need 0 < base_s <= cap_s")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def ceiling(self, attempt: int) -> float:
        """The longest delay after the failure of attempt number `attempt` (0 = the first call)."""
        if attempt < 0:
            raise ValueError("attempt must not be negative")
        if attempt >= 64:  # 2**64 * base is past any sane cap; avoids float overflow
            return self.cap_s
        return min(self.cap_s, self.base_s * 2.0**attempt)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """A full-jitter delay after the failure of attempt number `attempt` (0-based)."""
        return rng.uniform(0.0, self.ceiling(attempt))


def next_delay(
    policy: RetryPolicy,
    attempt: int,
    rng: random.Random,
    now: float,
    deadline: float | None,
    retry_after_s: float | None = None,
) -> float | None:
    """The sleep before retrying after attempt number `attempt` (0-based) failed, or None.

    None when the attempts are used up, or when the sleep — the jittered delay, or the insurer's
    Retry-After when longer — would end at or past the deadline (no time would be left to call).
    """
    if attempt + 1 >= policy.max_attempts:
        return None
    delay = policy.delay(attempt, rng)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    if deadline is not None and now + delay >= deadline:
        return None
    return delay


class RetryBudget:
    """Retries allowed while retries ≤ `ratio` × calls + `min_per_s` × `window_s`, over a
    sliding window of `window_s` seconds.

    `record_call()` for every first attempt (not for retries), `can_retry()` before planning a
    retry, `record_retry()` when making one. The reserve lets a quiet insurer still be retried.
    """

    def __init__(self, clock: Clock, ratio: float = 0.2, min_per_s: float = 1.0, window_s: float = 10.0) -> None:
        if ratio < 0 or min_per_s < 0 or window_s <= 0:
            raise ValueError("need ratio >= 0, min_per_s >= 0 and window_s > 0")
        self._clock = clock
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.window_s = window_s
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()
        self.exhausted_total = 0

    def _expire(self) -> float:
        now = self._clock.monotonic()
        horizon = now - self.window_s
        for events in (self._calls, self._retries):
            while events and events[0] <= horizon:
                events.popleft()
        return now

    def record_call(self) -> None:
        self._calls.append(self._expire())

    def record_retry(self) -> None:
        self._retries.append(self._expire())

    def allowed(self) -> float:
        """How many retries the current window allows in all."""
        self._expire()
        return self.ratio * len(self._calls) + self.min_per_s * self.window_s

    def can_retry(self) -> bool:
        """Whether one more retry stays within the budget (counts the refusals)."""
        if len(self._retries) + 1 <= self.allowed() + 1e-9:  # float noise in ratio × calls
            return True
        self.exhausted_total += 1
        return False
