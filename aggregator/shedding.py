"""Load shedding: a saturated instance refuses new sessions at the door, so that the ones it runs
still end by their deadline. Letting every new session in when the instance cannot keep up makes
every session late; refusing some, with a time to come back, keeps the promise for the rest.

Two signals, each off when its setting is 0:
- sessions running on this instance against a capacity (`max_sessions`);
- how late the event loop runs: a task asks the clock to wake it every `LAG_INTERVAL_S` and notes
  how late it woke. A loop that wakes late delivers every event late and fires every deadline
  late; its smoothed lag above `shed_loop_lag_s` means the instance is saturated.

Transport-free: `Busy` becomes RESOURCE_EXHAUSTED with google.rpc.RetryInfo in aggregator.errors.
"""

from __future__ import annotations

import logging

from osago_common.clock import Clock

log = logging.getLogger(__name__)

# How often the loop's lag is sampled, and how much each sample weighs in the smoothed lag (an
# exponential average: a sample's weight halves in about three samples, so a lone pause such as
# a garbage collection moves it less than a lag that lasts).
LAG_INTERVAL_S = 0.1
LAG_WEIGHT = 0.2


class Busy(Exception):
    """This instance is saturated and takes no new session now; try again in `retry_after_s`
    (on another instance, or here). The message says why, without internal detail."""

    def __init__(self, retry_after_s: float, message: str) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LoopLag:
    """The event loop's lag, smoothed: how late a timer fires on this loop, on the clock's
    monotonic scale."""

    def __init__(self, clock: Clock, interval_s: float = LAG_INTERVAL_S, weight: float = LAG_WEIGHT) -> None:
        self._clock = clock
        self._interval = interval_s
        self._weight = weight
        self.smoothed = 0.0
        self.latest = 0.0

    def observe(self, lag_s: float) -> None:
        self.latest = max(0.0, lag_s)
        self.smoothed += self._weight * (self.latest - self.smoothed)

    async def run(self) -> None:
        """Samples the lag until cancelled."""
        while True:
            asked = self._clock.monotonic()
            await self._clock.sleep(self._interval)
            self.observe(self._clock.monotonic() - asked - self._interval)


class LoadShedding:
    """Decides whether this instance has room for a new session."""

    def __init__(self, max_sessions: int, shed_loop_lag_s: float, retry_after_s: float, lag: LoopLag) -> None:
        self.max_sessions = max_sessions
        self.shed_loop_lag_s = shed_loop_lag_s
        self.retry_after_s = retry_after_s
        self.lag = lag
        self.shed_total = 0
        self._shedding = False

    @property
    def watches_lag(self) -> bool:
        return self.shed_loop_lag_s > 0

    def admit(self, running: int) -> None:
        """Raises Busy when a new session should not start beside the `running` ones."""
        why = ""
        if self.max_sessions > 0 and running >= self.max_sessions:
            why = "sessions"
        elif self.watches_lag and self.lag.smoothed > self.shed_loop_lag_s:
            why = "loop lag"
        if not why:
            if self._shedding:
                self._shedding = False
                log.info("admitting new sessions again (running %d)", running)
            return
        self.shed_total += 1
        if not self._shedding:  # logged once per episode: under overload a line per refusal would add to it
            self._shedding = True
            log.warning(
                "saturated (%s: running %d, loop lag %.0f ms): refusing new sessions",
                why,
                running,
                self.lag.smoothed * 1000,
            )
        raise Busy(self.retry_after_s, "the quote service is busy; please try again shortly")
