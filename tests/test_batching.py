"""Taking the messages waiting on a stream's queue as one batch (osago_common.batching)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TypeGuard

from osago_common.batching import BATCH_HEADER, says_batches, take_more

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
    assert take_more(queue, held, "first", is_text, chars, max_bytes=BIG) == ["b", "c"]
    assert list(held) == [END]  # kept for the writer's next turn, ahead of what follows it
    assert take_more(queue, held, "first", is_text, chars, max_bytes=BIG) == []  # nothing rides past the sentinel
    assert held.popleft() is END
    assert take_more(queue, held, "first", is_text, chars, max_bytes=BIG) == ["d"]
    assert queue.empty() and not held


def test_a_batch_holds_at_most_the_limit_and_the_rest_waits_in_the_queue() -> None:
    queue = queue_of(*(str(n) for n in range(10)))
    held: deque[object] = deque()
    assert take_more(queue, held, "first", is_text, chars, limit=4, max_bytes=BIG) == [
        "0",
        "1",
        "2",
    ]  # three more than the first
    assert queue.qsize() == 7 and not held
    measured: list[object] = []

    def size(text: object) -> int:
        measured.append(text)
        return len(str(text))

    # An idle stream: nothing, at once, and no message measured.
    assert take_more(queue_of(), held, "first", is_text, size) == [] and measured == []


def test_a_batch_stays_within_its_bytes_and_a_message_too_large_waits_for_the_next() -> None:
    queue = queue_of("a" * 10, "b" * 10, "c" * 30, "d")
    held: deque[object] = deque()
    # The first (5) and each message with a few bytes of framing (16): 5 + 16 + 16 fit in 45,
    # 36 more do not.
    assert take_more(queue, held, "12345", is_text, chars, max_bytes=45) == ["a" * 10, "b" * 10]
    assert list(held) == ["c" * 30]  # it leads the next message, ahead of what follows
    assert held.popleft() == "c" * 30
    assert take_more(queue, held, "c" * 30, is_text, chars, max_bytes=45) == ["d"]  # 30 + 7
    # A first message over the bytes goes alone, and what waits behind it goes next.
    assert take_more(queue_of("e"), held, "x" * 50, is_text, chars, max_bytes=45) == []
    assert list(held) == ["e"]


def test_only_the_header_with_value_one_says_batches() -> None:
    assert says_batches(((BATCH_HEADER, "1"),))
    assert says_batches([("other", "x"), (BATCH_HEADER, b"1")])
    assert not says_batches(((BATCH_HEADER, "0"),))
    assert not says_batches((("other", "1"),))
    assert not says_batches(None)
