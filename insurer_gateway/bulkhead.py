"""A bound on in-flight calls to one insurer, so a slow insurer cannot take every connection.

No queue: a full bulkhead rejects at once (the caller reports the insurer as unavailable rather
than piling up waiters behind a slow insurer).
"""

from __future__ import annotations


class Bulkhead:
    """`try_enter()` before a call (False: refuse it), `leave()` after it."""

    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self._in_flight = 0
        self.rejected_total = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_enter(self) -> bool:
        """Takes a slot if one is free; False (and counted as rejected) otherwise."""
        if self._in_flight >= self.max_in_flight:
            self.rejected_total += 1
            return False
        self._in_flight += 1
        return True

    def leave(self) -> None:
        """Gives back a slot taken by `try_enter`."""
        if self._in_flight == 0:
            raise RuntimeError("Bulkhead.leave() without a matching try_enter()")
        self._in_flight -= 1
