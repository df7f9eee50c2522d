"""A running mesh as its clients see it, wherever it runs (this event loop, or `osago up`'s
processes): addresses, an aggregator stub, the simulator's controls and ledger."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
from osago.v1 import aggregator_service_pb2_grpc, gateway_service_pb2, gateway_service_pb2_grpc


@dataclass
class Mesh:
    """A running mesh as its clients see it: addresses, an aggregator stub, simulator controls."""

    sim_url: str
    # insurer id -> the gateway's host:port
    gateway_targets: dict[str, str]
    target: str
    http: aiohttp.ClientSession
    channel: grpc.aio.Channel
    stub: aggregator_service_pb2_grpc.AggregatorServiceStub

    async def _get(self, path: str, **params: str) -> Any:
        async with self.http.get(f"{self.sim_url}{path}", params=params) as response:
            response.raise_for_status()
            return await response.json()

    async def ledger(self, reference: str) -> list[dict[str, Any]]:
        """The offers the simulator issued for a request id."""
        offers: list[dict[str, Any]] = (await self._get("/_sim/ledger", reference=reference))["offers"]
        return offers

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._get("/_sim/stats")
        return result

    async def gateway_status(self, insurer_id: str) -> gateway_service_pb2.GetGatewayStatusResponse:
        async with grpc.aio.insecure_channel(self.gateway_targets[insurer_id]) as channel:
            stub = gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel)
            status: gateway_service_pb2.GetGatewayStatusResponse = await stub.GetGatewayStatus(
                gateway_service_pb2.GetGatewayStatusRequest(), timeout=5
            )
            return status

    async def set_fault(self, insurer_id: str, mode: str, **options: Any) -> None:
        async with self.http.put(
            f"{self.sim_url}/_sim/insurers/{insurer_id}/fault", json={"mode": mode, **options}
        ) as response:
            response.raise_for_status()

    async def heal(self, insurer_id: str) -> None:
        async with self.http.delete(f"{self.sim_url}/_sim/insurers/{insurer_id}/fault") as response:
            response.raise_for_status()


@contextlib.asynccontextmanager
async def connect(sim_url: str, gateway_targets: dict[str, str], target: str) -> AsyncIterator[Mesh]:
    """A client's view of a mesh running elsewhere (e.g. `osago up`'s processes)."""
    async with aiohttp.ClientSession() as http, grpc.aio.insecure_channel(target) as channel:
        yield Mesh(
            sim_url, gateway_targets, target, http, channel, aggregator_service_pb2_grpc.AggregatorServiceStub(channel)
        )
