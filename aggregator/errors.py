"""Where domain errors become gRPC statuses: one mapping for every RPC."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import NoReturn, TypeVar

import grpc

from aggregator.access import AccessDenied
from aggregator.admission import RateLimited
from aggregator.core import InvalidRequest, NotFound, Unavailable
from aggregator.shedding import Busy
from osago_common.grpc_errors import abort_invalid
from osago_common.grpc_guard import resource_exhausted
from osago_common.tracing import current_trace_id

log = logging.getLogger(__name__)
T = TypeVar("T")
# Any RPC's request and response types: these helpers serve every method.
Req = TypeVar("Req")
Resp = TypeVar("Resp")


async def abort_for(context: grpc.aio.ServicerContext[Req, Resp], error: Exception) -> NoReturn:
    """Ends the call with the status that `error` stands for. Unexpected errors become UNKNOWN
    "internal error" (logged with a trace id the caller can quote: the active OpenTelemetry
    trace's, else a random one), never internal text."""
    if isinstance(error, InvalidRequest):
        await abort_invalid(context, ((v.field, v.description) for v in error.violations))
    if isinstance(error, AccessDenied):
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(error))
    if isinstance(error, RateLimited):
        await context.abort_with_status(resource_exhausted(str(error), error.retry_after_s))
    if isinstance(error, NotFound):
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such quote request")
    if isinstance(error, Unavailable):
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
    if isinstance(error, Busy):
        await context.abort_with_status(resource_exhausted(str(error), error.retry_after_s))
    trace_id = current_trace_id() or uuid.uuid4().hex[:16]
    log.error("internal error, trace %s", trace_id, exc_info=(type(error), error, error.__traceback__))
    await context.abort(grpc.StatusCode.UNKNOWN, f"internal error (trace {trace_id})")
    raise AssertionError("abort returned")  # abort always raises


async def guarded(context: grpc.aio.ServicerContext[Req, Resp], call: Awaitable[T]) -> T:
    try:
        return await call
    except Exception as error:  # noqa: BLE001 - the one boundary where errors change type
        await abort_for(context, error)


async def guarded_stream(context: grpc.aio.ServicerContext[Req, Resp], stream: AsyncIterator[T]) -> AsyncIterator[T]:
    try:
        async for item in stream:
            yield item
    except Exception as error:  # noqa: BLE001 - the one boundary where errors change type
        await abort_for(context, error)
