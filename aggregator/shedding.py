"""Load shedding: a saturated instance refuses new sessions at the door, so that the ones it runs
still end by their deadline. Letting every new session in when the instance cannot keep up makes
every session late; refusing some, with a time to come back, keeps the promise for the rest.

Three signals, each off when its setting is 0:
- sessions running on this instance against a capacity (`max_sessions`);
- how late the event loop runs: a task asks the clock to wake it every `LAG_INTERVAL_S` and notes
  how late it woke. A loop that wakes late delivers every event late and fires every deadline
  late; its smoothed lag above `shed_loop_lag_s` means the instance is saturated;
- how long a new call waits at the door (`QueueWait`): gRPC's C core holds the calls that arrived
  until the server's event loop takes them, one at a time, and that queue is invisible to the
  code behind it. Calls waited half a minute there on a full machine while the loop itself ran
  on time. So the instance sends itself calls through the same door every `PROBE_INTERVAL_S`
  (aggregator.door) and times them; above `shed_queue_wait_s` the instance sheds, so the queue
  drains at the speed of refusals rather than of sessions, caps the sessions running adaptively,
  and tells the refused to come back later the longer the crowd lasts (below).

Transport-free: `Busy` becomes RESOURCE_EXHAUSTED with google.rpc.RetryInfo in aggregator.errors.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from osago_common.clock import Clock

log = logging.getLogger(__name__)

# How often the loop's lag is sampled, and how much each sample weighs in the smoothed lag (an
# exponential average: a sample's weight halves in about three samples, so a lone pause such as
# a garbage collection moves it less than a lag that lasts).
LAG_INTERVAL_S = 0.1
LAG_WEIGHT = 0.2
# How often the door is probed (one probe at a time).
PROBE_INTERVAL_S = 0.5
# The retry delay advised to refused callers. Told to come back in 2 s, a crowd larger than the
# instance can serve comes back into the same queue, and refusing it fills the door as surely as
# serving it: the queue stays long, nearly everyone is refused, and few sessions start (measured
# in docs/BENCHMARKS.md, "Shedding on the calls' wait at the door"). So after each probe that
# found calls waiting too long, or that followed more refusals than admissions, the advice grows
# by RETRY_GROWTH, up to MAX_RETRY_S, and after each other it shrinks back by RETRY_EASING towards
# the configured delay, more slowly than it grew. Each refused caller is given the advice
# lengthened by a random part of up to RETRY_SPREAD of it, so that those refused together do not
# come back together.
MAX_RETRY_S = 30.0
RETRY_GROWTH = 1.5
RETRY_EASING = 1.15
RETRY_SPREAD = 0.5
# The adaptive cap on sessions running here. Refusing everyone while the door is slow and admitting
# everyone once it is quick again lets the queue in at once: a burst of sessions, the door slow
# again, the machine partly idle between bursts. So a probe that found calls waiting too long
# also caps the sessions running at CAP_DECREASE of those running then (or of the cap, if lower);
# each probe that did not raises the cap by CAP_INCREASE of itself, at least one session; a cap
# twice the sessions running is lifted, and so is any cap while the probe cannot reach the door.
# Under the cap new sessions start as others end, one for one.
CAP_DECREASE = 0.9
CAP_INCREASE = 0.02


# What refused a new session, as osago_sessions_shed_total's `signal` label says it.
SIGNALS = ("sessions", "loop_lag", "queue_wait", "adaptive_cap")


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


# A probe: calls through the instance's own door, returning once the instance answered them (or
# raising: a probe that failed after a while still measured that while, unless ProbeUnreached).
Probe = Callable[[], Awaitable[object]]


class ProbeUnreached(Exception):
    """The probe did not reach the door (refused, no such port, a handshake failed): it measured
    nothing, and the instance does not shed on a signal it cannot see."""


class QueueWait:
    """How long the last call sent through the door waited to be answered, or, while a probe is
    still unanswered, how long it has waited so far (a queue too long to answer a probe in time
    is seen before the probe returns). On the clock's monotonic scale."""

    def __init__(self, clock: Clock, probe: Probe, interval_s: float = PROBE_INTERVAL_S) -> None:
        self._clock = clock
        self._probe = probe
        self._interval = interval_s
        self.latest = 0.0
        # Whether the last probe reached the door (None before the first one ended).
        self.reached: bool | None = None
        # Told each probe's wait once it ended, or None when it did not reach the door
        # (LoadShedding.watch_queue).
        self.listener: Callable[[float | None], None] | None = None
        self._since: float | None = None
        self._one_at_a_time = asyncio.Lock()

    def current(self) -> float:
        if self._since is None:
            return self.latest
        return max(self.latest, self._clock.monotonic() - self._since)

    async def probe_once(self) -> float:
        """Sends one probe (after the one in flight, if any) and returns the time it took,
        whatever it answered; 0 when it did not reach the door."""
        async with self._one_at_a_time:
            return await self._probe_once()

    async def _probe_once(self) -> float:
        started = self._clock.monotonic()
        self._since = started
        reached = True
        try:
            await self._probe()
        except ProbeUnreached:
            reached = False
        except Exception as error:  # noqa: BLE001 - any answer measures the wait
            log.debug("queue probe ended with %s", type(error).__name__)
        finally:
            self._since = None
        self.reached = reached
        self.latest = self._clock.monotonic() - started if reached else 0.0
        if self.listener is not None:
            try:
                self.listener(self.latest if reached else None)
            except Exception:
                log.exception("the queue wait's listener failed")
        return self.latest

    async def run(self) -> None:
        """Probes every interval (the first one interval after the start) until cancelled."""
        while True:
            await self._clock.sleep(self._interval)
            await self.probe_once()


