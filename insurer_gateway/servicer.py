"""The thin gRPC face of the gateway: protobuf in, updates of the offer flow out, errors mapped
at this one boundary. Personal data (names, licences, VIN) never reaches logs or statuses."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import traceback
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias, TypeGuard

import grpc
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from osago.v1 import application_pb2, gateway_service_pb2, gateway_service_pb2_grpc, quote_pb2

from insurer_gateway.dialects import InvalidApplication, Offer
from insurer_gateway.exchange import HttpCall
from insurer_gateway.offers import Accepted, Failed, OfferFlow, Pending, Update
from insurer_gateway.outcomes import MESSAGES, Reason
from insurer_gateway.settings import GatewaySettings
from osago_common import tracing
from osago_common.batching import BATCH_HEADER, says_batches, take_more
from osago_common.breaker import BreakerState
from osago_common.clock import Clock, set_timestamp
from osago_common.grpc_errors import abort_invalid

SERVICE_NAME = "osago.v1.InsurerGatewayService"
MAX_REQUEST_ID_CHARS = 128

log = logging.getLogger(__name__)

OfferRequest = gateway_service_pb2.RequestOfferRequest
OfferResponse = gateway_service_pb2.RequestOfferResponse
OffersRequest = gateway_service_pb2.OffersRequest
OffersResponse = gateway_service_pb2.OffersResponse
StatusRequest = gateway_service_pb2.GetGatewayStatusRequest
StatusResponse = gateway_service_pb2.GetGatewayStatusResponse
# Each RPC's context, as the generated servicer base (mypy-protobuf) declares it.
OfferContext: TypeAlias = grpc.aio.ServicerContext[OfferRequest, AsyncIterator[OfferResponse]]
OffersContext: TypeAlias = grpc.aio.ServicerContext[AsyncIterator[OffersRequest], AsyncIterator[OffersResponse]]
StatusContext: TypeAlias = grpc.aio.ServicerContext[StatusRequest, Awaitable[StatusResponse]]

DRAINING_MESSAGE = "the insurer gateway is restarting; ask another replica"
UNREADABLE_MESSAGE = "a message of the stream is not an osago.v1.OffersRequest (protobuf wire format)"
# What an Offers ask gets where RequestOffer would end INVALID_ARGUMENT or UNKNOWN: the stream
# carries other asks, so one ask's failure is a message, not the stream's status.
INVALID_ASK_MESSAGE = "the insurer's gateway refused the request"
FAILED_ASK_MESSAGE = "the insurer's service failed"


class InvalidAsk(Exception):
    """The request id or application cannot be sent to the insurer: (field, problem) pairs."""

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        super().__init__("invalid ask")
        self.violations = violations


class AskFailed(Exception):
    """The flow of one ask failed unexpectedly (logged, with its trace id, where it happened)."""


# An Offers stream's outgoing queue: the next response, or `_DRAIN` (end the stream with
# UNAVAILABLE), `_UNREADABLE` (INVALID_ARGUMENT), or `_END` (the caller closed its side and every
# ask has finished).
_DRAIN = object()
_UNREADABLE = object()
_END = object()


def _forget(asks: dict[int, asyncio.Task[None]], call_id: int, _: object) -> None:
    asks.pop(call_id, None)


def _is_update(item: object) -> TypeGuard[OffersResponse]:
    """An update may ride in a batch; the stream's ends may not."""
    return isinstance(item, OffersResponse)


def ask_trace_context(ask: gateway_service_pb2.OffersRequest.Ask) -> Context:
    """The caller's trace context of one Offers ask (W3C fields of the message): the gateway's
    spans for the ask are children of the aggregator's span for that insurer."""
    carrier = {"traceparent": ask.traceparent}
    if ask.tracestate:
        carrier["tracestate"] = ask.tracestate
    return propagate.extract(carrier) if ask.traceparent else Context()


