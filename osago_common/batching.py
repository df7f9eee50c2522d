"""Messages waiting on a queue sent as one: an Offers stream's `more` fields (protos/osago/v1/
gateway_service.proto). A stream's writer takes the first message waiting, then every message
queued behind it that may ride with it, and writes them as one; each side does so only once the
other said it reads `more` (the `x-osago-offers-batch` header), so a peer of an earlier version
gets one message per update as before.

Nothing is delayed for a batch: a message goes as soon as the writer is free, with whatever
queued up while the previous write was under way. An idle stream writes one update per message;
a busy one (a gateway answering many asks, an aggregator starting many sessions) writes a few
messages where it would write dozens, and gRPC's cost is per message (a system call, a
completion and a wake-up of the event loop on each side).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from typing import TypeGuard, TypeVar

# The header each side of an Offers stream sends to say it reads `more` ("1").
BATCH_HEADER = "x-osago-offers-batch"
# The most messages written as one, and the most bytes: a quarter of the smallest receive limit
# on the way (a gateway's, 64 KiB: osago_common.grpc_server), since an ask carries a whole
# application. A message larger than that alone still goes, alone, as before.
MAX_BATCH = 64
MAX_BATCH_BYTES = 16 * 1024
# What a message costs inside another's repeated field besides its own bytes (tag and length).
_FRAMING_BYTES = 6

T = TypeVar("T")
U = TypeVar("U")


def says_batches(metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
    """Whether the other side's headers say it reads `more`."""
    return any(key == BATCH_HEADER and value in ("1", b"1") for key, value in metadata or ())


def take_more(
    queue: asyncio.Queue[T],
    held: deque[T],
    first: U,
    rides: Callable[[T], TypeGuard[U]],
    size: Callable[[U], int],
    limit: int = MAX_BATCH,
    max_bytes: int = MAX_BATCH_BYTES,
) -> list[U]:
    """The messages waiting now (first those in `held`, then the queue's) that may ride with
    `first`, the one just taken: at most `limit - 1` of them, `max_bytes` in all with it (`size`
    tells a message's; measured only when something is waiting), stopping at the first that may
    not (a sentinel, or one too large for what is left, kept at the front of `held` for the
    writer's next turn). Never waits."""
    more: list[U] = []
    budget: int | None = None
    while len(more) < limit - 1:
        if not held:
            if queue.empty():
                break
            held.append(queue.get_nowait())
        item = held[0]
        if not rides(item):
            break
        if budget is None:
            budget = max_bytes - size(first)
        cost = size(item) + _FRAMING_BYTES
        if cost > budget:
            break
        budget -= cost
        held.popleft()
        more.append(item)
    return more
