"""How the service processes collect cyclic garbage: a small full collection every second, whose
survivors are frozen, instead of CPython's rare full collections over the whole heap.

Why: under load a service holds hundreds of thousands of long-lived objects (the aggregator's
sessions and their event logs, the gateways' asks, the simulator's applications), and CPython's
full (generation 2) collection walks every one of them with the event loop stopped. At 2500
concurrent customers on two cores those pauses measured 0.9–1.6 s in the aggregator, about
0.5 s in the gateways and 1 s in the simulator, a few times a minute, each collecting almost
nothing (0–74 objects): every offer in flight waited for them, and the added lag's p99 was
those pauses. Freezing the survivors of each full collection alone (the usual `gc.freeze()`
recipe) left pauses of 0.3–0.45 s: the next full collection still came only once a quarter of
the heap's size had been promoted since, and walked all of that.

So here CPython never starts a full collection itself (its generation-2 threshold is out of
reach); a timer on the event loop runs one every `TICK_S`, which walks only what was promoted
since the last one, then freezes what survived. Young collections (generations 0 and 1) run as
usual. Objects that die are still freed at once by reference counting, frozen or not; freezing
only exempts them from the cycle detector's walks. `gc.freeze()` is CPython's own tool; no
library schedules collections for an event loop, hence this module.

The price: garbage cycles among frozen objects wait. So a tick unfreezes them and looks at every
object (a pause as before, but rare) whenever the frozen objects have grown to `REVISIT_GROWTH`
times their number after the last complete look (and by at least `REVISIT_MIN_OBJECTS`), at most
once per `REVISIT_INTERVAL_S`, and in any case once per `REVISIT_ALWAYS_S`: frozen objects that
die leave the count, so under a steady load it tracks the live heap and may stay put while
cycles gather.

`OSAGO_GC`: `freeze` (the default) or `default` (CPython's own behaviour, for comparison).
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable, Mapping

from osago_common.env import SettingsError

POLICIES = ("freeze", "default")
# How often the full collection of what was promoted since the last one runs. Every 0.25 s made
# the pauses shorter still but cost the ten gateways of a 2500-customer run a fifth of a core
# more, measured with a first version that also counted the frozen objects at every tick (see
# `tick`); not measured again since.
TICK_S = 1.0
# CPython starts a full collection once this many young (generation 1) collections have run
# since the last: out of reach, so only the ticks do.
NEVER = 1 << 30
# When the frozen objects have grown this many times over since the last complete look (and
# by at least REVISIT_MIN_OBJECTS), the next tick looks at every object again ...
REVISIT_GROWTH = 2.0
REVISIT_MIN_OBJECTS = 200_000
# ... but no more often than this; once it could be due, the count is checked this often ...
REVISIT_INTERVAL_S = 600.0
CHECK_INTERVAL_S = 60.0
# ... and whatever the count, a complete look at least this often.
REVISIT_ALWAYS_S = 3600.0

# The process's collector once installed (one per process: the garbage collector is).
_INSTALLED: list[FrozenCollector] = []


def policy(env: Mapping[str, str] = os.environ) -> str:
    """The policy `OSAGO_GC` names (`freeze` by default); SettingsError names a bad value."""
    name = env.get("OSAGO_GC", "freeze").strip() or "freeze"
    if name not in POLICIES:
        raise SettingsError(f"OSAGO_GC must be one of {', '.join(POLICIES)}, not {name!r}")
    return name


class FrozenCollector:
    """The `freeze` policy (see the module's docstring). `tick()` is one full collection of the
    objects not frozen, then a freeze; `clock` (monotonic seconds) is injected for the tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.baseline = gc.get_freeze_count()  # frozen objects after the last complete look
        self._revisited_at = self._checked_at = clock()
        self.ticks = 0
        self.revisits = 0  # complete looks at every object
        self._timer: asyncio.TimerHandle | None = None

    def tick(self) -> None:
        now = self._clock()
        revisit = False
        # Counting the frozen objects walks them all (milliseconds for a large heap): only when a
        # complete look could be due, and then once a minute.
        since = now - self._revisited_at
        if since >= REVISIT_ALWAYS_S:
            revisit = True
        elif since >= REVISIT_INTERVAL_S and now - self._checked_at >= CHECK_INTERVAL_S:
            self._checked_at = now
            frozen = gc.get_freeze_count()
            revisit = frozen >= max(self.baseline * REVISIT_GROWTH, self.baseline + REVISIT_MIN_OBJECTS)
        if revisit:
            gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.ticks += 1
        if revisit:
            self._revisited_at = now
            self.revisits += 1
            self.baseline = gc.get_freeze_count()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ticks every TICK_S on `loop` until `stop`."""
        self._timer = loop.call_later(TICK_S, self._run, loop)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self.tick()
        finally:  # a failed tick must not end the ticks: nothing else runs full collections
            self._timer = loop.call_later(TICK_S, self._run, loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def install(env: Mapping[str, str] = os.environ) -> FrozenCollector | None:
    """Applies `OSAGO_GC` to this process, before its event loop starts (osago_common.loop.run
    starts the ticks): the collector, or None for CPython's default policy. What start-up
    made (modules, settings) is collected once and frozen at once."""
    if policy(env) == "default":
        return None
    if not _INSTALLED:
        gc.collect()
        gc.freeze()
        gen0, gen1, _ = gc.get_threshold()
        gc.set_threshold(gen0, gen1, NEVER)
        _INSTALLED.append(FrozenCollector())
    return _INSTALLED[0]


def installed() -> FrozenCollector | None:
    """The collector `install` set up in this process, if any."""
    return _INSTALLED[0] if _INSTALLED else None
