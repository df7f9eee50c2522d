"""`osago health`, the command the Helm test hook runs, as a process against a real gRPC server
serving the library health servicer."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator

import pytest

from osago_common.grpc_server import ServiceServer

pytestmark = pytest.mark.functional

SERVICE = "osago.v1.AggregatorService"


async def osago_health(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "osago_cli.main",
        "health",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode().strip()


@pytest.fixture
async def server() -> AsyncIterator[ServiceServer]:
    running = ServiceServer("127.0.0.1:0")
    running.add_service_name(SERVICE)
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0)


async def test_serving_server_and_service_exit_zero(server: ServiceServer) -> None:
    target = f"127.0.0.1:{server.port}"
    whole, named = await asyncio.gather(
        osago_health("--target", target), osago_health("--target", target, "--service", SERVICE)
    )
    assert whole == (0, f'{target} "" SERVING')
    assert named == (0, f"{target} {SERVICE} SERVING")


async def test_service_the_server_does_not_serve_is_unhealthy(server: ServiceServer) -> None:
    code, out = await osago_health("--target", f"127.0.0.1:{server.port}", "--service", "osago.v1.NoSuchService")
    assert code == 1
    assert out.endswith("osago.v1.NoSuchService SERVICE_UNKNOWN")


async def test_draining_server_is_unhealthy(server: ServiceServer) -> None:
    await server.health.enter_graceful_shutdown()
    code, out = await osago_health("--target", f"127.0.0.1:{server.port}", "--service", SERVICE)
    assert (code, out.rsplit(" ", 1)[-1]) == (1, "NOT_SERVING")


async def test_nothing_listening_is_no_answer() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, out = await osago_health("--target", f"127.0.0.1:{port}", "--timeout", "0.5")
    assert code == 3
    assert "no answer" in out
