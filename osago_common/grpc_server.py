"""Starting and stopping the project's grpc.aio servers the same way everywhere: the keepalive
policy every channel of the project follows (osago_common.grpc_options), grpc.health.v1 and
server reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from osago_common.grpc_options import SERVER_OPTIONS


class ServiceServer:
    """A grpc.aio server with health and reflection; services are added before `start`."""

    def __init__(self, bind: str, *, maximum_concurrent_rpcs: int | None = None) -> None:
        self.server = grpc.aio.server(options=SERVER_OPTIONS, maximum_concurrent_rpcs=maximum_concurrent_rpcs)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._bind = bind
        self._service_names: list[str] = [health.SERVICE_NAME]
        self.port = 0

    def add_service_name(self, full_name: str) -> None:
        """Registers a service for reflection and health (call after adding its servicer)."""
        self._service_names.append(full_name)

    async def start(self) -> int:
        """Binds, starts, and marks every service and the server as SERVING. Returns the port."""
        reflection.enable_server_reflection((*self._service_names, reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(self._bind)
        if self.port == 0:
            raise OSError(f"cannot bind gRPC server to {self._bind}")
        await self.server.start()
        for name in ("", *self._service_names[1:]):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        """Reports NOT_SERVING, lets running calls finish for `grace` seconds, then stops."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
