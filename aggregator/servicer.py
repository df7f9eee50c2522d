"""The gRPC face of the aggregator: protobuf in, domain calls, protobuf out. No logic here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import TypeAlias

import grpc
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import aggregator_service_pb2_grpc

from aggregator.access import AccessTokens
from aggregator.auth import customer_of
from aggregator.core import Aggregator, check_request_id
from aggregator.errors import abort_for, guarded, guarded_stream
from osago_common.grpc_guard import CALLER

# Each RPC's context, as the generated servicer base (mypy-protobuf) declares it.
GetQuotesContext: TypeAlias = grpc.aio.ServicerContext[pb.GetQuotesRequest, AsyncIterator[pb.GetQuotesResponse]]
CreateContext: TypeAlias = grpc.aio.ServicerContext[
    pb.CreateQuoteRequestRequest, Awaitable[pb.CreateQuoteRequestResponse]
]
GetContext: TypeAlias = grpc.aio.ServicerContext[pb.GetQuoteRequestRequest, Awaitable[pb.GetQuoteRequestResponse]]
StreamContext: TypeAlias = grpc.aio.ServicerContext[
    pb.StreamQuoteEventsRequest, AsyncIterator[pb.StreamQuoteEventsResponse]
]

# The final event must reach a GetQuotes caller before its own deadline does.
CALLER_DEADLINE_MARGIN_S = 0.5


def _time_limit(request: pb.GetQuotesRequest | pb.CreateQuoteRequestRequest) -> float | None:
    if not request.HasField("time_limit"):
        return None
    return float(request.time_limit.ToTimedelta().total_seconds())


class AggregatorServicer(aggregator_service_pb2_grpc.AggregatorServiceServicer):
    def __init__(self, aggregator: Aggregator, tokens: AccessTokens) -> None:
        self._aggregator = aggregator
        self._tokens = tokens

    def _authorize(self, request_id: str, token: str) -> None:
        """The caller may read `request_id` (osago access token); raises otherwise."""
        check_request_id(request_id)
        self._tokens.check(token, request_id, customer_of(CALLER.get()))

    async def GetQuotes(
        self, request: pb.GetQuotesRequest, context: GetQuotesContext
    ) -> AsyncIterator[pb.GetQuotesResponse]:
        limit = _time_limit(request)
        remaining = context.time_remaining()
        if remaining is not None:
            fits = max(remaining - CALLER_DEADLINE_MARGIN_S, 0.1)
            limit = fits if limit is None or limit <= 0 else min(limit, fits)
        application = request.application if request.HasField("application") else None
        caller = CALLER.get()
        customer = customer_of(caller)
        try:
            record, _ = await self._aggregator.create(
                application,
                request.idempotency_key,
                limit,
                fresh=request.fresh,
                customer_id=customer,
                limit_key=caller.limit_key,
            )
        except Exception as error:  # noqa: BLE001 - mapped to a status
            await abort_for(context, error)
        token = self._tokens.issue(record.request_id, customer)
        finished = False
        try:
            # aclosing: the event stream stops watching at once when the caller goes away.
            async with contextlib.aclosing(self._aggregator.events(record.request_id, 0)) as events:
                async for event in guarded_stream(context, events):
                    yield pb.GetQuotesResponse(event=event, access_token=token)
                    token = ""
                    finished = event.WhichOneof("payload") == "session_finished"
        finally:
            if not finished:
                self._aggregator.release(record.request_id)

    async def CreateQuoteRequest(
        self, request: pb.CreateQuoteRequestRequest, context: CreateContext
    ) -> pb.CreateQuoteRequestResponse:
        application = request.application if request.HasField("application") else None
        caller = CALLER.get()
        customer = customer_of(caller)
        record, _ = await guarded(
            context,
            self._aggregator.create(
                application,
                request.idempotency_key,
                _time_limit(request),
                fresh=request.fresh,
                customer_id=customer,
                limit_key=caller.limit_key,
            ),
        )
        snapshot = await guarded(context, self._aggregator.snapshot(record.request_id))
        snapshot.access_token = self._tokens.issue(record.request_id, customer)
        return pb.CreateQuoteRequestResponse(quote_request=snapshot)

    async def GetQuoteRequest(
        self, request: pb.GetQuoteRequestRequest, context: GetContext
    ) -> pb.GetQuoteRequestResponse:
        try:
            self._authorize(request.request_id, request.access_token)
        except Exception as error:  # noqa: BLE001 - mapped to a status
            await abort_for(context, error)
        snapshot = await guarded(context, self._aggregator.snapshot(request.request_id))
        return pb.GetQuoteRequestResponse(quote_request=snapshot)

    async def StreamQuoteEvents(
        self, request: pb.StreamQuoteEventsRequest, context: StreamContext
    ) -> AsyncIterator[pb.StreamQuoteEventsResponse]:
        try:
            self._authorize(request.request_id, request.access_token)
        except Exception as error:  # noqa: BLE001 - mapped to a status
            await abort_for(context, error)
        async with contextlib.aclosing(self._aggregator.events(request.request_id, request.after_seq)) as events:
            async for event in guarded_stream(context, events):
                yield pb.StreamQuoteEventsResponse(event=event)
