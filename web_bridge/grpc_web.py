"""grpc-web for development, where no proxy runs in front: `POST /osago.v1.AggregatorService/*`
and `/grpc.health.v1.Health/*` with `application/grpc-web[+proto]` or
`application/grpc-web-text[+proto]`, carried on to the aggregator as gRPC. It speaks the wire
protocol of the production edge's grpc_web filter, so the page works unchanged behind either.

- Messages pass through as bytes (no per-method code): the request's one message goes out, each
  reply comes back as a message frame, then the status as a trailers frame.
- A call that ends before its first message is answered "trailers-only": HTTP 200 with
  grpc-status, grpc-message and grpc-status-details-bin as headers and an empty body.
- `grpc-timeout` becomes the call's deadline, capped at the stream timeout; without it, unary
  calls get the request timeout and streams the stream timeout.
- A client that goes away cancels the call (and so a `GetQuotes` session, after its grace).
- Request headers travel as call metadata (`traceparent`, ...), but not the HTTP-only ones nor
  what only the bridge may say (`x-osago-client`: the client's address, which it adds).
- A body that is not grpc-web framing is a 400, another content type a 415 (JSON, as elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from aiohttp import hdrs, web
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2
from osago.v1 import aggregator_service_pb2

from osago_common import tracing
from web_bridge import problems
from web_bridge.grpc_web_wire import (
    Metadata,
    Mode,
    WireError,
    call_metadata,
    frame,
    metadata_headers,
    mode_of,
    parse_timeout,
    request_message,
    status_headers,
    trailers_frame,
)
from web_bridge.problems import body, respond
from web_bridge.security import client_address
from web_bridge.state import AGGREGATOR, SETTINGS

log = logging.getLogger(__name__)

SERVICES: tuple[ServiceDescriptor, ...] = (
    aggregator_service_pb2.DESCRIPTOR.services_by_name["AggregatorService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
)
# "/package.Service/Method" -> whether the server streams; grpc-web has no client streaming.
METHODS: dict[str, bool] = {
    f"/{service.full_name}/{method.name}": method.server_streaming
    for service in SERVICES
    for method in service.methods
    if not method.client_streaming
}
# How often a call checks that its client is still connected (aiohttp signals no disconnect).
CLIENT_CHECK_S = 0.25
# Headers of the HTTP exchange itself, never carried on as call metadata.
HTTP_ONLY = frozenset(
    {
        "host",
        "connection",
        # The trace context goes on as this request's span's, not as the browser sent it.
        "traceparent",
        "tracestate",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-type",
        "content-length",
        "content-encoding",
        "accept",
        "accept-encoding",
        "accept-language",
        "user-agent",
        "origin",
        "referer",
        "cookie",
        "pragma",
        "cache-control",
        "priority",
        "dnt",
        "x-grpc-web",
        "x-user-agent",
        # Only the bridge says who the client is; a browser cannot claim a customer or address.
        "authorization",
        "x-osago-customer",
        "x-osago-client",
    }
)
OK = grpc.StatusCode.OK.value[0]
INTERNAL = grpc.StatusCode.INTERNAL.value[0]
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED.value[0]


@dataclass(frozen=True)
class Status:
    """How a call ended: the gRPC code (a number), its message, the trailing metadata."""

    code: int
    message: str = ""
    trailing: Metadata = ()

    @classmethod
    def of_error(cls, error: grpc.aio.AioRpcError) -> Status:
        return cls(error.code().value[0], error.details() or "", tuple(error.trailing_metadata() or ()))

    @classmethod
    async def of_call(cls, call: grpc.aio.Call) -> Status:
        code: grpc.StatusCode = await call.code()
        trailing = await call.trailing_metadata()
        return cls(code.value[0], await call.details() or "", tuple(trailing or ()))

    def headers(self) -> list[tuple[str, str]]:
        return status_headers(self.code, self.message, self.trailing)


def add_routes(router: web.UrlDispatcher) -> None:
    for service in SERVICES:
        router.add_post(f"/{service.full_name}/{{method}}", handle)


async def handle(request: web.Request) -> web.StreamResponse:
    """One grpc-web call, carried on to the aggregator."""
    mode = mode_of(request.headers.get(hdrs.CONTENT_TYPE, ""))
    if mode is None:
        text = "grpc-web calls are application/grpc-web+proto or application/grpc-web-text+proto"
        return respond(415, body("unsupported media type", text))
    streaming = METHODS.get(request.path)
    if streaming is None:
        return trailers_only(mode, Status(UNIMPLEMENTED, f"unknown method {request.path}"))
    try:
        timeout_s = _timeout_s(request, streaming)
        metadata = [
            *call_metadata(request.headers.items(), HTTP_ONLY),
            ("x-osago-client", client_address(request)),
            # This request's span (which continued the browser's `traceparent`, if it sent one).
            *tracing.inject_metadata(),
        ]
        message = request_message(mode.decode(await request.read()))
    except WireError as error:
        return respond(400, body("bad grpc-web request", str(error)))
    channel = request.app[AGGREGATOR].channel
    async with _cancelled_when_client_leaves(request):
        # No serializers: the request and the replies pass through as bytes.
        if streaming:
            stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(request.path)
            stream_call = stream(message, timeout=timeout_s, metadata=metadata)
            try:
                return await _relay_stream(request, mode, stream_call)
            finally:
                stream_call.cancel()
        unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(request.path)
        unary_call = unary(message, timeout=timeout_s, metadata=metadata)
        try:
            return await _relay_unary(request, mode, unary_call)
        finally:
            unary_call.cancel()


def _timeout_s(request: web.Request, streaming: bool) -> float:
    """The call's deadline: grpc-timeout, never beyond the stream timeout (as the production edge
    caps it); without one, the bridge's own timeouts."""
    settings = request.app[SETTINGS]
    cap = max(settings.stream_timeout_s, settings.request_timeout_s)
    asked = request.headers.get("grpc-timeout")
    if asked is None:
        return settings.stream_timeout_s if streaming else settings.request_timeout_s
    return min(parse_timeout(asked), cap)


