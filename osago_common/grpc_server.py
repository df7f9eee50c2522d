"""Starting and stopping the project's grpc.aio servers the same way everywhere: the keepalive
policy every channel of the project follows (osago_common.grpc_options), grpc.health.v1 and
server reflection; a SERVER span per call (osago_common.tracing, before any other interceptor);
TLS and the guard interceptor (osago_common.grpc_guard) when given, and then a plaintext port
serving grpc.health.v1 alone for probes that cannot speak TLS (Kubernetes')."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from osago_common import tracing
from osago_common.grpc_options import SERVER_OPTIONS

# The largest request message a server takes unless told otherwise (an application is a few KB);
# beyond it gRPC answers RESOURCE_EXHAUSTED before any code of ours runs.
MAX_RECEIVE_BYTES = 64 * 1024


class ServiceServer:
    """A grpc.aio server with health and reflection; services are added before `start`."""

    def __init__(
        self,
        bind: str,
        *,
        maximum_concurrent_rpcs: int | None = None,
        credentials: grpc.ServerCredentials | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        first_interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        max_receive_bytes: int = MAX_RECEIVE_BYTES,
        health_bind: str | None = None,
    ) -> None:
        options = (*SERVER_OPTIONS, ("grpc.max_receive_message_length", max_receive_bytes))
        self.server = grpc.aio.server(
            options=options,
            maximum_concurrent_rpcs=maximum_concurrent_rpcs,
            # Tracing before the others: a call the guard refuses is traced too, and the span is
            # current in it. Only `first_interceptors` come before (the aggregator's queue probe).
            interceptors=[*first_interceptors, *tracing.server_interceptors(), *interceptors],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._bind = bind
        self._credentials = credentials
        # Probes' plaintext port: the same health servicer, nothing else.
        self._health_server: grpc.aio.Server | None = None
        self._health_bind = health_bind
        self.health_port = 0
        self.ports: list[int] = []
        self._extra_ports: list[tuple[str, grpc.ServerCredentials]] = []
        self._service_names: list[str] = [health.SERVICE_NAME]
        self.port = 0

    def add_service_name(self, full_name: str) -> None:
        """Registers a service for reflection and health (call after adding its servicer)."""
        self._service_names.append(full_name)

    def add_port(self, bind: str, credentials: grpc.ServerCredentials) -> None:
        """Another port of the same server with other credentials (call before `start`)."""
        self._extra_ports.append((bind, credentials))

    async def start(self) -> int:
        """Binds, starts, and marks every service and the server as SERVING. Returns the port;
        `ports` has the extra ones."""
        reflection.enable_server_reflection((*self._service_names, reflection.SERVICE_NAME), self.server)
        self.port = self._add(self._bind, self._credentials)
        self.ports = [self._add(bind, credentials) for bind, credentials in self._extra_ports]
        await self.server.start()
        if self._health_bind is not None:
            self._health_server = grpc.aio.server(options=SERVER_OPTIONS)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
            self.health_port = self._health_server.add_insecure_port(self._health_bind)
            if self.health_port == 0:
                raise OSError(f"cannot bind the health port to {self._health_bind}")
            await self._health_server.start()
        for name in ("", *self._service_names[1:]):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    def _add(self, bind: str, credentials: grpc.ServerCredentials | None) -> int:
        port = (
            self.server.add_insecure_port(bind)
            if credentials is None
            else self.server.add_secure_port(bind, credentials)
        )
        if port == 0:
            raise OSError(f"cannot bind gRPC server to {bind}")
        return port

    async def stop(self, grace: float = 5.0) -> None:
        """Reports NOT_SERVING, lets running calls finish for `grace` seconds, then stops."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self._health_server is not None:
            await self._health_server.stop(0)