# Why no offer, as the contract says it. Written out rather than built from the names, so that
# renaming either side fails here and not at run time; the contract's UNSPECIFIED, INTERNAL and
# CANCELLED are never the insurer's doing and have no Reason.
FAILURE_REASONS: dict[Reason, quote_pb2.FailureReason.ValueType] = {
    Reason.TIMEOUT: quote_pb2.FAILURE_REASON_TIMEOUT,
    Reason.DEADLINE: quote_pb2.FAILURE_REASON_DEADLINE,
    Reason.UNAVAILABLE: quote_pb2.FAILURE_REASON_UNAVAILABLE,
    Reason.DECLINED: quote_pb2.FAILURE_REASON_DECLINED,
    Reason.RATE_LIMITED: quote_pb2.FAILURE_REASON_RATE_LIMITED,
    Reason.CIRCUIT_OPEN: quote_pb2.FAILURE_REASON_CIRCUIT_OPEN,
    Reason.BAD_RESPONSE: quote_pb2.FAILURE_REASON_BAD_RESPONSE,
    Reason.INSURER_ERROR: quote_pb2.FAILURE_REASON_INSURER_ERROR,
}

BREAKER_STATES = {
    BreakerState.CLOSED: gateway_service_pb2.BREAKER_STATE_CLOSED,
    BreakerState.OPEN: gateway_service_pb2.BREAKER_STATE_OPEN,
    BreakerState.HALF_OPEN: gateway_service_pb2.BREAKER_STATE_HALF_OPEN,
}


@dataclass
class GatewayStats:
    """Counters reported by GetGatewayStatus."""

    in_flight: int = 0
    requests_total: int = 0
    offers_total: int = 0
    failures_total: int = 0


