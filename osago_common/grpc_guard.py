"""The gate every call of a project server passes, as one grpc.aio server interceptor:

- **undecodable requests**: bytes that are not the method's protobuf message end the call with
  INVALID_ARGUMENT naming the message type (never UNKNOWN with a Python exception's name);
- **cut-short requests**: a unary request whose stream ends before its message is whole (or
  without one) ends the call with INVALID_ARGUMENT at once. grpc.aio's own unary-request path
  waits forever for such a message (seen with grpcio 1.85: the receive never completes, so the
  call hangs until the client gives up), while its streaming-request path reads the end of the
  stream; so every unary-request method is served here as a streaming-request one that reads
  exactly one message. The wire is the same either way: clients see no difference;
- **authentication**: the server's `Authenticate` names the caller (a certificate's identity, a
  bearer token's subject) or refuses it (UNAUTHENTICATED / PERMISSION_DENIED); grpc.health.v1
  stays open for probes. Once per call, never per message. The caller is then `CALLER.get()`;
- **stream limits**: server-streaming calls beyond the total, or beyond the per-client share,
  get RESOURCE_EXHAUSTED with google.rpc.RetryInfo;
- **no internal text**: an exception a servicer let escape becomes UNKNOWN "internal error"
  with a trace id that is logged, never the exception itself.
"""

from __future__ import annotations

import collections
import contextvars
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from osago_common.grpc_errors import invalid_argument

log = logging.getLogger(__name__)

# Metadata a trusted caller (core-app, the edge) may send about the person behind a call: the
# customer's id in the caller's own system, and the browser's address as the edge saw it.
CUSTOMER_KEY = "x-osago-customer"
CLIENT_KEY = "x-osago-client"
MAX_IDENTITY = 128
OPEN_SERVICES = frozenset({"grpc.health.v1.Health"})
# How long a caller refused for too many streams is told to wait.
STREAMS_RETRY_S = 1


@dataclass(frozen=True)
class Caller:
    """Who called: `principal` the authenticated service ("dev" in the dev mode), `customer`
    the customer it acts for ("" when anonymous, e.g. a browser), `client` the address the
    request comes from (the edge's `x-osago-client`, else the peer's)."""

    principal: str
    customer: str = ""
    client: str = ""

    @property
    def limit_key(self) -> str:
        """Whose share a call counts against: the customer, else the client address, else the
        calling service."""
        if self.customer:
            return f"customer:{self.principal}:{self.customer}"
        if self.client:
            return f"client:{self.client}"
        return f"service:{self.principal}"


CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar(
    "osago_caller",
    default=Caller("anonymous"),  # noqa: B039 - a frozen dataclass
)


class Refused(Exception):
    """The caller is not let in: `code` (UNAUTHENTICATED, PERMISSION_DENIED) and a message that
    says what is missing without saying what was wrong with what was sent."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Names the caller of a call from its context (certificate, metadata) or raises Refused.
Authenticate = Callable[[grpc.aio.ServicerContext[Any, Any]], str]


@dataclass(frozen=True)
class StreamLimits:
    """Concurrent server-streaming calls: in total, and per caller's `limit_key`."""

    total: int
    per_client: int


