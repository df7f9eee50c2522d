"""The aggregator's side of the insurer gateways: one gRPC channel per gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from opentelemetry import trace
from osago.v1 import application_pb2, gateway_service_pb2, gateway_service_pb2_grpc, quote_pb2

from aggregator.settings import GatewayEndpoint
from osago_common import tracing
from osago_common.breaker import BreakerConfig, CircuitBreaker
from osago_common.clock import SYSTEM_CLOCK, Clock
from osago_common.grpc_options import CallRetry, balanced, channel_options
from osago_common.tls import TlsFiles

Reason = quote_pb2.FailureReason

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

_FAILURES: dict[grpc.StatusCode, tuple[quote_pb2.FailureReason.ValueType, str]] = {
    grpc.StatusCode.UNAVAILABLE: (Reason.FAILURE_REASON_UNAVAILABLE, "the insurer's service is unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (Reason.FAILURE_REASON_DEADLINE, "no offer within the time limit"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (Reason.FAILURE_REASON_RATE_LIMITED, "the insurer's service is overloaded"),
    grpc.StatusCode.CANCELLED: (Reason.FAILURE_REASON_CANCELLED, "the request was cancelled"),
}


CIRCUIT_OPEN_MESSAGE = "The insurer is failing right now; it is not being asked for a while."


def failed(reason: quote_pb2.FailureReason.ValueType, message: str) -> gateway_service_pb2.RequestOfferResponse:
    return gateway_service_pb2.RequestOfferResponse(
        failed=gateway_service_pb2.OfferFailed(reason=reason, message=message)
    )


# Transport failures that say the gateway itself is unwell (insurer failures come in-band).
_GATEWAY_FAILURES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED}
)


class GrpcGateways:
    """An OfferSource over the gateways' gRPC services, with a circuit breaker per gateway so a
    gateway that keeps failing is reported unavailable at once instead of being called."""

    def __init__(
        self,
        endpoints: tuple[GatewayEndpoint, ...],
        breaker: BreakerConfig | None = None,
        clock: Clock = SYSTEM_CLOCK,
        *,
        tls: TlsFiles | None = None,
    ) -> None:
        """With `tls`, every gateway is called over mTLS with this service's certificate."""
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, gateway_service_pb2_grpc.InsurerGatewayServiceStub] = {}
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
            self._stubs[endpoint.insurer_id] = gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel)

    async def request_offer(
        self, insurer_id: str, request_id: str, application: application_pb2.Application, timeout_s: float
    ) -> AsyncIterator[gateway_service_pb2.RequestOfferResponse]:
        if self._clock.monotonic() < self._refusing_until.get(insurer_id, 0.0):
            trace.get_current_span().add_event("osago.gateway_refusing")
            yield failed(Reason.FAILURE_REASON_CIRCUIT_OPEN, CIRCUIT_OPEN_MESSAGE)
            return
        permit = self.breakers[insurer_id].try_acquire()
        if permit is None:
            trace.get_current_span().add_event("osago.breaker_rejected")
            yield failed(Reason.FAILURE_REASON_UNAVAILABLE, "the insurer's service is unavailable right now")
            return
        request = gateway_service_pb2.RequestOfferRequest(request_id=request_id, application=application)
        deadline = self._clock.monotonic() + timeout_s
        answered = False
        attempt = 0
        try:
            while True:
                attempt += 1
                call = self._stubs[insurer_id].RequestOffer(
                    request,
                    timeout=max(deadline - self._clock.monotonic(), 0.01),
                    # The trace context of the caller's CLIENT span (the session's
                    # `request_offer`; see osago_common.tracing for why by hand).
                    metadata=tracing.inject_metadata(),
                )
                try:
                    async for update in call:
                        if not answered:
                            answered = True
                            # The gateway answers: it is healthy. A streaming call's duration says
                            # nothing about the gateway (insurers take their time): none is slow.
                            permit.success(0.0)
                        if update.failed.reason == Reason.FAILURE_REASON_CIRCUIT_OPEN and update.failed.HasField(
                            "retry_after"
                        ):
                            pause = update.failed.retry_after.ToTimedelta().total_seconds()
                            self._refusing_until[insurer_id] = self._clock.monotonic() + pause
                        yield update
                    return
                except grpc.aio.AioRpcError as error:
                    remaining = deadline - self._clock.monotonic()
                    if (
                        error.code() == grpc.StatusCode.UNAVAILABLE
                        and attempt < STREAM_ATTEMPTS
                        and remaining > RESUME_MIN_S
                    ):
                        # The replica went away mid-call (it drains, or died): ask another one
                        # under the same request id, which resumes the insurer application.
                        trace.get_current_span().add_event("osago.gateway_call_resumed", {tracing.ATTEMPT: attempt + 1})
                        await self._clock.sleep(RESUME_BACKOFF_S * attempt)
                        continue
                    # A gateway that never said a word before the deadline is as unwell as a refused one.
                    silent_timeout = error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and not answered
                    if error.code() in _GATEWAY_FAILURES or silent_timeout:
                        permit.failure(0.0)
                    reason, message = _FAILURES.get(
                        error.code(), (Reason.FAILURE_REASON_INTERNAL, "the insurer's service failed")
                    )
                    yield failed(reason, message)
                    return
                finally:
                    call.cancel()
        finally:
            permit.release()

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