def trailers_only(mode: Mode, status: Status) -> web.Response:
    """The whole answer in the headers: the call ended before any message."""
    return web.Response(status=200, headers=[(hdrs.CONTENT_TYPE, mode.content_type), *status.headers()])


async def _relay_unary(
    request: web.Request, mode: Mode, call: grpc.aio.UnaryUnaryCall[bytes, bytes]
) -> web.StreamResponse:
    try:
        reply: bytes = await call
    except grpc.aio.AioRpcError as error:
        return trailers_only(mode, Status.of_error(error))
    status = await Status.of_call(call)
    initial = metadata_headers(tuple(await call.initial_metadata() or ()))
    data = mode.encode(frame(reply)) + mode.encode(trailers_frame(status.headers()))
    return web.Response(status=200, body=data, headers=[(hdrs.CONTENT_TYPE, mode.content_type), *initial])


async def _relay_stream(
    request: web.Request, mode: Mode, call: grpc.aio.UnaryStreamCall[bytes, bytes]
) -> web.StreamResponse:
    try:
        first = await call.read()
    except grpc.aio.AioRpcError as error:
        return trailers_only(mode, Status.of_error(error))
    if not isinstance(first, bytes):  # grpc.aio.EOF (typed `object`): no reply at all
        return trailers_only(mode, await Status.of_call(call))
    initial = metadata_headers(tuple(await call.initial_metadata() or ()))
    response = web.StreamResponse(status=200, headers=[(hdrs.CONTENT_TYPE, mode.content_type), *initial])
    await response.prepare(request)
    try:
        await response.write(mode.encode(frame(first)))
        status = await _forward(call, response, mode)
        await response.write(mode.encode(trailers_frame(status.headers())))
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away; the caller cancels the call
    return response


async def _forward(call: grpc.aio.UnaryStreamCall[bytes, bytes], response: web.StreamResponse, mode: Mode) -> Status:
    """Writes each further reply as a frame; the status the call ended with."""
    try:
        while isinstance(message := await call.read(), bytes):  # replies, until grpc.aio.EOF
            await response.write(mode.encode(frame(message)))
    except grpc.aio.AioRpcError as error:
        return Status.of_error(error)
    except ConnectionError:
        raise  # the client is gone: nothing more to write
    except Exception:
        trace = problems.trace_id()
        log.exception("grpc-web stream failed, trace %s", trace)
        return Status(INTERNAL, f"internal error (trace {trace})")
    return await Status.of_call(call)


@contextlib.asynccontextmanager
async def _cancelled_when_client_leaves(request: web.Request) -> AsyncIterator[None]:
    """Cancels the enclosing handler once the client's connection is gone."""
    handler = asyncio.current_task()
    assert handler is not None

    async def watch() -> None:
        # aiohttp signals a client's leaving to no one but a reader of the body: poll the transport.
        while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
            await asyncio.sleep(CLIENT_CHECK_S)
        handler.cancel()

    watcher = asyncio.create_task(watch(), name="grpc-web-client-watch")
    try:
        yield
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
