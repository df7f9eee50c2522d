"""The session writer over the embedded store and bus, with the store's writes held open by the
test: what is written together, in which order, and what a caller that stops waiting leaves."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from osago.v1 import events_pb2

from aggregator.bus import MemoryEventBus
from aggregator.live import LiveStream
from aggregator.session import session_started
from aggregator.store import Lease, LeaseLost, MemoryRequestStore, RequestRecord, StoreUnavailable
from aggregator.writer import SessionWriter
from osago_common.clock import FakeClock


class HeldStore(MemoryRequestStore):
    """The embedded store; each write waits until the test opens the gate, and the seqs of every
    write are kept in the order the writes came."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.writes: list[list[int]] = []
        # Commit first, then wait: the answer of a write the store has made is what is held.
        self.commit_first = False

    async def append(self, lease: Lease, events: Sequence[events_pb2.QuoteEvent]) -> None:
        self.writes.append([e.seq for e in events])
        if self.commit_first:
            await super().append(lease, events)
        await self.gate.wait()
        if not self.commit_first:
            await super().append(lease, events)


def progress(insurer_id: str) -> events_pb2.QuoteEvent:
    event = events_pb2.QuoteEvent(request_id="r1")
    event.insurer_progress.insurer_id = insurer_id
    return event


async def open_writer(clock: FakeClock) -> tuple[HeldStore, MemoryEventBus, LiveStream, SessionWriter]:
    store, bus = HeldStore(), MemoryEventBus(clock)
    now = clock.now()
    insurers = (("a", "A"),)
    record = RequestRecord("r1", now, now + timedelta(seconds=60), insurers, "", "f")
    first = session_started("r1", insurers, clock, record.deadline)
    _, lease = await store.create(record, b"", {}, first, "here")
    assert lease is not None
    live = LiveStream([first])
    writer = SessionWriter(
        lease, 2, store, bus, live, clock, keep_until=record.deadline, give_up_at=clock.monotonic() + 70
    )
    return store, bus, live, writer


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def one_writing_one_queued(writer: SessionWriter) -> tuple[asyncio.Task[Any], asyncio.Task[Any]]:
    """Two insurers' events: the first being written (held by the store), the second queued."""
    writing = asyncio.create_task(writer.append(progress("a")))
    await turns()
    queued = asyncio.create_task(writer.append(progress("b")))
    await turns()
    return writing, queued


def insurers_of(events: Sequence[events_pb2.QuoteEvent]) -> list[str]:
    return [e.insurer_progress.insurer_id for e in events if e.HasField("insurer_progress")]


async def test_events_handed_over_during_a_write_go_together_in_the_next_one_in_order() -> None:
    store, bus, live, writer = await open_writer(FakeClock())
    first = asyncio.create_task(writer.append(progress("i0")))
    await turns()
    burst = [asyncio.create_task(writer.append(progress(f"i{n}"))) for n in range(1, 11)]
    await turns()
    assert store.writes == [[2]]  # the burst waits for the write in flight
    store.gate.set()
    written = await asyncio.gather(first, *burst)
    # Two writes for eleven events: the one in flight, then the ten that came meanwhile.
    assert store.writes == [[2], list(range(3, 13))]
    assert [e.seq for e in written] == list(range(2, 13))
    expected = [f"i{n}" for n in range(11)]
    stored = await store.events("r1")
    assert [e.seq for e in stored] == list(range(1, 13))
    assert insurers_of(stored) == expected
    assert insurers_of(live.events) == expected
    published = await bus.read("r1", 0, 0)
    assert published is not None and insurers_of(published) == expected


async def test_a_caller_that_stops_waiting_leaves_its_event_logged() -> None:
    store, _, _, writer = await open_writer(FakeClock())
    in_flight, queued = await one_writing_one_queued(writer)
    # The session's deadline cancels both insurers' tasks while their events are being written.
    in_flight.cancel()
    queued.cancel()
    await asyncio.gather(in_flight, queued, return_exceptions=True)
    assert in_flight.cancelled() and queued.cancelled()
    store.gate.set()
    logged = await writer.logged()
    assert insurers_of(logged) == ["a", "b"]
    assert [e.seq for e in await store.events("r1")] == [1, 2, 3]
    # What follows is numbered on from them.
    store.gate.set()
    assert (await writer.append(progress("c"))).seq == 4


