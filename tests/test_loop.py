"""The service processes' event loop: uvloop unless told otherwise."""

from __future__ import annotations

import asyncio
import inspect

import pytest
import uvloop

from osago_common import loop


async def running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_services_run_on_uvloop_by_default() -> None:
    assert isinstance(loop.run(running_loop(), env={}), uvloop.Loop)
    assert isinstance(loop.run(running_loop(), env={"OSAGO_EVENT_LOOP": "uvloop"}), uvloop.Loop)


def test_the_standard_loop_when_asked() -> None:
    ran_on = loop.run(running_loop(), env={"OSAGO_EVENT_LOOP": "asyncio"})
    assert not isinstance(ran_on, uvloop.Loop)
    assert isinstance(ran_on, asyncio.BaseEventLoop)


def test_an_unknown_loop_is_refused_by_name_and_nothing_runs() -> None:
    coroutine = running_loop()
    with pytest.raises(ValueError, match="OSAGO_EVENT_LOOP must be one of uvloop, asyncio, not 'trio'"):
        loop.run(coroutine, env={"OSAGO_EVENT_LOOP": "trio"})
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED  # no "never awaited" warning
