"""The aggregator's Prometheus metrics (served by osago_common.metrics).

| metric | type | labels | meaning |
|---|---|---|---|
| `osago_sessions_started_total` | counter | | sessions created and started on this instance (not those taken over) |
| `osago_sessions_finished_total` | counter | `outcome` | sessions this instance finished: `completed`, `deadline_exceeded`, `upstream_outage`, `cancelled` |
| `osago_sessions_running` | gauge | | sessions running on this instance now |
| `osago_sessions_shed_total` | counter | `signal` | new sessions refused by load shedding, by the signal that refused: `sessions` (`OSAGO_MAX_SESSIONS`), `loop_lag`, `queue_wait` (the calls' wait at the door), `adaptive_cap` |
| `osago_sessions_rate_limited_total` | counter | `limit` | new sessions refused by the rate limits on creation: the `customer`'s or the `instance`'s (`OSAGO_CUSTOMER_CREATE_*`, `OSAGO_CREATE_*`) |
| `osago_sessions_late_total` | counter | | sessions whose final event came more than `LATE_AFTER_S` after their deadline |
| `osago_sessions_taken_over_total` | counter | | sessions this instance took over from one whose lease lapsed or that released them |
| `osago_session_duration_seconds` | histogram | | from a session's creation to its final event |
| `osago_event_delivery_lag_seconds` | histogram | | from an event being written to it being handed to a client's stream (events written while the client listened; replays are not lag) |
| `osago_offers_total` | counter | `insurer` | offers insurers made for sessions (offers from the cache of results not counted) |
| `osago_insurer_failures_total` | counter | `insurer`, `reason` | insurers that gave no offer, by the reason the customer saw (`declined`, `timeout`, `circuit_open`, ...) |
| `osago_breaker_state` / `osago_breaker_transitions_total` | gauge / counter | `insurer` (, `to`) | the breaker toward each insurer's gateway |
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from osago.v1 import events_pb2
from prometheus_client import CollectorRegistry, Counter, Histogram

from aggregator.session import reason_name, status_name
from osago_common.metrics import new_registry

# A session ends at its deadline by design, and its last writes take a moment: its final event
# more than this past the deadline makes it late (osago bench failover counts the same way).
LATE_AFTER_S = 0.5

SESSION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 55.0, 60.0, 65.0, 90.0, 120.0, 300.0, 600.0)
# The target is a p99 under 50 ms.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

OUTCOMES = tuple(
    status_name(s) for s in events_pb2.SessionStatus.values() if s not in (0, events_pb2.SESSION_STATUS_RUNNING)
)


class AggregatorMetrics:
    """The aggregator's series in a registry of its own; `insurers` are made at once (at 0)."""

    def __init__(self, insurers: Iterable[str] = (), registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        r = self.registry
        self.started = Counter("osago_sessions_started", "Sessions created and started here.", registry=r)
        self._finished = Counter(
            "osago_sessions_finished", "Sessions finished here, by outcome.", ["outcome"], registry=r
        )
        self.late = Counter(
            "osago_sessions_late",
            f"Sessions whose final event came more than {LATE_AFTER_S:g} s after their deadline.",
            registry=r,
        )
        self.duration = Histogram(
            "osago_session_duration_seconds",
            "Time from a session's creation to its final event.",
            buckets=SESSION_BUCKETS,
            registry=r,
        )
        self.delivery_lag = Histogram(
            "osago_event_delivery_lag_seconds",
            "Time from an event being written to it being handed to a client's stream.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self._offers = Counter("osago_offers", "Offers insurers made for sessions.", ["insurer"], registry=r)
        self._failures = Counter(
            "osago_insurer_failures",
            "Insurers that gave no offer in a session, by reason.",
            ["insurer", "reason"],
            registry=r,
        )
        # Children made once per label value: an increment is all an event costs.
        self._finished_by = {outcome: self._finished.labels(outcome) for outcome in OUTCOMES}
        self._offers_by = {insurer: self._offers.labels(insurer) for insurer in insurers}
        self._failures_by: dict[tuple[str, int], Counter] = {}

    def session_finished(self, status: int, created_at: datetime, deadline: datetime, now: datetime) -> None:
        outcome = status_name(events_pb2.SessionStatus.ValueType(status))
        child = self._finished_by.get(outcome)
        if child is None:
            child = self._finished_by[outcome] = self._finished.labels(outcome)
        child.inc()
        self.duration.observe(max(0.0, (now - created_at).total_seconds()))
        if (now - deadline).total_seconds() > LATE_AFTER_S:
            self.late.inc()

    def event_logged(self, event: events_pb2.QuoteEvent) -> None:
        """Counts an insurer's answer once it is logged."""
        kind = event.WhichOneof("payload")
        if kind == "quote_received":
            quote = event.quote_received.quote
            if not quote.from_cache:
                child = self._offers_by.get(quote.insurer_id)
                if child is None:
                    child = self._offers_by[quote.insurer_id] = self._offers.labels(quote.insurer_id)
                child.inc()
        elif kind == "insurer_failed":
            failed = event.insurer_failed
            key = (failed.insurer_id, failed.reason)
            counter = self._failures_by.get(key)
            if counter is None:
                counter = self._failures_by[key] = self._failures.labels(failed.insurer_id, reason_name(failed.reason))
            counter.inc()
