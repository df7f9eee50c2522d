"""The aggregator's side of the insurer gateways: one gRPC channel per gateway, asks multiplexed over
a few Offers streams on it (or one RequestOffer call per ask)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import grpc
from opentelemetry import propagate, trace
from osago.v1 import application_pb2, gateway_service_pb2, gateway_service_pb2_grpc, quote_pb2

from aggregator.offer_streams import OffersPool
from aggregator.settings import GatewayEndpoint
from osago_common import tracing
from osago_common.breaker import BreakerConfig, CircuitBreaker
from osago_common.clock import SYSTEM_CLOCK, Clock
from osago_common.grpc_options import CallRetry, balanced, channel_options
from osago_common.tls import TlsFiles

Reason = quote_pb2.FailureReason
_CIRCUIT_OPEN = quote_pb2.FAILURE_REASON_CIRCUIT_OPEN  # the module's constant: read for every update

SERVICE = "osago.v1.InsurerGatewayService"

# RequestOffer is idempotent by request id (a repeated call resumes the insurer application),
# so gRPC may retry it while no response has started. Backoffs stay short: a session's minute is
# shared by every insurer, and a gateway that stays down is better reported than waited for.
RETRY = CallRetry(max_attempts=3, initial_backoff_s=0.05, max_backoff_s=0.5, max_tokens=20, token_ratio=0.2)

# A gateway that is down must be reported at once: reconnect attempts stay short.
_RECONNECT = (("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 2_000))
CHANNEL_OPTIONS = channel_options(SERVICE, RETRY, *_RECONNECT)
# Several replicas of a gateway: calls spread over those that report SERVING.
SPREAD_CHANNEL_OPTIONS = channel_options(SERVICE, RETRY, *_RECONNECT, spread=True)

# A RequestOffer stream that breaks with UNAVAILABLE (its replica drains or died) is asked again,
# of another replica, up to this many calls in all, while at least RESUME_MIN_S remain.
STREAM_ATTEMPTS = 4
RESUME_MIN_S = 0.2
RESUME_BACKOFF_S = 0.05

# Offers streams per gateway, and asks per stream before another is opened (OSAGO_GATEWAY_STREAMS,
# OSAGO_GATEWAY_STREAM_ASKS): enough streams that round-robin reaches every replica.
DEFAULT_STREAMS = 4
DEFAULT_STREAM_ASKS = 250
# A gateway that answered Offers with UNIMPLEMENTED is asked with RequestOffer calls this long.
UNIMPLEMENTED_RETRY_S = 60.0

_FAILURES: dict[grpc.StatusCode, tuple[quote_pb2.FailureReason.ValueType, str]] = {
    grpc.StatusCode.UNAVAILABLE: (Reason.FAILURE_REASON_UNAVAILABLE, "the insurer's service is unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (Reason.FAILURE_REASON_DEADLINE, "no offer within the time limit"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (Reason.FAILURE_REASON_RATE_LIMITED, "the insurer's service is overloaded"),
    grpc.StatusCode.CANCELLED: (Reason.FAILURE_REASON_CANCELLED, "the request was cancelled"),
}


CIRCUIT_OPEN_MESSAGE = "The insurer is failing right now; it is not being asked for a while."

# How long after an ask's own time limit its backstop ends it (see `_streamed`).
ASK_BACKSTOP_GRACE_S = 0.5


def failed(reason: quote_pb2.FailureReason.ValueType, message: str) -> gateway_service_pb2.RequestOfferResponse:
    return gateway_service_pb2.RequestOfferResponse(
        failed=gateway_service_pb2.OfferFailed(reason=reason, message=message)
    )


# Transport failures that say the gateway itself is unwell (insurer failures come in-band).
_GATEWAY_FAILURES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED}
)


class _Ended(Exception):
    """One attempt at an ask ended without its answer, with this status."""

    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)
        self.code = code


def trace_fields() -> dict[str, str]:
    """The current span's W3C trace context (`traceparent`, `tracestate`) for an Offers ask,
    so the gateway's spans of the ask are children of this insurer's span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class GrpcGateways:
    """An OfferSource over the gateways' gRPC services, with a circuit breaker per gateway so a
    gateway that keeps failing is reported unavailable at once instead of being called.

    With `streams` > 0 each ask is a message on one of a few long-lived `Offers` streams per
    gateway (aggregator.offer_streams); with 0, or toward a gateway that does not know `Offers`
    (UNIMPLEMENTED: an older version, mid-deploy), one `RequestOffer` call per ask."""

    def __init__(
        self,
        endpoints: tuple[GatewayEndpoint, ...],
        breaker: BreakerConfig | None = None,
        clock: Clock = SYSTEM_CLOCK,
        *,
        tls: TlsFiles | None = None,
        streams: int = DEFAULT_STREAMS,
        stream_asks: int = DEFAULT_STREAM_ASKS,
    ) -> None:
        """With `tls`, every gateway is called over mTLS with this service's certificate."""
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, gateway_service_pb2_grpc.InsurerGatewayServiceStub] = {}
        self._pools: dict[str, OffersPool] = {}
        # Until when each gateway is asked with RequestOffer calls, having answered Offers
        # with UNIMPLEMENTED.
        self._calls_until: dict[str, float] = {}
        self.breakers = {e.insurer_id: CircuitBreaker(breaker or BreakerConfig(), clock) for e in endpoints}
        # Until when each gateway said it refuses calls to its insurer (its breaker is open): the
        # aggregator answers for it at once meanwhile, saving a call per session.
        self._refusing_until: dict[str, float] = {}
        self._clock = clock
        for endpoint in endpoints:
            options = SPREAD_CHANNEL_OPTIONS if balanced(endpoint.target) else CHANNEL_OPTIONS
            if tls is None:
                channel = grpc.aio.insecure_channel(endpoint.target, options=options)
            else:
                options = (*options, *tls.channel_options())
                channel = grpc.aio.secure_channel(endpoint.target, tls.channel_credentials(), options=options)
            self._channels[endpoint.insurer_id] = channel
            stub = gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel)
            self._stubs[endpoint.insurer_id] = stub
            if streams > 0:
                self._pools[endpoint.insurer_id] = OffersPool(stub, streams, stream_asks, clock=clock)

    def pool(self, insurer_id: str) -> OffersPool | None:
        """The Offers streams to this insurer's gateway (None: asked with RequestOffer calls)."""
        return self._pools.get(insurer_id)

    async def request_offer(
        self, insurer_id: str, request_id: str, application: application_pb2.Application, timeout_s: float
    ) -> AsyncGenerator[gateway_service_pb2.RequestOfferResponse, None]:
        if self._clock.monotonic() < self._refusing_until.get(insurer_id, 0.0):
            trace.get_current_span().add_event("osago.gateway_refusing")
            yield failed(Reason.FAILURE_REASON_CIRCUIT_OPEN, CIRCUIT_OPEN_MESSAGE)
            return
        permit = self.breakers[insurer_id].try_acquire()
        if permit is None:
            trace.get_current_span().add_event("osago.breaker_rejected")
            yield failed(Reason.FAILURE_REASON_UNAVAILABLE, "the insurer's service is unavailable right now")
            return
        deadline = self._clock.monotonic() + timeout_s
        answered = False
        attempt = 0
        try:
            while True:
                attempt += 1
                try:
                    async with contextlib.aclosing(
                        self._attempt(insurer_id, request_id, application, deadline)
                    ) as updates:
                        async for update in updates:
                            if not answered:
                                answered = True
                                # The gateway answers: it is healthy. A streaming call's duration
                                # says nothing about the gateway (insurers take their time): none
                                # is slow.
                                permit.success(0.0)
                            if update.failed.reason == _CIRCUIT_OPEN and update.failed.HasField("retry_after"):
                                pause = update.failed.retry_after.ToTimedelta().total_seconds()
                                self._refusing_until[insurer_id] = self._clock.monotonic() + pause
                            yield update
                    return
                except _Ended as ended:
                    code = ended.code
                remaining = deadline - self._clock.monotonic()
                if (
                    code == grpc.StatusCode.UNIMPLEMENTED
                    and insurer_id in self._pools
                    and not self._by_calls(insurer_id)
                ):
                    # A gateway without Offers (an older version): RequestOffer calls for a while.
                    self._calls_until[insurer_id] = self._clock.monotonic() + UNIMPLEMENTED_RETRY_S
                    attempt -= 1
                    continue
                if code == grpc.StatusCode.UNAVAILABLE and attempt < STREAM_ATTEMPTS and remaining > RESUME_MIN_S:
                    # The replica went away mid-ask (it drains, or died): ask another one under
                    # the same request id, which resumes the insurer application.
                    trace.get_current_span().add_event("osago.gateway_call_resumed", {tracing.ATTEMPT: attempt + 1})
                    await self._clock.sleep(RESUME_BACKOFF_S * attempt)
                    continue
                # A gateway that never said a word before the deadline is as unwell as a refused one.
                silent_timeout = code == grpc.StatusCode.DEADLINE_EXCEEDED and not answered
                if code in _GATEWAY_FAILURES or silent_timeout:
                    permit.failure(0.0)
                reason, message = _FAILURES.get(code, (Reason.FAILURE_REASON_INTERNAL, "the insurer's service failed"))
                yield failed(reason, message)
                return
        finally:
            permit.release()

    def _by_calls(self, insurer_id: str) -> bool:
        return self._clock.monotonic() < self._calls_until.get(insurer_id, 0.0)

    def _attempt(
        self, insurer_id: str, request_id: str, application: application_pb2.Application, deadline: float
    ) -> AsyncGenerator[gateway_service_pb2.RequestOfferResponse, None]:
        """One try at an ask: its updates until the answer, or _Ended with the status that
        stopped it first."""
        pool = self._pools.get(insurer_id)
        if pool is not None and not self._by_calls(insurer_id):
            return self._streamed(pool, request_id, application, deadline)
        return self._called(insurer_id, request_id, application, deadline)

    async def _called(
        self, insurer_id: str, request_id: str, application: application_pb2.Application, deadline: float
    ) -> AsyncGenerator[gateway_service_pb2.RequestOfferResponse, None]:
        """The ask as one RequestOffer call, the call's deadline the ask's."""
        request = gateway_service_pb2.RequestOfferRequest(request_id=request_id, application=application)
        call = self._stubs[insurer_id].RequestOffer(
            request,
            timeout=max(deadline - self._clock.monotonic(), 0.01),
            # The trace context of the caller's span (the session's `request_offer`).
            metadata=tracing.inject_metadata(),
        )
        try:
            async for update in call:
                yield update
        except grpc.aio.AioRpcError as error:
            raise _Ended(error.code()) from None
        finally:
            call.cancel()

    async def _streamed(
        self, pool: OffersPool, request_id: str, application: application_pb2.Application, deadline: float
    ) -> AsyncGenerator[gateway_service_pb2.RequestOfferResponse, None]:
        """The ask as a message on one of the gateway's Offers streams; its time is bounded here
        too (DEADLINE_EXCEEDED), in case the gateway's answer does not come."""
        remaining = max(deadline - self._clock.monotonic(), 0.01)
        ask = pool.ask(request_id, application, remaining, trace_fields())
        # The gateway ends the ask itself at `remaining` (failed: DEADLINE); this backstop, for a
        # gateway that says nothing at all, fires a little later, so that the gateway's own answer
        # does not lose a race with it and count as a silent gateway against the breaker.
        timer = asyncio.get_running_loop().call_later(
            remaining + ASK_BACKSTOP_GRACE_S, ask.updates.put_nowait, grpc.StatusCode.DEADLINE_EXCEEDED
        )
        try:
            while True:
                item = await ask.updates.get()
                if isinstance(item, grpc.StatusCode):
                    raise _Ended(item)
                yield item
                if item.WhichOneof("update") in ("offer", "failed"):
                    return
        finally:
            timer.cancel()
            pool.release(ask)

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        for channel in self._channels.values():
            await channel.close()