class LoadShedding:
    """Decides whether this instance has room for a new session."""

    def __init__(
        self,
        max_sessions: int,
        shed_loop_lag_s: float,
        retry_after_s: float,
        lag: LoopLag,
        *,
        shed_queue_wait_s: float = 0.0,
        running: Callable[[], int] = lambda: 0,
        rng: random.Random | None = None,
    ) -> None:
        self.max_sessions = max_sessions
        self.shed_loop_lag_s = shed_loop_lag_s
        self.retry_after_s = retry_after_s
        self.lag = lag
        self.shed_queue_wait_s = shed_queue_wait_s
        # Set by the transport that owns the door (aggregator.service, `watch_queue`).
        self.queue: QueueWait | None = None
        # The retry delay advised now (see RETRY_GROWTH), never below the configured one.
        self.advised_s = retry_after_s
        # The adaptive cap (see CAP_DECREASE); None: no cap now. `running` counts the sessions.
        self.cap: float | None = None
        self._running = running
        # New sessions admitted and refused since the last probe.
        self._admitted = self._refused = 0
        self._rng = rng or random.Random()  # noqa: S311 - spreads retries, no secret
        self.shed_total = 0
        # The refusals by the signal that refused (SIGNALS), so an operator sees which one bites.
        self.shed_by = dict.fromkeys(SIGNALS, 0)
        self._shedding = False

    def watch_queue(self, queue: QueueWait) -> None:
        """Sheds while calls wait longer than `shed_queue_wait_s` at the door `queue` times."""
        self.queue = queue
        queue.listener = self.queue_observed

    def queue_observed(self, waited_s: float | None) -> None:
        """After each probe: while calls wait too long the advice grows and the cap comes down;
        once they do not, the advice eases back and the cap goes up. A probe that did not reach
        the door (`None`) lifts the cap: no cap on a signal the instance cannot see."""
        if self.shed_queue_wait_s <= 0:
            return
        crowded = self._refused > self._admitted
        self._admitted = self._refused = 0
        if waited_s is None:
            self.cap = None
            return
        running = self._running()
        slow = waited_s > self.shed_queue_wait_s
        if slow or crowded:
            self.advised_s = min(MAX_RETRY_S, self.advised_s * RETRY_GROWTH)
        else:
            self.advised_s = max(self.retry_after_s, self.advised_s / RETRY_EASING)
        if slow:
            lowered = CAP_DECREASE * running if self.cap is None else CAP_DECREASE * min(running, self.cap)
            self.cap = max(1.0, lowered)
        elif self.cap is not None:
            self.cap += max(1.0, CAP_INCREASE * self.cap)
            if self.cap >= 2 * running:
                self.cap = None

    @property
    def watches_lag(self) -> bool:
        return self.shed_loop_lag_s > 0

    def admit(self, running: int) -> None:
        """Raises Busy when a new session should not start beside the `running` ones."""
        why = ""
        waited = self.queue.current() if self.queue is not None and self.shed_queue_wait_s > 0 else 0.0
        if self.max_sessions > 0 and running >= self.max_sessions:
            why = "sessions"
        elif self.watches_lag and self.lag.smoothed > self.shed_loop_lag_s:
            why = "loop_lag"
        elif waited > self.shed_queue_wait_s > 0:
            why = "queue_wait"
        elif self.cap is not None and running >= self.cap:
            why = "adaptive_cap"
        if not why:
            self._admitted += 1
            if self._shedding:
                self._shedding = False
                log.info("admitting new sessions again (running %d)", running)
            return
        self.shed_total += 1
        self.shed_by[why] += 1
        self._refused += 1
        if not self._shedding:  # logged once per episode: under overload a line per refusal would add to it
            self._shedding = True
            log.warning(
                "saturated (%s: running %d, loop lag %.0f ms, calls wait %.1f s): refusing new sessions",
                why,
                running,
                self.lag.smoothed * 1000,
                waited,
            )
        spread = max(self.retry_after_s, self.advised_s) * self._rng.uniform(1, 1 + RETRY_SPREAD)
        retry_after_s = max(self.retry_after_s, round(spread, 1))
        raise Busy(retry_after_s, "the quote service is busy; please try again shortly")
