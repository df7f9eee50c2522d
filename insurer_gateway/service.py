"""Running the gateway: one HTTP session toward the insurer, one Redis client for the shared quota
(when configured), one grpc.aio server with health and reflection, opened in `start` and closed
in `stop`. For an insurer that calls back, also the callback endpoint (its own HTTP port) and the
inbox that routes each callback to the replica holding its stream (through Redis when configured,
with a second client holding the subscription)."""

from __future__ import annotations

import contextlib
import sys

import redis.asyncio
from osago.v1 import gateway_service_pb2_grpc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from insurer_gateway.callback_flow import CallbackFlow
from insurer_gateway.callback_http import CallbackServer
from insurer_gateway.dialects import CALLBACK_DIALECTS, DIALECTS
from insurer_gateway.guard import InsurerGuard
from insurer_gateway.inbox import CallbackInbox, LocalInbox, RedisInbox
from insurer_gateway.metrics import GatewayMetrics
from insurer_gateway.offers import OfferFlow
from insurer_gateway.ratelimit import (
    FallbackRateLimiter,
    LocalRateLimiter,
    RateLimiter,
    RedisRateLimiter,
)
from insurer_gateway.servicer import SERVICE_NAME, GatewayServicer
from insurer_gateway.settings import GatewaySettings
from insurer_gateway.transport import AiohttpTransport, open_session
from osago_common.clock import SYSTEM_CLOCK, Clock
from osago_common.env import SettingsError
from osago_common.grpc_guard import CertificateAuth, Guard
from osago_common.grpc_server import ServiceServer
from osago_common.metrics import MetricsServer, serve_metrics
from osago_common.serving import until_signalled
from osago_common.tls import warn_if_insecure

# The Redis key of an insurer's quota, followed by the insurer id; every replica uses the same.
RATE_LIMIT_KEY_PREFIX = "osago:ratelimit:"


