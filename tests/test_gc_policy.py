"""The service processes' garbage collection (osago_common.gc_policy): small full collections on
the event loop's timer, survivors frozen, garbage cycles still found."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref
from collections.abc import Iterator

import pytest

from osago_common import gc_policy
from osago_common.env import SettingsError


class Node:
    """A garbage-collected object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """Two objects referring to each other, unreachable once this returns: only the cycle
    detector frees them. The weak reference says whether they are still there."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pristine() -> Iterator[None]:
    """Whatever a test freezes is unfrozen after it (the test process's collector is shared)."""
    gc.collect()
    yield
    gc.unfreeze()
    gc.collect()


def test_the_policy_is_freeze_unless_told_otherwise() -> None:
    assert gc_policy.policy({}) == "freeze"
    assert gc_policy.policy({"OSAGO_GC": "default"}) == "default"
    with pytest.raises(SettingsError, match="OSAGO_GC must be one of freeze, default, not 'off'"):
        gc_policy.policy({"OSAGO_GC": "off"})


@pytest.mark.usefixtures("pristine")
def test_a_tick_frees_garbage_cycles_and_freezes_the_survivors() -> None:
    collector = gc_policy.FrozenCollector(Clock())
    frozen_before = gc.get_freeze_count()
    garbage = cycle()
    kept = [Node() for _ in range(1000)]
    collector.tick()
    assert garbage() is None
    # The thousand kept objects (and the list) now lie outside every generation the collector walks.
    assert gc.get_freeze_count() >= frozen_before + len(kept) + 1
    assert collector.ticks == 1


def frozen_cycle(collector: gc_policy.FrozenCollector) -> weakref.ref[Node]:
    """A cycle that a tick freezes while it is still referred to, then garbage."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    garbage = weakref.ref(a)
    collector.tick()  # a and b survive (still referred to here) and are frozen
    return garbage


@pytest.mark.usefixtures("pristine")
def test_a_cycle_among_frozen_objects_waits_until_they_have_doubled() -> None:
    gc.freeze()  # what the test process holds counts as start-up's, as in a service
    clock = Clock()
    collector = gc_policy.FrozenCollector(clock)
    start = collector.baseline
    garbage = frozen_cycle(collector)
    collector.tick()
    assert garbage() is not None  # garbage, but frozen: ordinary ticks do not walk it
    clock.now = gc_policy.REVISIT_INTERVAL_S
    collector.tick()
    assert garbage() is not None  # the interval has passed, but nothing grew
    # Twice as many frozen objects (and REVISIT_MIN_OBJECTS more): the next check, a minute
    # later, looks at every object.
    ballast = [Node() for _ in range(max(start, gc_policy.REVISIT_MIN_OBJECTS))]
    collector.tick()
    assert garbage() is not None  # checked a moment ago: the next check is a minute away
    clock.now += gc_policy.CHECK_INTERVAL_S
    collector.tick()
    assert garbage() is None
    assert collector.revisits == 1
    assert collector.baseline >= start + len(ballast)  # the ballast is alive, and frozen again


@pytest.mark.usefixtures("pristine")
def test_without_growth_every_object_is_looked_at_once_an_hour() -> None:
    gc.freeze()
    clock = Clock()
    collector = gc_policy.FrozenCollector(clock)
    garbage = frozen_cycle(collector)
    clock.now = gc_policy.REVISIT_ALWAYS_S - 1
    collector.tick()
    assert garbage() is not None
    clock.now = gc_policy.REVISIT_ALWAYS_S
    collector.tick()
    assert garbage() is None
    assert collector.revisits == 1


@pytest.mark.usefixtures("pristine")
def test_a_failing_tick_does_not_end_the_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    collector = gc_policy.FrozenCollector(Clock())

    def broken() -> None:
        raise RuntimeError("tick failed")

    monkeypatch.setattr(collector, "tick", broken)

    class Loop:
        def __init__(self) -> None:
            self.scheduled: list[float] = []

        def call_later(self, delay: float, *_: object) -> None:
            self.scheduled.append(delay)

    loop = Loop()
    with pytest.raises(RuntimeError, match="tick failed"):
        collector._run(loop)  # type: ignore[arg-type]  # only call_later is used
    assert loop.scheduled == [gc_policy.TICK_S]


@pytest.mark.functional  # a child process, as every service is
def test_a_service_process_ticks_on_its_event_loop_and_never_starts_a_full_collection_itself() -> None:
    script = """
import asyncio, gc, json
from osago_common import gc_policy, loop

async def main():
    full = []
    gc.callbacks.append(lambda phase, info: full.append(1) if phase == "start" and info["generation"] == 2 else None)
    young = []
    gc.callbacks.append(lambda phase, info: young.append(1) if phase == "start" and info["generation"] < 2 else None)
    kept = [[[]] for _ in range(300_000)]  # a growing heap: CPython's young collections run
    await asyncio.sleep(gc_policy.TICK_S * 2.5)
    return {"ticks": collector.ticks, "full": len(full), "young": len(young), "threshold": gc.get_threshold()}

collector = gc_policy.install({})
print(json.dumps(loop.run(main(), env={})))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    seen = json.loads(done.stdout)
    assert seen["ticks"] >= 1
    assert seen["young"] > 100  # CPython collected the young generations as usual ...
    assert seen["full"] == seen["ticks"]  # ... but every full collection was a tick's
    assert seen["threshold"][2] == gc_policy.NEVER


@pytest.mark.functional
def test_the_default_policy_leaves_the_collector_alone() -> None:
    script = """
import gc, json
from osago_common import gc_policy
before = gc.get_threshold()
print(json.dumps({"installed": gc_policy.install({"OSAGO_GC": "default"}) is not None,
                  "same": gc.get_threshold() == before}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout) == {"installed": False, "same": True}
