"""`osago health --target HOST:PORT [--service NAME]`: one grpc.health.v1 Check, for the Helm
test hook and for operators (the image has no grpcurl or grpc_health_probe).

Exit status: 0 when the service is SERVING; 1 when it answers anything else (NOT_SERVING while
draining, SERVICE_UNKNOWN for a name it does not serve); 3 when no answer came (unreachable,
deadline, any other RPC error). The one line printed says which.
"""

from __future__ import annotations

import sys
from typing import TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = 0
UNHEALTHY = 1
NO_ANSWER = 3

# Seconds one check may take, connection included.
DEFAULT_TIMEOUT_S = 5.0


async def check_health(target: str, service: str = "", timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """The status `target` reports for `service` ("" is the server as a whole), by name:
    SERVING, NOT_SERVING, UNKNOWN or SERVICE_UNKNOWN. Raises grpc.aio.AioRpcError when no
    answer came."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as error:
            # The library servicer answers NOT_FOUND for a service it does not know.
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            raise
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def run_health(target: str, service: str, timeout_s: float | None, out: TextIO = sys.stdout) -> int:
    """Checks once, prints `TARGET SERVICE STATUS` and returns the exit status."""
    shown = service or '""'
    try:
        status = await check_health(target, service, DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)
    except grpc.aio.AioRpcError as error:
        print(f"{target} {shown} no answer: {error.code().name}", file=out)
        return NO_ANSWER
    print(f"{target} {shown} {status}", file=out)
    return SERVING if status == "SERVING" else UNHEALTHY
