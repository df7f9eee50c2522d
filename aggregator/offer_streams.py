"""Asks multiplexed over a few long-lived `Offers` streams to one gateway: an ask is a message,
not a call, so a session's ten insurers cost ten messages each way instead of ten calls (each a
set-up, metadata, a deadline and a teardown on both sides).

A pool keeps `size` streams open to its gateway's channel (more while every one carries
`max_asks`; the extra ones close once idle). A stream older than `max_age_s` takes no new asks
and closes once its last one ends, a fresh one taking its place: new streams are spread over the
replicas ready at the time, so a replica that came back (or was added) gets its share again.

Each stream has one writer (the request iterator gRPC consumes) and one reader, which hands every
update to its ask's queue by call_id and, when the stream breaks (a replica drained or died),
ends every ask still running on it with the stream's status: the caller then asks again on a
fresh stream, and the gateway resumes the insurer application by its request id. An ask whose
caller leaves is cancelled on the stream.

Hand-written: gRPC has no multiplexing of logical calls over one stream, and no library here
does it for grpc.aio.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TypeGuard

import grpc
from google.protobuf import duration_pb2
from osago.v1 import application_pb2, gateway_service_pb2, gateway_service_pb2_grpc

from osago_common.batching import BATCH_HEADER, says_batches, take_more
from osago_common.clock import SYSTEM_CLOCK, Clock

Update = gateway_service_pb2.RequestOfferResponse
# What an ask's queue receives: an update, or the status that ended the ask without one (the
# stream broke, or the ask's time ran out: DEADLINE_EXCEEDED).
Item = Update | grpc.StatusCode

_FINAL = frozenset({"offer", "failed"})
# A stream takes new asks this long after it opened (see the module docstring).
MAX_AGE_S = 300.0


class Ask:
    """One ask on a stream: its updates arrive on `updates`; `close` when done with it."""

    __slots__ = ("call_id", "stream", "updates")

    def __init__(self, stream: _Stream, call_id: int) -> None:
        self.stream = stream
        self.call_id = call_id
        self.updates: asyncio.Queue[Item] = asyncio.Queue()

    def close(self) -> None:
        """Forgets the ask; if it was still running, tells the gateway to stop it."""
        self.stream.forget(self.call_id)


class _Stream:
    """One Offers call and the asks running on it."""

    def __init__(
        self,
        stub: gateway_service_pb2_grpc.InsurerGatewayServiceStub,
        on_end: Callable[[_Stream], None],
        opened_at: float,
    ):
        self.opened_at = opened_at
        self.asks: dict[int, Ask] = {}
        # Takes new asks (not retired, not ended); can still send (not half-closed, not ended).
        self.open = True
        self.writing = True
        # The gateway said it reads batched asks (its headers; osago_common.batching).
        self.batches = False
        self._outgoing: asyncio.Queue[gateway_service_pb2.OffersRequest | None] = asyncio.Queue()
        self._on_end = on_end
        self._call = stub.Offers(self._requests(), metadata=((BATCH_HEADER, "1"),))
        self._reader = asyncio.create_task(self._read(), name="offers-stream")

    async def _requests(self) -> AsyncIterator[gateway_service_pb2.OffersRequest]:
        """The stream's one writer: every ask and cancel in order, those waiting together in
        one message once the gateway reads batches; None half-closes."""
        held: deque[gateway_service_pb2.OffersRequest | None] = deque()
        while True:
            message = held.popleft() if held else await self._outgoing.get()
            if message is None:
                return
            if self.batches:
                more = take_more(self._outgoing, held, message, _is_message, gateway_service_pb2.OffersRequest.ByteSize)
                if more:
                    message.more.extend(more)
            yield message

    def send(self, ask: Ask, message: gateway_service_pb2.OffersRequest) -> None:
        self.asks[ask.call_id] = ask
        self._outgoing.put_nowait(message)

    def forget(self, call_id: int) -> None:
        if self.asks.pop(call_id, None) is not None and self.writing:
            self._outgoing.put_nowait(
                gateway_service_pb2.OffersRequest(cancel=gateway_service_pb2.OffersRequest.Cancel(call_id=call_id))
            )

    def half_close(self) -> None:
        """No more messages on this stream: the gateway ends it once the running asks finish."""
        self.open = False
        self.writing = False
        self._outgoing.put_nowait(None)

    async def _read(self) -> None:
        # A stream the gateway ended without an error still leaves its running asks unanswered:
        # they are asked again elsewhere, as after a drain.
        code = grpc.StatusCode.UNAVAILABLE
        try:
            self.batches = says_batches(await self._call.initial_metadata())
            async for response in self._call:
                self._deliver(response)
                for more in response.more:  # a batch: each as if it had come alone, in order
                    self._deliver(more)
        except grpc.aio.AioRpcError as error:
            code = error.code()
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self.open = self.writing = False
            self._on_end(self)
            asks, self.asks = self.asks, {}
            for ask in asks.values():
                ask.updates.put_nowait(code)

    def _deliver(self, response: gateway_service_pb2.OffersResponse) -> None:
        ask = self.asks.get(response.call_id)
        if ask is None:  # cancelled meanwhile
            return
        update = response.update
        if update.WhichOneof("update") in _FINAL:
            del self.asks[response.call_id]
        ask.updates.put_nowait(update)

    async def close(self) -> None:
        self.open = self.writing = False
        self._call.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def _is_message(item: gateway_service_pb2.OffersRequest | None) -> TypeGuard[gateway_service_pb2.OffersRequest]:
    """An ask or cancel may ride in a batch; the half-close may not."""
    return item is not None


class OffersPool:
    """The Offers streams to one gateway (see the module docstring)."""

    def __init__(
        self,
        stub: gateway_service_pb2_grpc.InsurerGatewayServiceStub,
        size: int,
        max_asks: int,
        *,
        max_age_s: float = MAX_AGE_S,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._stub = stub
        self._max_age_s = max_age_s
        self._clock = clock
        self._size = max(1, size)
        self._max_asks = max(1, max_asks)
        self._streams: list[_Stream] = []
        # Extra streams half-closed while their last asks finish, closed with the pool.
        self._closing: set[_Stream] = set()
        self._ids = itertools.count(1)

    @property
    def streams(self) -> int:
        """Streams open now."""
        return len(self._streams)

    def ask(
        self,
        request_id: str,
        application: application_pb2.Application,
        timeout_s: float,
        trace: dict[str, str],
    ) -> Ask:
        """Sends an ask on the least busy stream (opening one while fewer than `size` are open,
        so that round-robin spreads them over the gateway's replicas, or when all are full)."""
        stream = self._pick()
        ask = Ask(stream, next(self._ids))
        timeout = duration_pb2.Duration()
        timeout.FromMilliseconds(max(1, int(timeout_s * 1000)))
        message = gateway_service_pb2.OffersRequest(
            ask=gateway_service_pb2.OffersRequest.Ask(
                call_id=ask.call_id,
                request_id=request_id,
                application=application,
                timeout=timeout,
                traceparent=trace.get("traceparent", ""),
                tracestate=trace.get("tracestate", ""),
            )
        )
        stream.send(ask, message)
        return ask

    def _pick(self) -> _Stream:
        now = self._clock.monotonic()
        for old in [s for s in self._streams if now - s.opened_at >= self._max_age_s]:
            self._retire(old)
        if len(self._streams) < self._size:
            return self._open()
        stream = min(self._streams, key=lambda s: len(s.asks))
        if len(stream.asks) >= self._max_asks:
            return self._open()
        return stream

    def _open(self) -> _Stream:
        stream = _Stream(self._stub, self._ended, self._clock.monotonic())
        self._streams.append(stream)
        return stream

    def _ended(self, stream: _Stream) -> None:
        self._closing.discard(stream)
        with contextlib.suppress(ValueError):
            self._streams.remove(stream)

    def release(self, ask: Ask) -> None:
        """Done with `ask`: cancelled on its stream if still running there; a retired stream
        left idle is closed, and so is an extra one."""
        stream = ask.stream
        ask.close()
        if stream.asks:
            return
        if stream in self._closing:
            if stream.writing:
                stream.half_close()
        elif stream.open and len(self._streams) > self._size:
            self._retire(stream)

    @property
    def retiring(self) -> int:
        """Retired streams still carrying asks."""
        return len(self._closing)

    def _retire(self, stream: _Stream) -> None:
        """No new asks on `stream`: it is closed once its last ask is answered or cancelled
        (until then it still carries their cancels)."""
        self._ended(stream)
        self._closing.add(stream)
        stream.open = False
        if not stream.asks:
            stream.half_close()

    async def close(self) -> None:
        streams, self._streams = [*self._streams, *self._closing], []
        self._closing.clear()
        for stream in streams:
            await stream.close()
