"""Every channel of the project pings within what every server of the project accepts, so no
server answers a client's keepalive with GOAWAY too_many_pings."""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aggregator import gateways
from osago_client import channel
from osago_common.grpc_options import SERVER_OPTIONS
from osago_common.grpc_server import ServiceServer

CHANNELS = {"client → aggregator": channel.CHANNEL_OPTIONS, "aggregator → gateway": gateways.CHANNEL_OPTIONS}


def test_every_channel_pings_no_more_often_than_the_servers_allow_even_when_idle() -> None:
    server = dict(SERVER_OPTIONS)
    for name, options in CHANNELS.items():
        client = dict(options)
        keepalive_ms = client["grpc.keepalive_time_ms"]
        min_ping_ms = server["grpc.http2.min_recv_ping_interval_without_data_ms"]
        assert isinstance(keepalive_ms, int) and isinstance(min_ping_ms, int), name
        assert keepalive_ms >= min_ping_ms, name
        if client["grpc.keepalive_permit_without_calls"]:
            assert server["grpc.keepalive_permit_without_calls"] == 1, name
        assert server["grpc.http2.max_ping_strikes"] == 0  # a ping too early is never punished


def test_every_channel_retries_only_unavailable_of_its_own_service_with_throttling() -> None:
    services = {
        "client → aggregator": "osago.v1.AggregatorService",
        "aggregator → gateway": "osago.v1.InsurerGatewayService",
    }
    for name, options in CHANNELS.items():
        settings = dict(options)
        assert settings["grpc.enable_retries"] == 1, name
        config = json.loads(str(settings["grpc.service_config"]))
        [method] = config["methodConfig"]
        assert method["name"] == [{"service": services[name]}], name
        assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"], name
        assert config["retryThrottling"]["maxTokens"] > 0, name


@pytest.mark.functional
async def test_a_burst_of_calls_waiting_for_a_busy_server_is_served_not_cancelled_by_grpc_core() -> None:
    """More calls than gRPC core's default hard limit of pending calls (3000) arrive while the
    server's event loop is busy: every one is served (by default 1000 and more are CANCELLED)."""
    server = ServiceServer("127.0.0.1:0")
    port = await server.start()
    calls = 3500
    sent = threading.Event()
    outcomes: list[str] = []

    def burst() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            futures = [check.future(health_pb2.HealthCheckRequest(), timeout=60) for _ in range(calls)]
            sent.set()
            for future in futures:
                try:
                    future.result()
                    outcomes.append("OK")
                except grpc.RpcError as error:
                    outcomes.append(error.code().name)

    client = threading.Thread(target=burst)
    client.start()
    try:
        # The server's loop is busy (blocked here) while every call is sent and arrives.
        assert sent.wait(30)
        time.sleep(1.0)  # noqa: ASYNC251 - the point: the loop takes no call meanwhile
        await asyncio.to_thread(client.join)
    finally:
        await server.stop(0)
    assert collections.Counter(outcomes) == {"OK": calls}