async def test_a_lost_lease_fails_every_event_of_the_write_and_stores_none() -> None:
    clock = FakeClock()
    store, _, _, writer = await open_writer(clock)
    in_flight = asyncio.create_task(writer.append(progress("a")))
    await turns()
    queued = [asyncio.create_task(writer.append(progress(i))) for i in ("b", "c")]
    await turns()
    # Another instance takes the session over while the write is in flight.
    later = clock.now() + timedelta(seconds=10)
    store.gate.set()
    await store.heartbeat("other", later, 5.0)
    await store.claim_orphans("other", later, 10)
    results = await asyncio.gather(in_flight, *queued, return_exceptions=True)
    assert [type(r) for r in results] == [LeaseLost, LeaseLost, LeaseLost]
    assert [e.seq for e in await store.events("r1")] == [1]


async def test_a_store_that_stays_unreachable_fails_the_events_after_the_last_try() -> None:
    clock = FakeClock()
    store, _, _, writer = await open_writer(clock)
    store.gate.set()

    async def unreachable(lease: Lease, events: Sequence[events_pb2.QuoteEvent]) -> None:
        raise StoreUnavailable("the request store is unavailable")

    store.append = unreachable  # type: ignore[method-assign]
    waiting = [asyncio.create_task(writer.append(progress(i))) for i in ("a", "b")]
    await clock.advance(75.0)  # retries until the writer's give-up time (70 s)
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["StoreUnavailable", "StoreUnavailable"]
    assert await writer.logged() == [(await store.events("r1"))[0]]


async def test_a_caller_stopped_after_the_commit_leaves_only_the_publish_to_do() -> None:
    store, bus, live, writer = await open_writer(FakeClock())
    store.gate.set()
    gate = asyncio.Event()
    publish = bus.publish

    async def held(events: Sequence[events_pb2.QuoteEvent], keep_until: datetime) -> None:
        await gate.wait()
        await publish(events, keep_until)

    bus.publish = held  # type: ignore[method-assign]
    caller = asyncio.create_task(writer.append(progress("a")))
    await turns()
    caller.cancel()  # committed, being published
    await asyncio.gather(caller, return_exceptions=True)
    gate.set()
    assert insurers_of(await writer.logged()) == ["a"]
    assert store.writes == [[2]]  # committed once
    published = await bus.read("r1", 0, 0)
    assert published is not None and [e.seq for e in published] == [2]
    assert insurers_of(live.events) == ["a"]


async def test_a_write_the_store_made_before_its_caller_was_stopped_is_taken_up_once() -> None:
    store, bus, live, writer = await open_writer(FakeClock())
    store.commit_first = True
    end = events_pb2.QuoteEvent(request_id="r1")
    end.session_finished.status = events_pb2.SessionStatus.SESSION_STATUS_COMPLETED
    caller = asyncio.create_task(writer.append_all([progress("a"), end]))
    await turns()
    caller.cancel()  # the store committed the write (and the request ended); its answer is lost
    await asyncio.gather(caller, return_exceptions=True)
    store.gate.set()
    logged = await writer.logged()
    assert [e.seq for e in logged] == [1, 2, 3] and logged[-1].HasField("session_finished")
    assert store.writes == [[2, 3], [2, 3]]  # made again, stored once
    assert [e.seq for e in await store.events("r1")] == [1, 2, 3]
    assert [e.seq for e in live.events] == [1, 2, 3]
    published = await bus.read("r1", 0, 0)
    assert published is not None and [e.seq for e in published] == [2, 3]


async def test_handing_over_no_events_is_nothing_to_wait_for() -> None:
    store, _, _, writer = await open_writer(FakeClock())
    await asyncio.wait_for(writer.append_all([]), 1)
    store.gate.set()
    assert store.writes == []
    assert (await writer.append(progress("a"))).seq == 2


async def stopped_mid_write(cancel_before_it_runs: bool) -> None:
    """The session's tasks are cancelled while one of them writes, then the instance stops and
    cancels the task that took the write up."""
    store, _, _, writer = await open_writer(FakeClock())
    writing, queued = await one_writing_one_queued(writer)
    writing.cancel()
    await asyncio.sleep(0)  # the caller stops; a task of the writer's own is made to carry on
    [carrying_on] = [t for t in asyncio.all_tasks() if t.get_name() == "log:r1"]
    if not cancel_before_it_runs:
        await turns()
    carrying_on.cancel()
    results = await asyncio.wait_for(asyncio.gather(writing, queued, return_exceptions=True), 5)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    # Nobody waits forever, and the writer is free again: nothing was stored, so the next event
    # is numbered 2.
    store.gate.set()
    assert (await writer.append(progress("c"))).seq == 2
    assert [e.seq for e in await store.events("r1")] == [1, 2]


async def test_an_instance_stopping_mid_write_leaves_no_caller_waiting_forever() -> None:
    await stopped_mid_write(cancel_before_it_runs=False)


async def test_the_task_taking_a_write_up_cancelled_before_it_ran_frees_the_writer() -> None:
    await stopped_mid_write(cancel_before_it_runs=True)
