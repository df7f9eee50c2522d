"""Waiting for a service of the mesh to be ready: gRPC health SERVING, or an HTTP 200."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

STARTUP_TIMEOUT_S = 60.0


async def wait_grpc_serving(
    target: str, timeout_s: float = STARTUP_TIMEOUT_S, credentials: grpc.ChannelCredentials | None = None
) -> None:
    """Waits until grpc.health.v1 reports the server SERVING (over TLS with `credentials`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    channel_of = (
        grpc.aio.insecure_channel(target) if credentials is None else grpc.aio.secure_channel(target, credentials)
    )
    async with channel_of as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0, wait_for_ready=True)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if loop.time() > deadline:
                raise RuntimeError(f"{target} did not report SERVING within {timeout_s:g} s")
            await asyncio.sleep(0.1)


async def wait_http_ok(url: str, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Waits until `url` answers 200."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            if loop.time() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout_s:g} s")
            await asyncio.sleep(0.1)