class GatewayService:
    """One insurer's gateway service."""

    def __init__(self, settings: GatewaySettings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self._clock = clock
        self._stack = contextlib.AsyncExitStack()
        self._server: ServiceServer | None = None
        self._redis: redis.asyncio.Redis | None = None
        self.servicer: GatewayServicer | None = None
        self.port = 0
        # An insurer that calls back: its endpoint, the URL the insurer is given, the inbox.
        self.callbacks: CallbackServer | None = None
        self.callback_url: str | None = None
        self.inbox: CallbackInbox | None = None
        # This gateway's series, served on OSAGO_METRICS_PORT when set.
        self.metrics = GatewayMetrics(settings.insurer_id)
        self.metrics_server: MetricsServer | None = None

    async def start(self) -> int:
        """Opens the HTTP session, starts serving and returns the bound port."""
        if self._server is not None:
            raise RuntimeError("gateway already started")
        s = self.settings
        try:
            session = open_session(s)
            self._stack.push_async_callback(session.close)
            transport = AiohttpTransport(session, s.base_url)
            guard = InsurerGuard(s, self._clock, self._rate_limiter(), observe_call=self.metrics.observe_call)
            if s.callbacks:
                flow: OfferFlow = await self._callback_flow(transport, guard)
            else:
                flow = OfferFlow(s, DIALECTS[s.dialect], transport, self._clock, guard)
            self.servicer = GatewayServicer(s, flow, self._clock, self._clock.now())
            self.metrics.watch(guard, self.servicer.stats)
            warn_if_insecure(s.tls)
            server = ServiceServer(
                s.bind,
                credentials=s.tls.server_credentials(require_client_cert=True) if s.tls else None,
                interceptors=[Guard(CertificateAuth(s.tls.allowed_peers if s.tls else (), dev=s.tls is None))],
                health_bind=s.health_bind,
            )
            gateway_service_pb2_grpc.add_InsurerGatewayServiceServicer_to_server(self.servicer, server.server)
            server.add_service_name(SERVICE_NAME)
            self._server = server
            self.port = await server.start()
            self.metrics_server = await serve_metrics(self.metrics.registry, s.metrics)
            if self.metrics_server is not None:
                self._stack.push_async_callback(self.metrics_server.stop)
        except BaseException:
            await self.stop(0)
            raise
        return self.port

    def _redis_client(self, url: str) -> redis.asyncio.Redis:
        """The one client of short Redis commands (quota, callbacks), opened on first use."""
        if self._redis is None:
            s = self.settings
            # One immediate retry (a pooled connection the server closed), then give up: redis-py's
            # default of 3 retries with backoff would hold every call for seconds.
            self._redis = redis.asyncio.Redis.from_url(
                url,
                socket_timeout=s.redis_timeout_s,
                socket_connect_timeout=s.redis_timeout_s,
                retry=Retry(NoBackoff(), 1),
            )
            self._stack.push_async_callback(self._redis.aclose)
        return self._redis

    def _rate_limiter(self) -> RateLimiter:
        """The insurer's quota: in Redis, shared by every replica, when OSAGO_REDIS_URL is set
        (this process's quota while Redis fails); else this process's own."""
        s = self.settings
        local = LocalRateLimiter(s.rate_limit_config(), self._clock)
        if s.redis_url is None:
            return local
        key = f"{RATE_LIMIT_KEY_PREFIX}{s.insurer_id}"
        shared = RedisRateLimiter(s.rate_limit_config(), self._redis_client(s.redis_url), key, self._clock)
        return FallbackRateLimiter(shared, local, s.insurer_id, self._clock, s.redis_retry_s)

    async def _callback_flow(self, transport: AiohttpTransport, guard: InsurerGuard) -> CallbackFlow:
        """The inbox, the callback endpoint, and the flow that gives the insurer its URL."""
        s = self.settings
        if s.redis_url is None:
            inbox: CallbackInbox = LocalInbox(self._clock, s.callback_keep_s, s.callback_window_s)
        else:
            # The subscription's reads wait for messages as long as there are none: no read timeout.
            listener = redis.asyncio.Redis.from_url(
                s.redis_url,
                socket_connect_timeout=s.redis_timeout_s,
                health_check_interval=10,
                retry=Retry(NoBackoff(), 0),
            )
            self._stack.push_async_callback(listener.aclose)
            inbox = RedisInbox(
                self._redis_client(s.redis_url),
                listener,
                s.insurer_id,
                self._clock,
                keep_s=s.callback_keep_s,
                window_s=s.callback_window_s,
                retry_s=s.redis_retry_s,
            )
        await inbox.start()
        self._stack.push_async_callback(inbox.close)
        self.inbox = inbox
        dialect = CALLBACK_DIALECTS[s.dialect]
        self.callbacks = CallbackServer(s, dialect, inbox, self._clock)
        try:
            await self.callbacks.start()
        except OSError as exc:
            raise SettingsError(f"OSAGO_GATEWAY_CALLBACK_BIND {s.callback_bind}: {exc.strerror}") from None
        self._stack.push_async_callback(self.callbacks.stop)
        self.callback_url = self.callbacks.url()
        return CallbackFlow(s, dialect.with_callback_url(self.callback_url), transport, self._clock, inbox, guard)

    async def drain(self) -> None:
        """A stopping replica: NOT_SERVING first (callers' round-robin skips it), then every
        RequestOffer in flight and every Offers stream ends with UNAVAILABLE, so the aggregator
        asks another replica (which resumes each insurer application)."""
        if self._server is not None:
            await self._server.health.enter_graceful_shutdown()
        if self.servicer is not None:
            self.servicer.drain()

    async def stop(self, grace: float = 1.0) -> None:
        """Reports NOT_SERVING, lets calls run for `grace` seconds, cancels the rest, then closes
        the HTTP session. Safe to call twice."""
        server, self._server = self._server, None
        try:
            if server is not None:
                await server.stop(grace)
        finally:
            await self._stack.aclose()


async def serve_forever(settings: GatewaySettings) -> None:
    """Runs the gateway until SIGTERM, SIGINT or cancellation; prints one `listening` line."""
    service = GatewayService(settings)
    port = await service.start()
    try:
        host = settings.bind.rsplit(":", 1)[0]
        if service.callbacks is not None:
            print(f"callbacks {service.callback_url} (port {service.callbacks.port})", flush=True)
        if service.metrics_server is not None:
            print(f"metrics {service.metrics_server.address}", flush=True)
        print(f"listening {host}:{port}", flush=True)
        await until_signalled()
        await service.drain()
    finally:
        await service.stop()
    sys.stdout.flush()
