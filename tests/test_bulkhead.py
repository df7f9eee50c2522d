"""The bulkhead: a fixed number of in-flight calls, and immediate rejection beyond it."""

from __future__ import annotations

import asyncio

import pytest

from insurer_gateway.bulkhead import Bulkhead, BulkheadFull


def test_admits_up_to_max_in_flight_then_rejects_at_once() -> None:
    bulkhead = Bulkhead(2)
    assert bulkhead.try_enter() and bulkhead.try_enter()
    assert bulkhead.in_flight == 2
    assert not bulkhead.try_enter()
    assert bulkhead.rejected_total == 1
    bulkhead.leave()
    assert bulkhead.in_flight == 1
    assert bulkhead.try_enter()


def test_leave_without_enter_is_an_error() -> None:
    bulkhead = Bulkhead(1)
    with pytest.raises(RuntimeError, match="without a matching try_enter"):
        bulkhead.leave()


def test_max_in_flight_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_in_flight must be at least 1"):
        Bulkhead(0)


async def test_context_manager_rejects_when_full_and_frees_on_any_exit() -> None:
    bulkhead = Bulkhead(1)
    async with bulkhead:
        assert bulkhead.in_flight == 1
        with pytest.raises(BulkheadFull):
            async with bulkhead:
                pass  # pragma: no cover
    assert bulkhead.in_flight == 0
    with pytest.raises(ValueError):
        async with bulkhead:
            raise ValueError("call failed")
    assert bulkhead.in_flight == 0


async def test_slow_calls_fill_it_and_others_are_rejected_without_waiting() -> None:
    bulkhead = Bulkhead(3)
    release = asyncio.Event()
    entered = 0

    async def call() -> str:
        nonlocal entered
        try:
            async with bulkhead:
                entered += 1
                await release.wait()
        except BulkheadFull:
            return "rejected"
        return "done"

    tasks = [asyncio.create_task(call()) for _ in range(10)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert entered == 3 and bulkhead.in_flight == 3
    assert sum(t.done() for t in tasks) == 7  # the rejected ones finished at once
    release.set()
    results = await asyncio.gather(*tasks)
    assert results.count("done") == 3 and results.count("rejected") == 7
    assert bulkhead.in_flight == 0


async def test_cancelled_call_gives_its_slot_back() -> None:
    bulkhead = Bulkhead(1)

    async def hang() -> None:
        async with bulkhead:
            await asyncio.Event().wait()

    task = asyncio.create_task(hang())
    await asyncio.sleep(0)
    assert bulkhead.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bulkhead.in_flight == 0
