"""The cache of results: a finished session's offers, keyed by the fingerprint of the normalised
application, kept for a short TTL (never past an offer's own validity), so a repeated identical
application is answered at once. `MemoryResultCache` (this process) and `RedisResultCache`
(shared by every instance) behind one `ResultCache` protocol."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Protocol

import redis.asyncio
import redis.exceptions
from osago.v1 import aggregator_service_pb2, quote_pb2

from osago_common.clock import SYSTEM_CLOCK, Clock

KEY_PREFIX = "osago:cache:"


class ResultCache(Protocol):
    async def get(self, fingerprint: str) -> list[quote_pb2.Quote]:
        """The offers kept for the fingerprint ([] when none)."""

    async def put(self, fingerprint: str, quotes: Sequence[quote_pb2.Quote], ttl_s: float) -> None:
        """Keeps the offers for `ttl_s` seconds."""


def _pack(quotes: Sequence[quote_pb2.Quote]) -> bytes:
    data: bytes = aggregator_service_pb2.QuoteRequest(quotes=quotes).SerializeToString()
    return data


def _unpack(data: bytes) -> list[quote_pb2.Quote]:
    holder = aggregator_service_pb2.QuoteRequest()
    holder.ParseFromString(data)
    return list(holder.quotes)


class MemoryResultCache:
    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[float, bytes]] = {}
        self._expiry: list[tuple[float, str]] = []  # a heap of (until, fingerprint)

    async def get(self, fingerprint: str) -> list[quote_pb2.Quote]:
        entry = self._entries.get(fingerprint)
        if entry is None:
            return []
        if entry[0] <= self._clock.monotonic():
            del self._entries[fingerprint]
            return []
        return _unpack(entry[1])

    async def put(self, fingerprint: str, quotes: Sequence[quote_pb2.Quote], ttl_s: float) -> None:
        now = self._clock.monotonic()
        # Expired entries go as new ones come: the cache never holds more than a TTL's worth.
        while self._expiry and self._expiry[0][0] <= now:
            until, key = heapq.heappop(self._expiry)
            entry = self._entries.get(key)
            if entry is not None and entry[0] == until:
                del self._entries[key]
        self._entries[fingerprint] = (now + ttl_s, _pack(quotes))
        heapq.heappush(self._expiry, (now + ttl_s, fingerprint))


class RedisResultCache:
    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client

    async def get(self, fingerprint: str) -> list[quote_pb2.Quote]:
        try:
            data = await self._client.get(KEY_PREFIX + fingerprint)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return []  # no cache is a fresh session, not an error
        if not data:
            return []
        return _unpack(data if isinstance(data, bytes) else data.encode())

    async def put(self, fingerprint: str, quotes: Sequence[quote_pb2.Quote], ttl_s: float) -> None:
        await self._client.set(KEY_PREFIX + fingerprint, _pack(quotes), px=max(1, int(ttl_s * 1000)))