class _Undecodable:
    """Stands for a request whose bytes did not parse, until the call can be ended properly."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    type_name = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = getattr(type_name, "full_name", "request")

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - protobuf raises DecodeError, and others on odd input
            return _Undecodable(name)

    return parse


async def _one_request(context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    """The single request message of a unary-request call; a missing or cut-short one (the
    stream ended first) ends the call with INVALID_ARGUMENT."""
    request = await context.read()
    if request is grpc.aio.EOF:
        violation = ("request", "is missing or cut short: the stream ended before one whole message")
        await context.abort_with_status(invalid_argument([violation]))
    return request


def resource_exhausted(message: str, retry_after_s: float) -> grpc.Status:
    """RESOURCE_EXHAUSTED with google.rpc.RetryInfo: how long to wait before trying again."""
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(max(1, int(retry_after_s * 1000)))
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message)
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    converted: grpc.Status = rpc_status.to_status(status)  # grpcio-status is untyped
    return converted


def _metadata_value(metadata: Any, key: str) -> str:
    for item in metadata or ():
        if item[0] == key and isinstance(item[1], str):
            value: str = item[1]
            if len(value) <= MAX_IDENTITY and value.isprintable():
                return value
            return ""
    return ""


def _peer_address(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """`ipv4:1.2.3.4:5678` -> `1.2.3.4` (the port changes with every connection)."""
    peer = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = rest.rsplit(":", 1)[0]
        return host.strip("[]").replace("%5B", "").replace("%5D", "")
    return peer


class Guard(grpc.aio.ServerInterceptor):
    """See the module docstring; `authenticate` None lets every caller in as `anonymous_name`."""

    def __init__(
        self,
        authenticate: Authenticate | None = None,
        *,
        streams: StreamLimits | None = None,
        anonymous_name: str = "dev",
        open_services: frozenset[str] = OPEN_SERVICES,
    ) -> None:
        self._authenticate = authenticate
        self._streams = streams
        self._anonymous = anonymous_name
        self._open = open_services
        self.open_streams: collections.Counter[str] = collections.Counter()
        self.total_streams = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        # grpc.aio's handlers are coroutines and async generators; the stubs type them as sync.
        handler: Any = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        service = method.split("/")[1] if method.count("/") == 2 else ""
        guarded = service not in self._open
        parse = _tolerant(handler.request_deserializer)
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def unary_unary(_: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                request = await _one_request(context)
                await self._admit(request, context, guarded)
                try:
                    return await unary(request, context)
                except Exception as error:  # noqa: BLE001 - the last boundary before the wire
                    await _internal(context, error)

            return grpc.stream_unary_rpc_method_handler(unary_unary, parse, handler.response_serializer)
        if handler.unary_stream is not None:
            stream = handler.unary_stream
            if not inspect.isasyncgenfunction(stream):  # writes with context.write (health Watch)

                async def unary_writer(_: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
                    request = await _one_request(context)
                    await self._admit(request, context, guarded)
                    await stream(request, context)

                return grpc.stream_stream_rpc_method_handler(unary_writer, parse, handler.response_serializer)

            async def unary_stream(_: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                request = await _one_request(context)
                caller = await self._admit(request, context, guarded)
                key = await self._open_stream(caller, context) if guarded else None
                try:
                    async for response in stream(request, context):
                        yield response
                except Exception as error:  # noqa: BLE001 - the last boundary before the wire
                    await _internal(context, error)
                finally:
                    if key is not None:
                        self._close_stream(key)

            return grpc.stream_stream_rpc_method_handler(unary_stream, parse, handler.response_serializer)
        # Client streaming (server reflection): authentication only, messages as they come.
        if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
            bidi = handler.stream_stream

            async def stream_stream(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                await self._admit(None, context, guarded)
                async for response in bidi(requests, context):
                    yield response

            return grpc.stream_stream_rpc_method_handler(
                stream_stream, handler.request_deserializer, handler.response_serializer
            )
        passed: grpc.RpcMethodHandler[Any, Any] = handler  # stream-unary: the project has none
        return passed

    async def _admit(self, request: Any, context: grpc.aio.ServicerContext[Any, Any], guarded: bool) -> Caller:
        if isinstance(request, _Undecodable):
            violation = ("request", f"is not a valid {request.type_name} message (protobuf wire format)")
            await context.abort_with_status(invalid_argument([violation]))
        principal = self._anonymous
        if guarded and self._authenticate is not None:
            try:
                principal = self._authenticate(context)
            except Refused as refused:
                await context.abort(refused.code, refused.message)
        metadata = context.invocation_metadata()
        caller = Caller(
            principal,
            _metadata_value(metadata, CUSTOMER_KEY),
            _metadata_value(metadata, CLIENT_KEY) or _peer_address(context),
        )
        CALLER.set(caller)
        return caller

    async def _open_stream(self, caller: Caller, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        key = caller.limit_key
        limits = self._streams
        if limits is not None:
            if self.total_streams >= limits.total:
                await context.abort_with_status(
                    resource_exhausted("too many open streams; retry later", STREAMS_RETRY_S)
                )
            if self.open_streams[key] >= limits.per_client:
                await context.abort_with_status(
                    resource_exhausted("too many open streams from this client; close one first", STREAMS_RETRY_S)
                )
        self.open_streams[key] += 1
        self.total_streams += 1
        return key

    def _close_stream(self, key: str) -> None:
        self.total_streams -= 1
        self.open_streams[key] -= 1
        if self.open_streams[key] <= 0:
            del self.open_streams[key]


async def _internal(context: grpc.aio.ServicerContext[Any, Any], error: Exception) -> NoReturn:
    if isinstance(error, grpc.aio.AbortError):
        raise error
    trace = uuid.uuid4().hex[:16]
    log.error("internal error, trace %s", trace, exc_info=(type(error), error, error.__traceback__))
    await context.abort(grpc.StatusCode.UNKNOWN, f"internal error (trace {trace})")
    raise AssertionError("abort returned")  # pragma: no cover - abort always raises


def peer_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The verified client certificate's first identity (SAN, else CN), or ""."""
    for identity in context.peer_identities() or ():
        return bytes(identity).decode("utf-8", "replace")
    return ""


class CertificateAuth:
    """An `Authenticate` for mTLS servers: the handshake already checked the certificate
    against the CA; this names the caller by it, and refuses identities not in `allowed` (when
    given). `dev` (no TLS): every caller is "dev"."""

    def __init__(self, allowed: tuple[str, ...] = (), *, dev: bool = False) -> None:
        self._allowed = frozenset(allowed)
        self._dev = dev

    def __call__(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        identity = peer_identity(context)
        if not identity:
            if self._dev:
                return "dev"
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
        if self._allowed and identity not in self._allowed:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "this client certificate may not call this service")
        return identity


def bearer_token(metadata: Mapping[str, str] | Any) -> str:
    """The token of an `authorization: Bearer …` metadata entry, or ""."""
    for item in metadata or ():
        if item[0] == "authorization" and isinstance(item[1], str):
            scheme, _, token = item[1].partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""
