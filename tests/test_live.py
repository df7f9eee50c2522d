"""The live stream a running session's followers on this instance read, and the change signal it
and the embedded bus wake their readers with."""

from __future__ import annotations

import asyncio

from osago.v1 import events_pb2

from aggregator.live import Changes, LiveStream


def event(seq: int, final: bool = False) -> events_pb2.QuoteEvent:
    made = events_pb2.QuoteEvent(request_id="r1", seq=seq)
    if final:
        made.session_finished.SetInParent()
    else:
        made.insurer_progress.insurer_id = f"i{seq}"
    return made


async def test_a_wait_ends_at_the_next_change_and_not_at_an_earlier_one() -> None:
    changes = Changes()
    changes.notify()  # nobody waits: nothing to wake, nothing kept for later
    first = asyncio.ensure_future(changes.wait())
    await asyncio.sleep(0)
    assert not first.done() and changes.waiting == 1
    changes.notify()
    await first
    assert changes.waiting == 0


async def test_a_change_between_asking_and_the_wait_starting_is_not_missed() -> None:
    """asyncio.wait_for runs the wait in a task that starts later: a change made meanwhile must
    still end it, as it ended an asyncio.Event's wait."""
    changes = Changes()
    waiting = asyncio.ensure_future(asyncio.wait_for(changes.wait(), 30))
    changes.notify()  # before the task running the wait has started
    await waiting  # a timeout would have raised TimeoutError after 30 s instead


async def test_a_wait_given_up_leaves_nothing_behind() -> None:
    changes = Changes()
    waits = [asyncio.ensure_future(changes.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert changes.waiting == 3
    waits[1].cancel()
    await asyncio.gather(*waits[1:2], return_exceptions=True)
    assert changes.waiting == 2
    changes.notify()
    await asyncio.gather(waits[0], waits[2])
    assert changes.waiting == 0


async def test_followers_read_every_event_in_order_then_stop_at_the_final_one() -> None:
    live = LiveStream([event(1)])
    early = asyncio.ensure_future(_read(live, 0))
    late = asyncio.ensure_future(_read(live, 2))
    await asyncio.sleep(0)
    live.append(event(2))
    live.extend([event(3), event(4, final=True)])
    live.append(event(5))  # after the final event: no follower reads it
    assert await early == [1, 2, 3, 4]
    assert await late == [3, 4]


async def test_a_follower_waiting_when_the_stream_closes_stops() -> None:
    live = LiveStream([event(1)])
    following = asyncio.ensure_future(_read(live, 0))
    await asyncio.sleep(0)
    live.close()
    assert await following == [1]


async def _read(live: LiveStream, after: int) -> list[int]:
    return [e.seq async for e in live.follow(after)]
