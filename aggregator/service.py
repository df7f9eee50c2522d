"""The aggregator process: its gRPC server, gateway channels, and backends (embedded, or
Postgres + Redis shared by every instance), opened in `start` and closed in reverse in `stop`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sys

from grpc_health.v1 import health_pb2
from osago.v1 import aggregator_service_pb2, aggregator_service_pb2_grpc

from aggregator.access import AccessKeys, AccessTokens
from aggregator.admission import Admission
from aggregator.auth import AggregatorAuth
from aggregator.bus import EventBus, MemoryEventBus, RedisEventBus
from aggregator.cache import MemoryResultCache, RedisResultCache, ResultCache
from aggregator.core import Aggregator
from aggregator.door import DoorProbe, ProbeAnswer, own_target
from aggregator.gateways import GrpcGateways
from aggregator.metrics import AggregatorMetrics
from aggregator.postgres import PostgresRequestStore
from aggregator.servicer import AggregatorServicer
from aggregator.settings import AggregatorSettings
from aggregator.shedding import PROBE_INTERVAL_S, QueueWait
from aggregator.store import MemoryRequestStore, RequestStore
from osago_common.clock import SYSTEM_CLOCK, Clock
from osago_common.grpc_guard import Guard
from osago_common.grpc_server import ServiceServer
from osago_common.metrics import Collect, MetricsServer, breaker_metrics, serve_metrics
from osago_common.service_tokens import TokenVerifier
from osago_common.serving import until_signalled
from osago_common.tls import warn_if_insecure

log = logging.getLogger(__name__)

SERVICE_NAME = aggregator_service_pb2.DESCRIPTOR.services_by_name["AggregatorService"].full_name
GET_QUOTES = f"/{SERVICE_NAME}/GetQuotes"
CREATE_QUOTE_REQUEST = f"/{SERVICE_NAME}/CreateQuoteRequest"
# How often the backends are checked, and how long each check may take.
BACKEND_CHECK_S = 1.0
BACKEND_TIMEOUT_S = 1.0


class AggregatorService:
    """Owns the aggregator's resources; `start` opens them, `drain` hands sessions over, `stop`
    closes everything in reverse."""

    def __init__(self, settings: AggregatorSettings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self._clock = clock
        self._stack = contextlib.AsyncExitStack()
        self.aggregator: Aggregator | None = None
        self._server: ServiceServer | None = None
        self.port = 0
        self.jwt_port = 0
        self.health_port = 0
        self.guard: Guard | None = None
        # The calls' wait at the door, when load shedding watches it.
        self.queue_wait: QueueWait | None = None
        # The metrics endpoint, when OSAGO_METRICS_PORT is set.
        self.metrics_server: MetricsServer | None = None

    async def start(self) -> int:
        s = self.settings
        warn_if_insecure(s.tls)
        gateways = GrpcGateways(
            s.gateways,
            s.breaker(),
            self._clock,
            tls=s.tls,
            streams=s.gateway_streams,
            stream_asks=s.gateway_stream_asks,
        )
        self._stack.push_async_callback(gateways.close)
        store: RequestStore
        bus: EventBus
        cache: ResultCache
        if s.postgres_url and s.redis_url:
            pool = PostgresRequestStore.open(s.postgres_url, size=s.postgres_pool)
            store = await self._stack.enter_async_context(pool)
            redis_bus = await self._stack.enter_async_context(RedisEventBus.open(s.redis_url))
            bus, cache = redis_bus, RedisResultCache(redis_bus.client)
        else:
            store, bus, cache = MemoryRequestStore(), MemoryEventBus(self._clock), MemoryResultCache(self._clock)
        total, per_customer = s.create_rates()
        metrics = AggregatorMetrics(g.insurer_id for g in s.gateways)
        metrics.registry.register(Collect(lambda: breaker_metrics(gateways.breakers)))
        aggregator = Aggregator(
            s,
            gateways,
            store,
            bus,
            cache,
            self._clock,
            shared=bool(s.postgres_url),
            admission=Admission(total, per_customer, self._clock),
            metrics=metrics,
        )
        self.aggregator = aggregator
        self._stack.push_async_callback(aggregator.close)
        aggregator.start()
        verifier = TokenVerifier(s.jwt, self._clock) if s.jwt is not None else None
        guard = Guard(
            AggregatorAuth(verifier, dev=s.dev, allowed_peers=s.tls.allowed_peers if s.tls else ()),
            streams=s.stream_limits(),
        )
        self.guard = guard
        # The calls' wait at the door, timed by calls of the instance's own (load shedding).
        secret = secrets.token_urlsafe(24) if s.shed_queue_wait_s > 0 else None
        server = ServiceServer(
            s.bind,
            maximum_concurrent_rpcs=s.max_concurrent_rpcs,
            credentials=s.tls.server_credentials(require_client_cert=True) if s.tls else None,
            interceptors=[guard],
            first_interceptors=[ProbeAnswer(GET_QUOTES, CREATE_QUOTE_REQUEST, secret)] if secret is not None else [],
            max_receive_bytes=s.max_message_bytes,
            health_bind=s.health_bind,
        )
        if s.jwt_bind and s.tls is not None:
            server.add_port(s.jwt_bind, s.tls.server_credentials(require_client_cert=False))
        keys = s.access_keys or AccessKeys.generate()
        aggregator_service_pb2_grpc.add_AggregatorServiceServicer_to_server(
            AggregatorServicer(aggregator, AccessTokens(keys, s.access_token_ttl_s, self._clock)), server.server
        )
        server.add_service_name(SERVICE_NAME)
        self.port = await server.start()
        self.jwt_port = server.ports[0] if server.ports else 0
        self.health_port = server.health_port
        self._server = server
        self._stack.push_async_callback(server.stop, 1.0)
        if secret is not None:
            probe = DoorProbe(own_target(s.bind, self.port), GET_QUOTES, CREATE_QUOTE_REQUEST, secret, s.tls)
            self._stack.push_async_callback(probe.close)
            queue = QueueWait(self._clock, probe, PROBE_INTERVAL_S)
            aggregator.shedding.watch_queue(queue)
            self.queue_wait = queue
            probing = asyncio.create_task(queue.run(), name="queue-probe")
            self._stack.push_async_callback(_cancel, probing)
        monitor = asyncio.create_task(self._watch_backends(aggregator, server), name="backend-health")
        self._stack.push_async_callback(_cancel, monitor)
        self.metrics_server = await serve_metrics(metrics.registry, s.metrics)
        if self.metrics_server is not None:
            self._stack.push_async_callback(self.metrics_server.stop)
        return self.port

    async def _watch_backends(self, aggregator: Aggregator, server: ServiceServer) -> None:
        """NOT_SERVING (and new sessions refused) while the store or the bus does not answer."""
        serving = True
        while True:
            ok = await aggregator.check_backends(BACKEND_TIMEOUT_S)
            if ok != serving:
                serving = ok
                status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
                for name in ("", SERVICE_NAME):
                    await server.health.set(name, status)
            await self._clock.sleep(BACKEND_CHECK_S)

    async def drain(self) -> None:
        """A stopping instance: NOT_SERVING first, no new sessions, running ones handed over to
        other instances (or finished here when alone); open streams end with UNAVAILABLE so
        clients resume elsewhere."""
        if self._server is not None:
            await self._server.health.enter_graceful_shutdown()
        if self.aggregator is not None:
            await self.aggregator.drain(self.settings.drain_grace_s)

    async def stop(self) -> None:
        await self._stack.aclose()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def serve_forever(settings: AggregatorSettings) -> None:
    """Runs until SIGTERM / SIGINT, then drains; prints `listening HOST:PORT` once it serves."""
    service = AggregatorService(settings)
    port = await service.start()
    host = settings.bind.rsplit(":", 1)[0]
    if service.jwt_port:
        log.info("bearer-token port %s", service.jwt_port)
    if service.metrics_server is not None:
        print(f"metrics {service.metrics_server.address}", flush=True)
    print(f"listening {host}:{port}", flush=True)
    try:
        await until_signalled()
        log.info("draining")
        await service.drain()
    finally:
        await service.stop()
        sys.stdout.flush()
