"""The aggregator process: its gRPC server, gateway channels, store and event log."""

from __future__ import annotations

import contextlib
import sys

from osago.v1 import aggregator_service_pb2, aggregator_service_pb2_grpc

from aggregator.core import Aggregator
from aggregator.eventlog import MemoryEventLog
from aggregator.gateways import GrpcGateways
from aggregator.servicer import AggregatorServicer
from aggregator.settings import AggregatorSettings
from aggregator.store import MemoryRequestStore
from osago_common.clock import SYSTEM_CLOCK, Clock
from osago_common.grpc_server import ServiceServer
from osago_common.serving import until_signalled


SERVICE_NAME = aggregator_service_pb2.DESCRIPTOR.services_by_name["AggregatorService"].full_name


class AggregatorService:
    """Owns the aggregator's resources; `start` opens them, `stop` closes them in reverse."""

    def __init__(self, settings: AggregatorSettings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self._clock = clock
        self._stack = contextlib.AsyncExitStack()
        self.aggregator: Aggregator | None = None
        self.port = 0

    async def start(self) -> int:
        gateways = GrpcGateways(self.settings.gateways, self.settings.breaker(), self._clock)
        self._stack.push_async_callback(gateways.close)
        self.aggregator = Aggregator(self.settings, gateways, MemoryRequestStore(), MemoryEventLog(), self._clock)
        self._stack.push_async_callback(self.aggregator.close)
        server = ServiceServer(self.settings.bind, maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs)
        aggregator_service_pb2_grpc.add_AggregatorServiceServicer_to_server(
            AggregatorServicer(self.aggregator), server.server
        )
        server.add_service_name(SERVICE_NAME)
        self.port = await server.start()
        self._stack.push_async_callback(server.stop, 2.0)
        return self.port

    async def stop(self) -> None:
        await self._stack.aclose()


async def serve_forever(settings: AggregatorSettings) -> None:
    """Runs until SIGTERM / SIGINT; prints `listening HOST:PORT` once it serves."""
    service = AggregatorService(settings)
    port = await service.start()
    host = settings.bind.rsplit(":", 1)[0]
    print(f"listening {host}:{port}", flush=True)
    try:
        await until_signalled()
    finally:
        await service.stop()
        sys.stdout.flush()
