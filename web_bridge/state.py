"""The application's typed state: settings, the aggregator's channel and stubs, open streams."""

from __future__ import annotations

import asyncio
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

    def add(self, ws: web.WebSocketResponse) -> None:
        self.open.add(ws)
        self.idle.clear()

    def discard(self, ws: web.WebSocketResponse) -> None:
        self.open.discard(ws)
        if not self.open:
            self.idle.set()


SETTINGS = web.AppKey("settings", BridgeSettings)
AGGREGATOR = web.AppKey("aggregator", Aggregator)
STREAMS = web.AppKey("streams", Streams)
