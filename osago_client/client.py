"""QuoteClient: the aggregator's calls with deadlines, typed results, resumed event streams and
QuoteError as the only error."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Self, TypeAlias, TypeVar

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
from osago_common import tracing
from osago_common.breaker import BreakerConfig, CircuitBreaker, Permit
from osago_common.clock import SYSTEM_CLOCK, Clock
from osago_common.grpc_options import replicas_target

# Codes a broken stream ends with when the connection, not the request, failed: a dropped
# connection or a server going away (UNAVAILABLE), a proxy's reset (INTERNAL), a lost race
# (ABORTED). Anything else (INVALID_ARGUMENT, NOT_FOUND, DEADLINE_EXCEEDED, ...) is final.
RESUMABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED})

# Transport failures that say the aggregator itself is unwell: they count against the breaker.
AGGREGATOR_FAILURES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
)

# The breaker toward the aggregator: over the last 20 calls, once 10 were made, half failing
# opens it for 5 s; then 2 probe calls decide.
DEFAULT_BREAKER = BreakerConfig(window_size=20, minimum_calls=10, failure_rate_threshold=0.5, open_duration_s=5.0)

# A stream of a session's events: GetQuotes opens it, StreamQuoteEvents resumes it.
_EventStream: TypeAlias = (
    grpc.aio.UnaryStreamCall[aggregator_service_pb2.GetQuotesRequest, aggregator_service_pb2.GetQuotesResponse]
    | grpc.aio.UnaryStreamCall[
        aggregator_service_pb2.StreamQuoteEventsRequest, aggregator_service_pb2.StreamQuoteEventsResponse
    ]
)
# Access tokens of the requests this client created, remembered for get and stream_events.
REMEMBERED_TOKENS = 10_000
# Opens the first stream of a GetQuotes session, given the seconds left.
_Opener = Callable[[float], _EventStream]
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class QuoteClient:
    """A client of osago.v1.AggregatorService; use as `async with QuoteClient(target) as client`.

    `target` is one aggregator (`host:port`), any gRPC target (`dns:///aggregator:50050`, every
    address of the name used), or several instances (`"10.0.0.5:50050,10.0.0.6:50050"` or a
    list; host names are resolved once, when the client opens): calls go round-robin over the
    instances, skipping one that reports NOT_SERVING (it drains), and a resumed stream may go to
    any of them.

    Every call has a deadline of `timeout_s` (a stream's resumes included). A stream that breaks
    before its session finished is resumed from the last event seen, up to `max_resumes` times in
    a row without progress, waiting `resume_backoff_s * 2**n` (at most `resume_backoff_max_s`,
    full jitter) before each attempt.

    A circuit breaker (`breaker`) guards the aggregator: while too many calls fail with
    UNAVAILABLE, INTERNAL, UNKNOWN or DEADLINE_EXCEEDED, calls fail at once with UNAVAILABLE
    instead of waiting on a service that is down.

    Reading a request (`get`, `stream_events`) needs the access token its creation returned
    (`QuoteRequest.access_token`); the client remembers the tokens of the requests it created,
    another process passes the token along. `credentials` are the channel's (TLS, and a bearer
    token with `bearer_credentials`); `metadata` goes with every call (`x-osago-customer`).
    """

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        timeout_s: float = 75.0,
        max_resumes: int = 5,
        resume_backoff_s: float = 0.2,
        resume_backoff_max_s: float = 2.0,
        credentials: grpc.ChannelCredentials | None = None,
        breaker: BreakerConfig = DEFAULT_BREAKER,
        clock: Clock = SYSTEM_CLOCK,
        channel_options: Sequence[tuple[str, str | int]] = (),
        metadata: Sequence[tuple[str, str]] = (),
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
        self._extra_options = tuple(channel_options)
        self._metadata = tuple(metadata)
        self._tokens: OrderedDict[str, str] = OrderedDict()
        self._channel: grpc.aio.Channel | None = None
        self._stub: aggregator_service_pb2_grpc.AggregatorServiceStub | None = None
        self.breaker = CircuitBreaker(breaker, clock)

    def _call_metadata(self) -> tuple[tuple[str, str], ...]:
        """This client's metadata, and the caller's trace context (`traceparent`), so the
        aggregator's spans join the caller's trace (its own OpenTelemetry provider's)."""
        return (*self._metadata, *tracing.inject_metadata())

    async def __aenter__(self) -> Self:
        self._channel = open_channel(await resolve_target(self._target), self._credentials, self._extra_options)
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

    def _service(self) -> aggregator_service_pb2_grpc.AggregatorServiceStub:
        if self._stub is None:
            raise RuntimeError("QuoteClient is not open: use `async with QuoteClient(...)`")
        return self._stub

    async def create(
        self,
        application: application_pb2.Application,
        *,
        idempotency_key: str = "",
        time_limit_s: float | None = None,
        fresh: bool = False,
    ) -> aggregator_service_pb2.QuoteRequest:
        """Creates a quote request (or finds the one created with the same key) and returns it.

        Without a key one is generated, so the channel's retries cannot create a second request.
        With `fresh`, every insurer is asked anew even if an identical application was quoted a
        few minutes ago (otherwise such offers come at once from the cache, `from_cache` set).
        """
        request = aggregator_service_pb2.CreateQuoteRequestRequest(
            application=application, idempotency_key=idempotency_key or _new_key(), fresh=fresh
        )
        _set_time_limit(request, time_limit_s)
        response = await self._unary(self._service().CreateQuoteRequest, request)
        self._remember(response.quote_request.request_id, response.quote_request.access_token)
        return response.quote_request

    def _remember(self, request_id: str, token: str) -> None:
        if request_id and token:
            self._tokens[request_id] = token
            self._tokens.move_to_end(request_id)
            if len(self._tokens) > REMEMBERED_TOKENS:
                self._tokens.popitem(last=False)

    def access_token(self, request_id: str) -> str:
        """The access token of a request this client created ("" if it did not)."""
        return self._tokens.get(request_id, "")

    async def get(self, request_id: str, *, access_token: str = "") -> aggregator_service_pb2.QuoteRequest:
        """A snapshot of the quote request: status, offers and failures so far."""
        request = aggregator_service_pb2.GetQuoteRequestRequest(
            request_id=request_id, access_token=access_token or self.access_token(request_id)
        )
        response = await self._unary(self._service().GetQuoteRequest, request)
        return response.quote_request

    def _permit(self) -> Permit:
        permit = self.breaker.try_acquire()
        if permit is None:
            wait = self.breaker.retry_after_s()
            when = f"; calls resume in {wait:.1f} s" if wait is not None else ""
            raise QuoteError("UNAVAILABLE", f"the quote service is failing right now{when}")
        return permit

    async def _unary(self, method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp], request: _Req) -> _Resp:
        permit = self._permit()
        try:
            response = await method(request, timeout=self._timeout_s, metadata=self._call_metadata())
        except grpc.aio.AioRpcError as error:
            _verdict(permit, error)
            raise from_rpc_error(error) from error
        except BaseException:
            permit.release()
            raise
        permit.success(0.0)
        return response

    async def stream_events(
        self, request_id: str, after_seq: int = 0, *, access_token: str = ""
    ) -> AsyncGenerator[events_pb2.QuoteEvent, None]:
        """The request's events after `after_seq`, each once and in order, to session_finished."""
        if not request_id:
            raise ValueError("request_id is required")
        cursor = EventCursor(request_id, after_seq, access_token=access_token or self.access_token(request_id))
        async for event in self._follow(cursor, None):
            yield event

    async def get_quotes(
        self,
        application: application_pb2.Application,
        *,
        idempotency_key: str = "",
        time_limit_s: float | None = None,
        fresh: bool = False,
    ) -> AsyncGenerator[events_pb2.QuoteEvent, None]:
        """Starts a session and yields its events, each once and in order, up to session_finished.

        A call that breaks before its first event is repeated with the same idempotency key
        (generated when not given), so it attaches to the request already created, if any.
        `fresh` as for `create`.
        """
        request = aggregator_service_pb2.GetQuotesRequest(
            application=application, idempotency_key=idempotency_key or _new_key(), fresh=fresh
        )
        _set_time_limit(request, time_limit_s)
        service = self._service()

        def open_session(timeout: float) -> _EventStream:
            return service.GetQuotes(request, timeout=timeout, metadata=self._call_metadata())

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
            permit: Permit | None = self.breaker.try_acquire()
            if permit is None:
                # The breaker is open. A new session fails at once; one already under way waits for
                # the breaker to let calls through again (its session goes on meanwhile), within
                # the deadline.
                wait = self.breaker.retry_after_s() or self._backoff_s
                if not cursor.request_id or loop.time() + wait >= deadline:
                    self._permit()  # raises the breaker's QuoteError
                await asyncio.sleep(wait)
                continue
            call = self._open(cursor, open_session, remaining)
            progressed = False
            try:
                async for response in call:
                    if permit is not None:  # the aggregator answers: it is healthy
                        permit.success(0.0)
                        permit = None
                    event: events_pb2.QuoteEvent = response.event
                    token = getattr(response, "access_token", "")
                    if token and not cursor.access_token:
                        cursor.access_token = token
                        self._remember(event.request_id, token)
                    if cursor.accept(event):
                        progressed = True
                        yield event
                        if cursor.finished:
                            return
                broken = QuoteError("UNAVAILABLE", "the stream ended before the session finished")
            except grpc.aio.AioRpcError as error:
                if permit is not None:
                    _verdict(permit, error)
                    permit = None
                if error.code() not in RESUMABLE_CODES:
                    raise from_rpc_error(error) from error
                broken = from_rpc_error(error)
            finally:
                if permit is not None:
                    permit.release()
                call.cancel()
            failures = 1 if progressed else failures + 1
            if failures > self._max_resumes:
                raise broken
            delay = backoff_delay(failures - 1, self._backoff_s, self._backoff_max_s)
            await asyncio.sleep(max(0.0, min(delay, deadline - loop.time())))

    def _open(self, cursor: EventCursor, open_session: _Opener | None, timeout: float) -> _EventStream:
        if cursor.request_id or open_session is None:
            request = aggregator_service_pb2.StreamQuoteEventsRequest(
                request_id=cursor.request_id, after_seq=cursor.last_seq, access_token=cursor.access_token
            )
            return self._service().StreamQuoteEvents(request, timeout=timeout, metadata=self._call_metadata())
        return open_session(timeout)


