"""QuoteClient: the aggregator's calls with deadlines, typed results, resumed event streams and
QuoteError as the only error."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Callable
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

import grpc
from osago.v1 import (
    aggregator_service_pb2,
    aggregator_service_pb2_grpc,
    application_pb2,
    events_pb2,
)

from osago_client.channel import open_channel
from osago_client.errors import QuoteError, from_rpc_error
from osago_client.resume import EventCursor, backoff_delay

# Codes a broken stream ends with when the connection, not the request, failed: a dropped
# connection or a server going away (UNAVAILABLE), a proxy's reset (INTERNAL), a lost race
# (ABORTED). Anything else (INVALID_ARGUMENT, NOT_FOUND, DEADLINE_EXCEEDED, ...) is final.
RESUMABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED}
)

# Opens the first stream of a GetQuotes session, given the seconds left.
_Opener = Callable[[float], Any]


class QuoteClient:
    """A client of osago.v1.AggregatorService; use as `async with QuoteClient(target) as client`.

    Every call has a deadline of `timeout_s` (a stream's resumes included). A stream that breaks
    before its session finished is resumed from the last event seen, up to `max_resumes` times in
    a row without progress, waiting `resume_backoff_s * 2**n` (at most `resume_backoff_max_s`,
    full jitter) before each attempt.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = 75.0,
        max_resumes: int = 5,
        resume_backoff_s: float = 0.2,
        resume_backoff_max_s: float = 2.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s}")
        if max_resumes < 0:
            raise ValueError(f"max_resumes must be at least 0, not {max_resumes}")
        self._target = target
        self._timeout_s = timeout_s
        self._max_resumes = max_resumes
        self._backoff_s = resume_backoff_s
        self._backoff_max_s = resume_backoff_max_s
        self._credentials = credentials
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    async def __aenter__(self) -> Self:
        self._channel = open_channel(self._target, self._credentials)
        self._stub = aggregator_service_pb2_grpc.AggregatorServiceStub(self._channel)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel, cancelling calls in flight."""
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    def _service(self) -> Any:
        if self._stub is None:
            raise RuntimeError("QuoteClient is not open: use `async with QuoteClient(...)`")
        return self._stub

    async def create(
        self,
        application: application_pb2.Application,
        *,
        idempotency_key: str = "",
        time_limit_s: float | None = None,
    ) -> aggregator_service_pb2.QuoteRequest:
        """Creates a quote request (or finds the one created with the same key) and returns it.

        Without a key one is generated, so the channel's retries cannot create a second request.
        """
        request = aggregator_service_pb2.CreateQuoteRequestRequest(
            application=application, idempotency_key=idempotency_key or _new_key()
        )
        _set_time_limit(request, time_limit_s)
        try:
            response = await self._service().CreateQuoteRequest(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
        return response.quote_request

    async def get(self, request_id: str) -> aggregator_service_pb2.QuoteRequest:
        """A snapshot of the quote request: status, offers and failures so far."""
        request = aggregator_service_pb2.GetQuoteRequestRequest(request_id=request_id)
        try:
            response = await self._service().GetQuoteRequest(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from error
        return response.quote_request

    async def stream_events(
        self, request_id: str, after_seq: int = 0
    ) -> AsyncGenerator[events_pb2.QuoteEvent, None]:
        """The request's events after `after_seq`, each once and in order, to session_finished."""
        if not request_id:
            raise ValueError("request_id is required")
        async for event in self._follow(EventCursor(request_id, after_seq), None):
            yield event

    async def get_quotes(
        self,
        application: application_pb2.Application,
        *,
        idempotency_key: str = "",
        time_limit_s: float | None = None,
    ) -> AsyncGenerator[events_pb2.QuoteEvent, None]:
        """Starts a session and yields its events, each once and in order, up to session_finished.

        A call that breaks before its first event is repeated with the same idempotency key
        (generated when not given), so it attaches to the request already created, if any.
        """
        request = aggregator_service_pb2.GetQuotesRequest(
            application=application, idempotency_key=idempotency_key or _new_key()
        )
        _set_time_limit(request, time_limit_s)
        service = self._service()

        def open_session(timeout: float) -> Any:
            return service.GetQuotes(request, timeout=timeout)

        async for event in self._follow(EventCursor(), open_session):
            yield event

    async def _follow(
        self, cursor: EventCursor, open_session: _Opener | None
    ) -> AsyncGenerator[events_pb2.QuoteEvent, None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        failures = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                message = f"the session did not finish within {self._timeout_s:g} s"
                raise QuoteError("DEADLINE_EXCEEDED", message)
            call = self._open(cursor, open_session, remaining)
            progressed = False
            try:
                async for response in call:
                    event: events_pb2.QuoteEvent = response.event
                    if cursor.accept(event):
                        progressed = True
                        yield event
                        if cursor.finished:
                            return
                broken = QuoteError("UNAVAILABLE", "the stream ended before the session finished")
            except grpc.aio.AioRpcError as error:
                if error.code() not in RESUMABLE_CODES:
                    raise from_rpc_error(error) from error
                broken = from_rpc_error(error)
            finally:
                call.cancel()
            failures = 1 if progressed else failures + 1
            if failures > self._max_resumes:
                raise broken
            delay = backoff_delay(failures - 1, self._backoff_s, self._backoff_max_s)
            await asyncio.sleep(max(0.0, min(delay, deadline - loop.time())))

    def _open(self, cursor: EventCursor, open_session: _Opener | None, timeout: float) -> Any:
        if cursor.request_id or open_session is None:
            request = aggregator_service_pb2.StreamQuoteEventsRequest(
                request_id=cursor.request_id, after_seq=cursor.last_seq
            )
            return self._service().StreamQuoteEvents(request, timeout=timeout)
        return open_session(timeout)


def _new_key() -> str:
    return str(uuid.uuid4())


def _set_time_limit(request: Any, time_limit_s: float | None) -> None:
    if time_limit_s is not None:
        request.time_limit.FromTimedelta(timedelta(seconds=time_limit_s))
