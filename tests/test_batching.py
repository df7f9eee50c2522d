"""Taking the messages waiting on a stream's queue as one batch (osago_common.batching)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TypeGuard

from osago_common.batching import BATCH_HEADER, MAX_BATCH_BYTES, batch_budget, says_batches, take_more

END = object()


def is_text(item: object) -> TypeGuard[str]:
    return isinstance(item, str)


def chars(text: str) -> int:
    return len(text)


BIG = 1 << 30  # no byte limit in play


def queue_of(*items: object) -> asyncio.Queue[object]:
    queue: asyncio.Queue[object] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    return queue


def test_every_message_waiting_rides_and_a_sentinel_waits_its_turn_in_order() -> None:
    queue = queue_of("b", "c", END, "d")
    held: deque[object] = deque()
    assert take_more(queue, held, is_text, chars, BIG) == ["b", "c"]
    assert list(held) == [END]  # kept for the writer's next turn, ahead of what follows it
    assert take_more(queue, held, is_text, chars, BIG) == []  # nothing rides past the sentinel
    assert held.popleft() is END
    assert take_more(queue, held, is_text, chars, BIG) == ["d"]
    assert queue.empty() and not held


def test_a_batch_holds_at_most_the_limit_and_the_rest_waits_in_the_queue() -> None:
    queue = queue_of(*(str(n) for n in range(10)))
    held: deque[object] = deque()
    assert take_more(queue, held, is_text, chars, BIG, limit=4) == ["0", "1", "2"]  # three more than the first
    assert queue.qsize() == 7 and not held
    assert take_more(queue_of(), held, is_text, chars, BIG) == []  # an idle stream: nothing, at once


def test_a_batch_stays_within_its_bytes_and_a_message_too_large_waits_for_the_next() -> None:
    queue = queue_of("a" * 10, "b" * 10, "c" * 30, "d")
    held: deque[object] = deque()
    # Each message costs its size and a few bytes of framing: 16 + 16 fit in 40, 36 more do not.
    assert take_more(queue, held, is_text, chars, 40) == ["a" * 10, "b" * 10]
    assert list(held) == ["c" * 30]  # it leads the next message, ahead of what follows
    assert held.popleft() == "c" * 30
    assert take_more(queue, held, is_text, chars, 40) == ["d"]
    assert batch_budget(1000) == MAX_BATCH_BYTES - 1000
    assert batch_budget(MAX_BATCH_BYTES + 1) < 0  # a first message that large rides alone


def test_only_the_header_with_value_one_says_batches() -> None:
    assert says_batches(((BATCH_HEADER, "1"),))
    assert says_batches([("other", "x"), (BATCH_HEADER, b"1")])
    assert not says_batches(((BATCH_HEADER, "0"),))
    assert not says_batches((("other", "1"),))
    assert not says_batches(None)
