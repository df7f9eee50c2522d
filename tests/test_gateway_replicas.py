"""Several replicas of one insurer's gateway behind the aggregator's channel: a replica that
drains (or dies) mid-call hands the call to another, which resumes the insurer application."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from osago.v1 import gateway_service_pb2, gateway_service_pb2_grpc

from aggregator.gateways import GrpcGateways
from aggregator.settings import GatewayEndpoint, grpc_target
from insurer_gateway.service import GatewayService
from insurer_gateway.settings import GatewaySettings
from insurer_sim.config import SimConfig
from insurer_sim.profiles import profile
from insurer_sim.server import SimServer
from tests.test_gateway_service import make_application

# The dev mode (plaintext): these tests are about the other settings.
DEV_ENV = {"OSAGO_DEV_INSECURE": "true"}

pytestmark = pytest.mark.functional

INSURER = "maks"  # a slow insurer (median 25 s, × the time scale): calls stay in flight a while


@contextlib.asynccontextmanager
async def replicas(count: int) -> AsyncIterator[tuple[str, list[GatewayService], list[int]]]:
    async with contextlib.AsyncExitStack() as stack:
        sim = SimServer(SimConfig(insurers=(profile(INSURER),), time_scale=0.1, seed=5))
        sim_url = await sim.start()
        stack.push_async_callback(sim.stop)
        services, ports = [], []
        for _ in range(count):
            settings = GatewaySettings.from_env(
                DEV_ENV | {"OSAGO_GATEWAY_INSURER": INSURER, "OSAGO_GATEWAY_BASE_URL": f"{sim_url}/insurers/{INSURER}"}
            )
            service = GatewayService(settings)
            ports.append(await service.start())
            stack.push_async_callback(service.stop, 0.1)
            services.append(service)
        yield sim_url, services, ports


async def in_flight(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel)
        status = await stub.GetGatewayStatus(gateway_service_pb2.GetGatewayStatusRequest(), timeout=5)
        return int(status.in_flight)


async def sim_stats(sim_url: str, reference: str) -> dict[str, int]:
    """The insurer's applications and offers for one request id, and its replayed creates (all
    requests together)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sim_url}/_sim/stats", params={"reference": reference}) as response:
            body = await response.json()
        async with http.get(f"{sim_url}/_sim/ledger", params={"reference": reference}) as response:
            offers = (await response.json())["offers"]
    return {
        "applications": len(body["applications"]),
        "replays": body["insurers"][INSURER]["replays"],
        "offers": len(offers),
    }


async def test_a_draining_replica_hands_the_call_to_another_which_resumes_the_insurer_application() -> None:
    async with replicas(2) as (sim_url, services, ports):
        target = grpc_target("|".join(f"127.0.0.1:{p}" for p in ports))
        gateways = GrpcGateways((GatewayEndpoint(INSURER, "MAKS", target),))
        try:
            stream = gateways.request_offer(INSURER, "req-drain-1", make_application(), 30.0)
            first = await anext(stream)
            assert first.WhichOneof("update") == "accepted"
            holder = [i for i, port in enumerate(ports) if await in_flight(port) == 1]
            assert len(holder) == 1
            await services[holder[0]].drain()
            rest = [update async for update in stream]
        finally:
            await gateways.close()
        assert rest[-1].WhichOneof("update") == "offer"
        stats = await sim_stats(sim_url, "req-drain-1")
        # One insurer application, asked for again by the second replica (a replay), one offer.
        assert (stats["applications"], stats["offers"]) == (1, 1)
        assert stats["replays"] >= 1
        assert rest[-1].offer.offer_id


async def test_a_draining_replica_refuses_new_calls_and_callers_go_to_the_others() -> None:
    async with replicas(2) as (sim_url, services, ports):
        await services[0].drain()
        target = grpc_target("|".join(f"127.0.0.1:{p}" for p in ports))
        gateways = GrpcGateways((GatewayEndpoint(INSURER, "MAKS", target),))

        async def ask(n: int) -> str:
            updates = [u async for u in gateways.request_offer(INSURER, f"req-new-{n}", make_application(), 30.0)]
            return str(updates[-1].WhichOneof("update"))

        try:
            assert await asyncio.gather(*(ask(n) for n in range(4))) == ["offer"] * 4
        finally:
            await gateways.close()
        for n in range(4):
            stats = await sim_stats(sim_url, f"req-new-{n}")
            assert (stats["applications"], stats["offers"]) == (1, 1)
        assert stats["replays"] == 0  # no call went to the draining replica and came back
