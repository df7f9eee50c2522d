"""Taking the messages waiting on a stream's queue as one batch (osago_common.batching)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TypeGuard

from osago_common.batching import BATCH_HEADER, says_batches, take_more

END = object()


def is_text(item: object) -> TypeGuard[str]:
    return isinstance(item, str)


def queue_of(*items: object) -> asyncio.Queue[object]:
    queue: asyncio.Queue[object] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    return queue


def test_every_message_waiting_rides_and_a_sentinel_waits_its_turn_in_order() -> None:
    queue = queue_of("b", "c", END, "d")
    held: deque[object] = deque()
    assert take_more(queue, held, is_text) == ["b", "c"]
    assert list(held) == [END]  # kept for the writer's next turn, ahead of what follows it
    assert take_more(queue, held, is_text) == []  # nothing rides past the sentinel
    assert held.popleft() is END
    assert take_more(queue, held, is_text) == ["d"]
    assert queue.empty() and not held


def test_a_batch_holds_at_most_the_limit_and_the_rest_waits_in_the_queue() -> None:
    queue = queue_of(*(str(n) for n in range(10)))
    held: deque[object] = deque()
    assert take_more(queue, held, is_text, limit=4) == ["0", "1", "2"]  # three more than the first
    assert queue.qsize() == 7 and not held
    assert take_more(queue_of(), held, is_text) == []  # an idle stream: nothing, at once


def test_only_the_header_with_value_one_says_batches() -> None:
    assert says_batches(((BATCH_HEADER, "1"),))
    assert says_batches([("other", "x"), (BATCH_HEADER, b"1")])
    assert not says_batches(((BATCH_HEADER, "0"),))
    assert not says_batches((("other", "1"),))
    assert not says_batches(None)
