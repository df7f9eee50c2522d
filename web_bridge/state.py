"""The application's typed state: settings, the aggregator's channel and stubs, open streams."""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2_grpc
from osago.v1 import aggregator_service_pb2_grpc

from web_bridge.settings import BridgeSettings


@dataclass(frozen=True)
class Aggregator:
    """The one grpc.aio channel to the aggregator and the stubs on it."""

    channel: grpc.aio.Channel
    stub: aggregator_service_pb2_grpc.AggregatorServiceStub
    health: health_pb2_grpc.HealthStub


@dataclass
class Streams:
    """Open WebSocket event streams, closed with "going away" on shutdown, and how streams ended."""

    open: set[web.WebSocketResponse] = field(default_factory=set)
    finished: int = 0
    abandoned: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    # Open streams by client address (the per-client limit).
    per_client: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, ws: web.WebSocketResponse, client: str = "") -> None:
        self.open.add(ws)
        self.per_client[client] += 1
        self.idle.clear()

    def discard(self, ws: web.WebSocketResponse, client: str = "") -> None:
        if ws in self.open:
            self.open.discard(ws)
            self.per_client[client] -= 1
            if self.per_client[client] <= 0:
                del self.per_client[client]
        if not self.open:
            self.idle.set()


SETTINGS = web.AppKey("settings", BridgeSettings)
AGGREGATOR = web.AppKey("aggregator", Aggregator)
STREAMS = web.AppKey("streams", Streams)
