"""The queue probe's transport: the aggregator times calls of its own through the doors its
customers use (aggregator.shedding.QueueWait).

gRPC's C core queues each method's arrived calls apart (a matcher per registered method) until
the server's event loop takes them, so the probe calls the two methods that start sessions,
`GetQuotes` (core-app, browsers through Envoy) and `CreateQuoteRequest` (the REST bridge,
`osago_client`), at once on the instance's own port, with the certificate the instance calls its
gateways with, and takes the longer wait. `ProbeAnswer`, the server's first interceptor,
recognises a probe by a secret made at start-up (`secrets.token_urlsafe`) and answers it at once
with an empty stream or an empty message: no span, no authentication, no session, nothing logged.
Any other call, one with a wrong secret included, goes on as if the interceptor were not there.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from aggregator.shedding import ProbeUnreached
from osago_common.grpc_options import KEEPALIVE
from osago_common.tls import TlsFiles

log = logging.getLogger(__name__)

PROBE_KEY = "x-osago-queue-probe"
# A probe not answered within this is given up (its wait still counts: at least this long).
PROBE_TIMEOUT_S = 10.0
# Answers that mean the probe did not reach the door (ProbeUnreached): it measures nothing then.
_UNREACHED = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNIMPLEMENTED,
)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"


async def _no_stream(_request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


async def _no_message(_request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return b""


class ProbeAnswer(grpc.aio.ServerInterceptor):
    """Answers this instance's own probes of `stream_method` (with an empty stream) and of
    `unary_method` (with an empty message), and nothing else."""

    def __init__(self, stream_method: str, unary_method: str, secret: str) -> None:
        self._secret = secret.encode()
        self._handlers: dict[str, Handler] = {
            stream_method: grpc.unary_stream_rpc_method_handler(_no_stream),
            unary_method: grpc.unary_unary_rpc_method_handler(_no_message),
        }

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = self._handlers.get(handler_call_details.method)
        if handler is not None:
            for key, value in handler_call_details.invocation_metadata or ():
                if key == PROBE_KEY:
                    given = value.encode() if isinstance(value, str) else bytes(value)
                    if hmac.compare_digest(given, self._secret):
                        return handler
        return await continuation(handler_call_details)


def own_target(bind: str, port: int) -> str:
    """Where this instance reaches its own port: the bound host, or loopback when it binds every
    address (IPv6's when it binds IPv6's every address, which an IPv6-only host has alone)."""
    host = bind.rsplit(":", 1)[0].strip("[]")
    if host in ("", "0.0.0.0", "*"):  # noqa: S104 - read from the bind address, not bound
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class DoorProbe:
    """A call of `stream_method` and one of `unary_method` at once to this instance's own port,
    answered by its `ProbeAnswer`; returns when both were answered."""

    def __init__(self, target: str, stream_method: str, unary_method: str, secret: str, tls: TlsFiles | None) -> None:
        if tls is None:
            self._channel = grpc.aio.insecure_channel(target, options=KEEPALIVE)
        else:
            # The name this instance's own certificate is issued for: OSAGO_TLS_SERVER_NAME is the
            # name expected of the gateways it calls, not of itself.
            name = tls.own_name()
            options = (*KEEPALIVE, ("grpc.ssl_target_name_override", name)) if name else KEEPALIVE
            self._channel = grpc.aio.secure_channel(target, tls.channel_credentials(), options=options)
        self._stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = self._channel.unary_stream(stream_method)
        self._unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(unary_method)
        self._metadata = ((PROBE_KEY, secret),)
        self._warned = False

    async def __call__(self) -> None:
        try:
            await asyncio.gather(self._streamed(), self._unary(b"", timeout=PROBE_TIMEOUT_S, metadata=self._metadata))
        except grpc.aio.AioRpcError as error:
            if error.code() not in _UNREACHED:
                raise
            if not self._warned:
                self._warned = True
                log.warning(
                    "the queue probe cannot reach this instance's own port (%s): "
                    "the calls' wait at the door is not watched",
                    error.code().name,
                )
            raise ProbeUnreached(error.code().name) from None
        self._warned = False  # reached again: a later failure is worth a line again

    async def _streamed(self) -> None:
        async for _ in self._stream(b"", timeout=PROBE_TIMEOUT_S, metadata=self._metadata):
            pass

    async def close(self) -> None:
        await self._channel.close()
