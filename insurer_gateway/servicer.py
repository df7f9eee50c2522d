"""The thin gRPC face of the gateway: protobuf in, updates of the offer flow out, errors mapped
at this one boundary. Personal data (names, licences, VIN) never reaches logs or statuses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import grpc
from opentelemetry import trace
from osago.v1 import gateway_service_pb2, gateway_service_pb2_grpc, quote_pb2

from insurer_gateway.dialects import InvalidApplication, Offer
from insurer_gateway.exchange import HttpCall
from insurer_gateway.offers import Accepted, Failed, OfferFlow, Pending, Update
from insurer_gateway.outcomes import Reason
from insurer_gateway.settings import GatewaySettings
from osago_common import tracing
from osago_common.breaker import BreakerState
from osago_common.clock import Clock
from osago_common.grpc_errors import abort_invalid

SERVICE_NAME = "osago.v1.InsurerGatewayService"
MAX_REQUEST_ID_CHARS = 128

log = logging.getLogger(__name__)

OfferRequest = gateway_service_pb2.RequestOfferRequest
OfferResponse = gateway_service_pb2.RequestOfferResponse
StatusRequest = gateway_service_pb2.GetGatewayStatusRequest
StatusResponse = gateway_service_pb2.GetGatewayStatusResponse
# Each RPC's context, as the generated servicer base (mypy-protobuf) declares it.
OfferContext: TypeAlias = grpc.aio.ServicerContext[OfferRequest, AsyncIterator[OfferResponse]]
StatusContext: TypeAlias = grpc.aio.ServicerContext[StatusRequest, Awaitable[StatusResponse]]

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
        self._draining = False

    def drain(self) -> int:
        """Ends every RequestOffer in flight with UNAVAILABLE (new ones are refused the same
        way); returns how many were ended."""
        self._draining = True
        calls = list(self._calls)
        for task in calls:
            task.cancel()
        return len(calls)

    async def RequestOffer(self, request: OfferRequest, context: OfferContext) -> AsyncIterator[OfferResponse]:
        """Streams accepted → pending… → offer | failed. A cancelled call stops at once: the
        cancellation reaches the sleep or HTTP call in progress, which closes its connection.

        Traced by the server's interceptor (osago_common.tracing.server_interceptors): its
        SERVER span continues the caller's trace, is current here (so every HTTP attempt's
        `insurer_http` span is its child) and is given the insurer, request id and outcome."""
        stats = self.stats
        stats.requests_total += 1
        stats.in_flight += 1
        got_offer = False
        span = trace.get_current_span()
        span.set_attribute(tracing.INSURER_ID, self._settings.insurer_id)
        outcome = "cancelled"
        handler = asyncio.current_task()
        if handler is not None:
            self._calls.add(handler)
        try:
            if self._draining:
                raise asyncio.CancelledError
            create = await self._prepare(request, context)
            span.set_attribute(tracing.REQUEST_ID, request.request_id)  # only once it is valid
            deadline = self._deadline(context)
            async with contextlib.aclosing(self._flow.run(create, deadline)) as updates:
                async for update in updates:
                    got_offer = got_offer or isinstance(update, Offer)
                    if isinstance(update, Offer):
                        outcome = "offer"
                    elif isinstance(update, Failed):
                        outcome = update.reason.name.lower()
                    self._log(request.request_id, update)
                    yield self._to_proto(update)
        except asyncio.CancelledError:
            if not self._draining:
                raise
            outcome = "drained"
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the insurer gateway is restarting; ask another replica")
        except grpc.aio.AbortError:
            if outcome != "drained":
                outcome = "invalid_argument"
            raise
        except Exception as exc:  # noqa: BLE001 - the RPC's last boundary: logged (type and stack), then UNKNOWN
            outcome = "internal_error"
            span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
            trace_id = tracing.trace_id(span) or uuid.uuid4().hex
            # The exception's text may quote application data: log its type and stack only.
            log.error(
                "RequestOffer failed: trace_id=%s error=%s\n%s",
                trace_id,
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
                extra={"request_id": request.request_id, "insurer_id": self._settings.insurer_id},
            )
            await context.abort(grpc.StatusCode.UNKNOWN, "internal error")
        finally:
            if handler is not None:
                self._calls.discard(handler)
            span.set_attribute(tracing.OUTCOME, outcome)
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

    async def _prepare(self, request: OfferRequest, context: OfferContext) -> HttpCall:
        """The insurer's create call, or INVALID_ARGUMENT with field violations."""
        violations: list[tuple[str, str]] = []
        request_id: str = request.request_id
        if not request_id:
            violations.append(("request_id", "required"))
        elif len(request_id) > MAX_REQUEST_ID_CHARS or not all("!" <= c <= "~" for c in request_id):
            violations.append(("request_id", f"at most {MAX_REQUEST_ID_CHARS} printable ASCII characters"))
        if not request.HasField("application"):
            violations.append(("application", "required"))
        if not violations:
            try:
                return self._flow.prepare(request_id, request.application)
            except InvalidApplication as exc:
                violations.append((f"application.{exc.field}", exc.message))
        await abort_invalid(context, violations)

    def _deadline(self, context: OfferContext) -> float:
        """The call's deadline on the clock's scale, a little early so the last message arrives."""
        s = self._settings
        remaining = context.time_remaining()
        budget = s.max_call_s if remaining is None else min(float(remaining), s.max_call_s)
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
        quote.valid_until.FromDatetime(offer.valid_until)
        if offer.obtained_at is not None:
            quote.obtained_at.FromDatetime(offer.obtained_at)
        return quote

    def _log(self, request_id: str, update: Update) -> None:
        ids = {"request_id": request_id, "insurer_id": self._settings.insurer_id}
        if isinstance(update, Failed):
            log.info("no offer: reason=%s detail=%s", update.reason.name, update.detail, extra=ids)
        elif isinstance(update, Offer):
            log.debug("offer: offer_id=%s", update.offer_id, extra=ids)
