"""Every channel of the project pings within what every server of the project accepts, so no
server answers a client's keepalive with GOAWAY too_many_pings."""

from __future__ import annotations

import json

from aggregator import gateways
from osago_client import channel
from osago_common.grpc_options import SERVER_OPTIONS

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
