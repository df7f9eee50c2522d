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


@pytest.mark.usefixtures("pristine")
def test_a_cycle_among_frozen_objects_waits_for_the_rare_complete_look() -> None:
    clock = Clock()
    collector = gc_policy.FrozenCollector(clock)
    a, b = Node(), Node()
    a.other, b.other = b, a
    garbage = weakref.ref(a)
    collector.tick()  # a and b survive (still referred to here) and are frozen
    del a, b  # now garbage, but frozen: ordinary ticks do not walk them
    collector.tick()
    assert garbage() is not None
    # The frozen objects grow past twice their number at the last complete look (and by
    # REVISIT_MIN_OBJECTS): the next tick due after REVISIT_INTERVAL_S looks at every object.
    ballast = [Node() for _ in range(max(gc_policy.REVISIT_MIN_OBJECTS, gc.get_freeze_count()))]
    collector.tick()
    assert garbage() is not None  # grown, but the interval has not passed
    clock.now = gc_policy.REVISIT_INTERVAL_S
    collector.tick()
    assert garbage() is None
    assert collector.revisits == 1
    assert collector.baseline >= len(ballast)  # the ballast is alive, and frozen again


@pytest.mark.functional  # a child process, as every service is
def test_a_service_process_ticks_on_its_event_loop_and_never_starts_a_full_collection_itself() -> None:
    script = """
import asyncio, gc, json
from osago_common import gc_policy, loop

async def main():
    full = []
    gc.callbacks.append(lambda phase, info: full.append(1) if phase == "start" and info["generation"] == 2 else None)
    kept = [object() for _ in range(10)]
    for _ in range(300_000):  # young garbage and promotions: CPython's own collections run
        kept.append([[]])
        kept.pop(0)
    await asyncio.sleep(gc_policy.TICK_S * 2.5)
    return {"ticks": collector.ticks, "full": len(full), "threshold": gc.get_threshold()}

collector = gc_policy.install({})
print(json.dumps(loop.run(main(), env={})))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    seen = json.loads(done.stdout)
    assert seen["ticks"] >= 1
    assert seen["full"] == seen["ticks"]  # every full collection was a tick's
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
