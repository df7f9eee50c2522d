"""The event loop every service process runs on: uvloop, unless `OSAGO_EVENT_LOOP=asyncio`.

uvloop (libuv) runs asyncio's transports, timers and callbacks in C, where the profiles of the
simulator and the gateways find much of their time (docs/BENCHMARKS.md compares the two loops
with `osago bench load --env OSAGO_EVENT_LOOP=asyncio`). grpc.aio and aiohttp work on any
asyncio loop. Tests that run services inside pytest's loop use the standard
one; the service processes (`osago aggregator`, `osago gateway`, ...) use this.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import uvloop

from osago_common import gc_policy

T = TypeVar("T")

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


def loop_factory(env: Mapping[str, str] = os.environ) -> Callable[[], asyncio.AbstractEventLoop]:
    """The loop `OSAGO_EVENT_LOOP` names (uvloop by default); ValueError names a bad value."""
    name = env.get("OSAGO_EVENT_LOOP", "uvloop").strip() or "uvloop"
    try:
        return LOOPS[name]
    except KeyError:
        raise ValueError(f"OSAGO_EVENT_LOOP must be one of {', '.join(LOOPS)}, not {name!r}") from None


def run(main: Coroutine[Any, Any, T], env: Mapping[str, str] = os.environ) -> T:
    """`asyncio.run(main)` on the configured loop, with the garbage collector's ticks when
    the process installed osago_common.gc_policy."""
    try:
        factory = loop_factory(env)
    except ValueError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        collector = gc_policy.installed()
        if collector is not None:
            collector.start(runner.get_loop())
        try:
            return runner.run(main)
        finally:
            if collector is not None:
                collector.stop()