class GatewayServicer(gateway_service_pb2_grpc.InsurerGatewayServiceServicer):
    """osago.v1.InsurerGatewayService."""

    def __init__(self, settings: GatewaySettings, flow: OfferFlow, clock: Clock, started_at: datetime) -> None:
        self._settings = settings
        self._flow = flow
        self._clock = clock
        self._started_at = started_at
        self.stats = GatewayStats()
        # The RequestOffer calls in flight, ended with UNAVAILABLE when the gateway drains so
        # that the aggregator asks another replica (which resumes the insurer application).
        self._calls: set[asyncio.Task[Any]] = set()
        # The Offers streams open, by their outgoing queue: a drain ends each with UNAVAILABLE.
        self._streams: set[asyncio.Queue[object]] = set()
        self._draining = False

    def drain(self) -> int:
        """Ends every RequestOffer in flight and every Offers stream with UNAVAILABLE (new ones
        are refused the same way); returns how many calls were ended."""
        self._draining = True
        calls = list(self._calls)
        for task in calls:
            task.cancel()
        for out in self._streams:
            out.put_nowait(_DRAIN)
        return len(calls) + len(self._streams)

    async def RequestOffer(self, request: OfferRequest, context: OfferContext) -> AsyncIterator[OfferResponse]:
        """Streams accepted → pending… → offer | failed. A cancelled call stops at once: the
        cancellation reaches the sleep or HTTP call in progress, which closes its connection.

        Traced as a `RequestOffer` server span continuing the caller's trace (W3C trace context
        in the call's metadata), parent of the `insurer_http` span of every HTTP attempt."""
        handler = asyncio.current_task()
        if handler is not None:
            self._calls.add(handler)
        try:
            if self._draining:
                raise asyncio.CancelledError
            caller = tracing.extract_context(context.invocation_metadata())
            remaining = context.time_remaining()
            updates = self._updates(
                request.request_id,
                request.application if request.HasField("application") else None,
                None if remaining is None else float(remaining),
                caller,
            )
            async with contextlib.aclosing(updates):
                async for update in updates:
                    yield update
        except asyncio.CancelledError:
            if not self._draining:
                raise
            await context.abort(grpc.StatusCode.UNAVAILABLE, DRAINING_MESSAGE)
        except InvalidAsk as invalid:
            await abort_invalid(context, invalid.violations)
        except AskFailed:
            await context.abort(grpc.StatusCode.UNKNOWN, "internal error")
        finally:
            if handler is not None:
                self._calls.discard(handler)

    async def Offers(
        self, request_iterator: AsyncIterator[OffersRequest], context: OffersContext
    ) -> AsyncIterator[OffersResponse]:
        """Many asks over one stream, each run as its own task exactly as a RequestOffer call
        would run (`_updates`), their updates written back through this one generator tagged
        with their call_id. A Cancel stops its ask; the end of the stream stops them all; a
        drain ends the stream with UNAVAILABLE (the caller asks again elsewhere)."""
        if self._draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, DRAINING_MESSAGE)
        # Headers at once: the call is established (and committed, so gRPC never replays the
        # asks sent on it) before the first answer, which may take a minute; they say this
        # gateway reads batched asks (osago_common.batching).
        batching = says_batches(context.invocation_metadata())
        await context.send_initial_metadata(((BATCH_HEADER, "1"),))
        out: asyncio.Queue[object] = asyncio.Queue()
        held: deque[object] = deque()
        asks: dict[int, asyncio.Task[None]] = {}
        self._streams.add(out)
        reader = asyncio.create_task(self._read_asks(request_iterator, asks, out))
        try:
            while True:
                item = held.popleft() if held else await out.get()
                if item is _DRAIN:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, DRAINING_MESSAGE)
                if item is _UNREADABLE:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, "a message of the stream is not an OffersRequest"
                    )
                if item is _END:
                    return
                assert isinstance(item, OffersResponse)
                if batching:  # every update waiting now goes in this one message
                    more = take_more(out, held, item, _is_update, OffersResponse.ByteSize)
                    if more:
                        item.more.extend(more)
                yield item
        finally:
            self._streams.discard(out)
            reader.cancel()
            running = list(asks.values())
            for task in running:
                task.cancel()
            await asyncio.gather(reader, *running, return_exceptions=True)

    async def _read_asks(
        self,
        requests: AsyncIterator[OffersRequest],
        asks: dict[int, asyncio.Task[None]],
        out: asyncio.Queue[object],
    ) -> None:
        """Starts each ask and stops each cancelled one until the caller closes its side, then
        lets the running asks finish and ends the stream. A stream that cannot be read (a
        message that is not an OffersRequest) is ended with INVALID_ARGUMENT."""
        try:
            await self._start_asks(requests, asks, out)
        except grpc.aio.AbortError:  # this side ended the stream (a drain): nothing more to read
            return
        except Exception as exc:  # noqa: BLE001 - gRPC's deserialising raises whatever protobuf raised
            log.warning("Offers stream unreadable: error=%s", type(exc).__name__)
            out.put_nowait(_UNREADABLE)
            return
        await asyncio.gather(*asks.values(), return_exceptions=True)
        out.put_nowait(_END)

    async def _start_asks(
        self,
        requests: AsyncIterator[OffersRequest],
        asks: dict[int, asyncio.Task[None]],
        out: asyncio.Queue[object],
    ) -> None:
        async for message in requests:
            self._take(message, asks, out)
            for more in message.more:  # a batch: each as if it had come alone, in order
                self._take(more, asks, out)

    def _take(self, message: OffersRequest, asks: dict[int, asyncio.Task[None]], out: asyncio.Queue[object]) -> None:
        kind = message.WhichOneof("kind")
        if kind == "ask":
            call_id = message.ask.call_id
            if call_id in asks:
                return
            task = asyncio.create_task(self._run_ask(message.ask, out))
            asks[call_id] = task
            task.add_done_callback(functools.partial(_forget, asks, call_id))
        elif kind == "cancel":
            running = asks.get(message.cancel.call_id)
            if running is not None:
                running.cancel()

    async def _run_ask(self, ask: gateway_service_pb2.OffersRequest.Ask, out: asyncio.Queue[object]) -> None:
        """One ask of an Offers stream: its updates onto the stream's queue, ending with an
        offer or a failure. Bounded by the ask's own timeout even if the flow overran it."""
        call_id = ask.call_id
        remaining = ask.timeout.ToTimedelta().total_seconds() if ask.HasField("timeout") else 0.0
        budget = remaining if remaining > 0 else None
        last: str | None = None
        try:
            async with asyncio.timeout(None if budget is None else budget + self._settings.deadline_margin_s):
                application = ask.application if ask.HasField("application") else None
                # No heartbeats: the stream has its own keepalive.
                updates = self._updates(ask.request_id, application, budget, ask_trace_context(ask), heartbeats=False)
                async with contextlib.aclosing(updates):
                    async for update in updates:
                        last = update.WhichOneof("update")
                        out.put_nowait(OffersResponse(call_id=call_id, update=update))
            return
        except TimeoutError:
            reason, message = quote_pb2.FAILURE_REASON_DEADLINE, MESSAGES[Reason.DEADLINE]
        except InvalidAsk as invalid:
            # The request id itself may be what is wrong (anything a caller sent): not logged.
            log.warning("ask refused: call_id=%s fields=%s", call_id, ",".join(f for f, _ in invalid.violations))
            reason, message = quote_pb2.FAILURE_REASON_INTERNAL, INVALID_ASK_MESSAGE
        except AskFailed:
            reason, message = quote_pb2.FAILURE_REASON_INTERNAL, FAILED_ASK_MESSAGE
        if last not in ("offer", "failed"):
            failure = gateway_service_pb2.OfferFailed(reason=reason, message=message)
            out.put_nowait(OffersResponse(call_id=call_id, update=OfferResponse(failed=failure)))

    async def _updates(
        self,
        request_id: str,
        application: application_pb2.Application | None,
        remaining_s: float | None,
        caller: Context,
        *,
        heartbeats: bool = True,
    ) -> AsyncGenerator[OfferResponse, None]:
        """One application's flow, shared by RequestOffer and every Offers ask: validated
        (InvalidAsk), traced as a `RequestOffer` server span child of `caller`, counted, logged;
        `remaining_s` is the caller's time left (None: the gateway's longest call). A `pending`
        after each poll that found nothing (a heartbeat), or, without `heartbeats`, only the
        first. An unexpected exception is logged and raised as AskFailed."""
        stats = self.stats
        stats.requests_total += 1
        stats.in_flight += 1
        got_offer = False
        span = tracing.tracer(__name__).start_span(
            "RequestOffer",
            context=caller,
            kind=trace.SpanKind.SERVER,
            attributes={tracing.INSURER_ID: self._settings.insurer_id},
        )
        outcome = "cancelled"
        try:
            create = self._prepare(request_id, application)
            span.set_attribute(tracing.REQUEST_ID, request_id)  # only once it is valid
            deadline = self._deadline(remaining_s)
            # The span is current while the flow runs (so HTTP attempts are its children), but
            # never across this generator's yields.
            in_span = trace.set_span_in_context(span, caller)
            pending = False
            async with contextlib.aclosing(tracing.stream_within(in_span, self._flow.run(create, deadline))) as updates:
                async for update in updates:
                    if isinstance(update, Pending):
                        # A repeat is dropped before any work: vague-hint insurers are polled
                        # five to ten times an application.
                        if pending and not heartbeats:
                            continue
                        pending = True
                    else:
                        pending = False
                        if isinstance(update, Offer | Failed):
                            got_offer = got_offer or isinstance(update, Offer)
                            outcome = "offer" if isinstance(update, Offer) else update.reason.name.lower()
                            with tracing.attached(in_span):  # the log line carries the ask's trace id
                                self._log(request_id, update)
                    yield self._to_proto(update)
        except asyncio.CancelledError:
            if self._draining:
                outcome = "drained"
            raise
        except InvalidAsk:
            outcome = "invalid_argument"
            raise
        except Exception as exc:  # noqa: BLE001 - the flow's last boundary: logged (type and stack), then AskFailed
            outcome = "internal_error"
            span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
            trace_id = tracing.trace_id(span) or uuid.uuid4().hex
            # The exception's text may quote application data: log its type and stack only.
            log.error(
                "RequestOffer failed: trace_id=%s error=%s\n%s",
                trace_id,
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
                extra={"request_id": request_id, "insurer_id": self._settings.insurer_id},
            )
            raise AskFailed from None
        finally:
            span.set_attribute(tracing.OUTCOME, outcome)
            span.end()
            stats.in_flight -= 1
            if got_offer:
                stats.offers_total += 1
            else:
                stats.failures_total += 1

    async def GetGatewayStatus(self, request: StatusRequest, context: StatusContext) -> StatusResponse:
        s, stats, guard = self._settings, self.stats, self._flow.guard
        response = StatusResponse(
            insurer=quote_pb2.InsurerRef(insurer_id=s.insurer_id, insurer_name=s.insurer_name),
            dialect=s.dialect,
            base_url=s.base_url,
            breaker_state=BREAKER_STATES[guard.breaker_state],
            in_flight=stats.in_flight,
            requests_total=stats.requests_total,
            offers_total=stats.offers_total,
            failures_total=stats.failures_total,
            retries_total=guard.retries_total,
            rejected_by_breaker_total=guard.breaker.rejected_total,
            breaker_opened_total=guard.breaker.opened_total,
        )
        response.started_at.FromDatetime(self._started_at)
        return response

    def _prepare(self, request_id: str, application: application_pb2.Application | None) -> HttpCall:
        """The insurer's create call; raises InvalidAsk with field violations."""
        violations: list[tuple[str, str]] = []
        if not request_id:
            violations.append(("request_id", "required"))
        elif len(request_id) > MAX_REQUEST_ID_CHARS or not all("!" <= c <= "~" for c in request_id):
            violations.append(("request_id", f"at most {MAX_REQUEST_ID_CHARS} printable ASCII characters"))
        if application is None:
            violations.append(("application", "required"))
        if application is not None and not violations:
            try:
                return self._flow.prepare(request_id, application)
            except InvalidApplication as exc:
                violations.append((f"application.{exc.field}", exc.message))
        raise InvalidAsk(violations)

    def _deadline(self, remaining: float | None) -> float:
        """The call's deadline on the clock's scale, a little early so the last message arrives."""
        s = self._settings
        budget = s.max_call_s if remaining is None else min(remaining, s.max_call_s)
        return self._clock.monotonic() + budget - s.deadline_margin_s

    def _to_proto(self, update: Update) -> OfferResponse:
        if isinstance(update, Accepted):
            return OfferResponse(
                accepted=gateway_service_pb2.OfferAccepted(insurer_application_id=update.application_id)
            )
        if isinstance(update, Pending):
            return OfferResponse(pending=gateway_service_pb2.OfferPending(polls=update.polls))
        if isinstance(update, Failed):
            failure = gateway_service_pb2.OfferFailed(reason=FAILURE_REASONS[update.reason], message=update.message)
            if update.retry_after_s:
                failure.retry_after.FromMilliseconds(int(update.retry_after_s * 1000))
            return OfferResponse(failed=failure)
        return OfferResponse(offer=self._quote(update))

    def _quote(self, offer: Offer) -> quote_pb2.Quote:
        b = offer.breakdown
        quote = quote_pb2.Quote(
            insurer_id=self._settings.insurer_id,
            insurer_name=self._settings.insurer_name,
            offer_id=offer.offer_id,
            premium_kopecks=offer.premium_kopecks,
            currency=offer.currency,
            breakdown=quote_pb2.CoefficientBreakdown(
                base_rate_kopecks=b.base_rate_kopecks,
                kt=float(b.kt),
                kbm=float(b.kbm),
                kvs=float(b.kvs),
                ko=float(b.ko),
                km=float(b.km),
                ks=float(b.ks),
                kn=float(b.kn),
                kp=float(b.kp),
            ),
            purchase_url=offer.purchase_url,
        )
        set_timestamp(quote.valid_until, offer.valid_until)
        if offer.obtained_at is not None:
            set_timestamp(quote.obtained_at, offer.obtained_at)
        return quote

    def _log(self, request_id: str, update: Update) -> None:
        ids = {"request_id": request_id, "insurer_id": self._settings.insurer_id}
        if isinstance(update, Failed):
            log.info("no offer: reason=%s detail=%s", update.reason.name, update.detail, extra=ids)
        elif isinstance(update, Offer):
            log.debug("offer: offer_id=%s", update.offer_id, extra=ids)