def _verdict(permit: Permit, error: grpc.aio.AioRpcError) -> None:
    if error.code() in AGGREGATOR_FAILURES:
        permit.failure(0.0)
    else:  # the aggregator answered (INVALID_ARGUMENT, NOT_FOUND, ...): it works
        permit.success(0.0)


async def resolve_target(target: str | Sequence[str]) -> str:
    """One gRPC target for `target`: several `host:port` (a list, or comma-separated) become one
    round-robin target, host names resolved to their IPv4 addresses now."""
    addresses = [a.strip() for a in target.split(",")] if isinstance(target, str) else [a.strip() for a in target]
    addresses = [a for a in addresses if a]
    if not addresses:
        raise ValueError("no aggregator address given")
    if len(addresses) == 1:
        return addresses[0]
    loop = asyncio.get_running_loop()
    resolved: list[str] = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        infos = await loop.getaddrinfo(host, int(port), family=socket.AF_INET, type=socket.SOCK_STREAM)
        resolved.extend(f"{info[4][0]}:{port}" for info in infos[:1])
    return replicas_target(resolved)


def _new_key() -> str:
    return str(uuid.uuid4())


def _set_time_limit(
    request: aggregator_service_pb2.GetQuotesRequest | aggregator_service_pb2.CreateQuoteRequestRequest,
    time_limit_s: float | None,
) -> None:
    if time_limit_s is not None:
        request.time_limit.FromTimedelta(timedelta(seconds=time_limit_s))
