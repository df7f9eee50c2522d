"""Shared fixtures: the whole mesh on real localhost ports, in this test's event loop."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import json_format
from osago.v1 import aggregator_service_pb2_grpc, application_pb2

from aggregator.service import AggregatorService
from aggregator.settings import AggregatorSettings, GatewayEndpoint
from insurer_gateway.service import GatewayService
from insurer_gateway.settings import GatewaySettings
from insurer_sim.config import SimConfig
from insurer_sim.server import SimServer
from osago_common import insurers

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def load_example(name: str = "moscow-young-driver") -> application_pb2.Application:
    app = application_pb2.Application()
    json_format.Parse((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"), app)
    return app


@dataclass
class Mesh:
    """Simulator, one gateway per insurer and the aggregator, each a real server on port 0."""

    sim: SimServer
    gateways: dict[str, GatewayService]
    gateway_ports: dict[str, int]
    aggregator: AggregatorService
    target: str
    channel: grpc.aio.Channel
    stub: Any
    http: aiohttp.ClientSession
    stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def ledger(self, reference: str) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.sim.url}/_sim/ledger", params={"reference": reference}) as response:
            assert response.status == 200
            offers: list[dict[str, Any]] = (await response.json())["offers"]
            return offers

    async def stats(self) -> dict[str, Any]:
        async with self.http.get(f"{self.sim.url}/_sim/stats") as response:
            assert response.status == 200
            result: dict[str, Any] = json.loads(await response.text())
            return result


@contextlib.asynccontextmanager
async def start_mesh(
    n: int = 10,
    time_scale: float = 0.01,
    session_limit_s: float = 60.0,
    seed: int | None = 7,
    orphan_grace_s: float = 0.0,
    gateway_overrides: dict[str, Any] | None = None,
) -> AsyncIterator[Mesh]:
    profiles = insurers.first(n)
    async with contextlib.AsyncExitStack() as stack:
        sim = SimServer(SimConfig(insurers=profiles, time_scale=time_scale, seed=seed))
        await sim.start()
        stack.push_async_callback(sim.stop)
        gateways: dict[str, GatewayService] = {}
        ports: dict[str, int] = {}
        for p in profiles:
            settings = GatewaySettings(
                insurer_id=p.insurer_id,
                insurer_name=p.name,
                dialect=p.dialect,
                base_url=f"{sim.url}/insurers/{p.insurer_id}",
                **(gateway_overrides or {}),
            )
            gateway = GatewayService(settings)
            ports[p.insurer_id] = await gateway.start()
            stack.push_async_callback(gateway.stop)
            gateways[p.insurer_id] = gateway
        aggregator = AggregatorService(
            AggregatorSettings(
                bind="127.0.0.1:0",
                gateways=tuple(GatewayEndpoint(p.insurer_id, p.name, f"127.0.0.1:{ports[p.insurer_id]}") for p in profiles),
                session_limit_s=session_limit_s,
                orphan_grace_s=orphan_grace_s,
            )
        )
        port = await aggregator.start()
        stack.push_async_callback(aggregator.stop)
        target = f"127.0.0.1:{port}"
        channel = grpc.aio.insecure_channel(target)
        stack.push_async_callback(channel.close)
        http = aiohttp.ClientSession()
        stack.push_async_callback(http.close)
        yield Mesh(sim, gateways, ports, aggregator, target, channel, aggregator_service_pb2_grpc.AggregatorServiceStub(channel), http)


@pytest.fixture
async def mesh() -> AsyncIterator[Mesh]:
    async with start_mesh() as running:
        yield running
