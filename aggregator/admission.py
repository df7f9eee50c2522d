"""Rate limits on creating sessions: one bucket for this instance and one per customer (or per
client address for anonymous browsers), so one noisy customer is turned away while everyone
else is served. Token buckets on the injected clock; beyond them creation is refused with the
time to wait (RESOURCE_EXHAUSTED with google.rpc.RetryInfo, HTTP 429 with Retry-After).

The buckets are per instance (as Envoy's local rate limit is per Envoy): with N instances the
global rate is N times the setting. Buckets of customers that went quiet are forgotten (the
least recently used beyond `max_customers`), which only ever lets someone in earlier.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from osago_common.clock import SYSTEM_CLOCK, Clock

# The limits a creation may be refused by: the customer's own, or this instance's.
LIMITS = ("customer", "instance")


class RateLimited(Exception):
    """Too many sessions created; `retry_after_s` says when one more will be accepted."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Rate:
    per_s: float
    burst: float


@dataclass
class _Bucket:
    tokens: float
    at: float

    def refill(self, rate: Rate, now: float) -> None:
        self.tokens = min(rate.burst, self.tokens + (now - self.at) * rate.per_s)
        self.at = now

    def wait_s(self, rate: Rate) -> float:
        return (1.0 - self.tokens) / rate.per_s if rate.per_s > 0 else 60.0


class Admission:
    def __init__(
        self, total: Rate, per_customer: Rate, clock: Clock = SYSTEM_CLOCK, max_customers: int = 100_000
    ) -> None:
        self._total_rate = total
        self._customer_rate = per_customer
        self._clock = clock
        self._max = max_customers
        self._total = _Bucket(total.burst, clock.monotonic())
        self._customers: OrderedDict[str, _Bucket] = OrderedDict()
        # Creations refused, by the limit that refused them (osago_sessions_rate_limited_total).
        self.refused = dict.fromkeys(LIMITS, 0)

    def admit(self, key: str) -> None:
        """Takes a token from the customer's bucket and the instance's, or raises RateLimited
        (taking none)."""
        now = self._clock.monotonic()
        self._total.refill(self._total_rate, now)
        bucket = self._customers.get(key)
        if bucket is None:
            bucket = _Bucket(self._customer_rate.burst, now)
            self._customers[key] = bucket
            if len(self._customers) > self._max:
                self._customers.popitem(last=False)
        else:
            self._customers.move_to_end(key)
            bucket.refill(self._customer_rate, now)
        if bucket.tokens < 1.0:
            self.refused["customer"] += 1
            raise RateLimited(
                "too many quote requests from this customer; retry later", bucket.wait_s(self._customer_rate)
            )
        if self._total.tokens < 1.0:
            self.refused["instance"] += 1
            raise RateLimited("the quote service is busy; retry later", self._total.wait_s(self._total_rate))
        bucket.tokens -= 1.0
        self._total.tokens -= 1.0
