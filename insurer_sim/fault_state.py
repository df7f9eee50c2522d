"""One insurer's fault at run time: what it does to each request of the insurer's API.

`FaultState.decide` is the one place a fault turns into an action for a request; the HTTP layer
(`insurer_sim.api`, then the server) only carries it out. Time (flapping phases, the quota window) comes
from the injected clock, so every decision is exact under a FakeClock. Nothing here knows HTTP.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from insurer_sim.faults import CALLBACK_MODES, VARIANTS, Fault
from osago_common.clock import Clock

# The window of a `ratelimit` quota (`limit_per_s` requests per this many seconds).
QUOTA_WINDOW_S = 1.0


@dataclass(frozen=True)
class Proceed:
    """Answer normally, after `delay_s` seconds of the clock."""

    delay_s: float = 0.0


@dataclass(frozen=True)
class Drop:
    """Close the connection without an answer."""


@dataclass(frozen=True)
class Hold:
    """Never answer: hold the request until the client gives up or the fault changes."""


@dataclass(frozen=True)
class Fail:
    """A 5xx answer, with a JSON body or a plain-text one."""

    status: int
    text: bool = False


@dataclass(frozen=True)
class Throttle:
    """429 Too Many Requests with Retry-After."""

    retry_after_s: int


@dataclass(frozen=True)
class Garble:
    """A 200 answer with garbage: "json" (broken), "html" (an error page) or "schema" (wrong)."""

    variant: str


Action = Proceed | Drop | Hold | Fail | Throttle | Garble
PROCEED = Proceed()


class FaultState:
    """The fault one insurer is in (None: healthy), since when, and what it has done."""

    def __init__(self, clock: Clock, rng: random.Random, time_scale: float) -> None:
        self.fault: Fault | None = None
        self.since: datetime | None = None
        # Requests the current fault answered, dropped, held or declined; callback attempts it
        # withheld, doubled, delayed, forged or failed.
        self.injected = 0
        self.held = 0  # requests held open right now (blackhole)
        self._clock = clock
        self._rng = rng
        self._time_scale = time_scale
        self._started = 0.0  # clock.monotonic() when the fault was set
        self._admitted: deque[float] = deque()  # quota: when the requests let through arrived
        self._release = asyncio.Event()

    def set(self, fault: Fault) -> None:
        """Switches to `fault`, from now; requests held by the previous fault are let go."""
        self.let_go()
        self._admitted.clear()
        self.fault = fault
        self.since = self._clock.now()
        self._started = self._clock.monotonic()
        self.injected = 0

    def heal(self) -> None:
        self.let_go()
        self._admitted.clear()
        self.fault = None
        self.since = None
        self.injected = 0

    @property
    def declining(self) -> bool:
        return self.fault is not None and self.fault.mode == "decline"

    @property
    def refusing(self) -> bool:
        """Whether connections to the insurer should be refused (mode `down`)."""
        return self.fault is not None and self.fault.mode == "down"

    def declined(self) -> None:
        """Counts an outcome the `decline` fault turned into a decline."""
        self.injected += 1

    def decide(self) -> Action:
        """What the current fault does to the request arriving now."""
        action = self._action()
        if action is not PROCEED:
            self.injected += 1
        return action

    def callback_fault(self, *modes: str) -> Fault | None:
        """The current fault when it is one of `modes` (callback modes; counted as injected),
        else None."""
        fault = self.fault
        if fault is None or fault.mode not in modes:
            return None
        self.injected += 1
        return fault

    def late_by_s(self, fault: Fault) -> float:
        """How late `callback_late` sends a callback, in the clock's seconds."""
        return self._scaled(fault.delay_s, fault.scaled)

    def _action(self) -> Action:
        fault = self.fault
        if fault is None or fault.mode == "decline" or fault.mode in CALLBACK_MODES:
            return PROCEED
        if fault.mode == "down":
            return Drop()
        if fault.mode == "blackhole":
            return Hold()
        if fault.mode == "slow":
            return Proceed(self._scaled(fault.delay_s, fault.scaled))
        if fault.mode == "error":
            return Fail(fault.status, fault.body == "text") if self._rng.random() < fault.rate else PROCEED
        if fault.mode == "ratelimit":
            return PROCEED if self._within_quota(fault.limit_per_s) else Throttle(fault.retry_after_s)
        if fault.mode == "malformed":
            variant = fault.variant if fault.variant != "random" else self._rng.choice(VARIANTS)
            return Garble(variant)
        if fault.mode == "flapping":
            period = self._scaled(fault.period_s, fault.scaled)
            failing = (self._clock.monotonic() - self._started) % period < period / 2
            return Fail(fault.status) if failing else PROCEED
        raise AssertionError(fault.mode)

    def _scaled(self, seconds: float, scaled: bool) -> float:
        return seconds * self._time_scale if scaled else seconds

    def _within_quota(self, limit: int | None) -> bool:
        """Admits the request if the quota allows it (no quota: never); a sliding window."""
        if limit is None:
            return False
        now = self._clock.monotonic()
        while self._admitted and self._admitted[0] <= now - QUOTA_WINDOW_S:
            self._admitted.popleft()
        if len(self._admitted) >= limit:
            return False
        self._admitted.append(now)
        return True

    async def hold(self) -> None:
        """Waits until the fault changes (or `let_go`); the caller then drops the connection."""
        release = self._release
        self.held += 1
        try:
            await release.wait()
        finally:
            if not release.is_set():  # the client went away (let_go uncounted the rest)
                self.held -= 1

    def let_go(self) -> None:
        """Lets every request held so far go (on a change of fault, or at shutdown)."""
        self._release.set()
        self._release = asyncio.Event()
        self.held = 0

    def to_json(self) -> dict[str, object]:
        return {
            "fault": self.fault.to_json() if self.fault else None,
            "since": self.since.isoformat() if self.since else None,
            "injected": self.injected,
            "held": self.held,
        }
