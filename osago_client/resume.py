"""Pure resume logic: where a request's event stream stands, and how long to wait before the
next attempt (full jitter). No gRPC here."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from osago.v1 import events_pb2


@dataclass
class EventCursor:
    """The position of one consumer in a request's event log (seq 1, 2, 3, ...)."""

    request_id: str = ""
    last_seq: int = 0
    finished: bool = False
    # The request's access token (from its creation), which every resume presents.
    access_token: str = ""

    def accept(self, event: events_pb2.QuoteEvent) -> bool:
        """True when `event` is new and should be delivered; False for a repeat or a late one."""
        seq = int(event.seq)
        if self.finished or seq <= self.last_seq:
            return False
        self.last_seq = seq
        if not self.request_id:
            self.request_id = str(event.request_id)
        self.finished = event.WhichOneof("payload") == "session_finished"
        return True


def backoff_delay(attempt: int, base_s: float, cap_s: float, rand: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform(0, min(cap, base * 2**attempt)) seconds; `attempt` counts from 0."""
    return rand() * min(cap_s, base_s * 2.0 ** min(attempt, 32))
