"""The client channel: a service config that retries UNAVAILABLE (gRPC proposal A6, throttled by
tokens), and keepalive settings the project's servers accept (see osago_common.grpc_server)."""

from __future__ import annotations

import json
from typing import Final

import grpc

SERVICE = "osago.v1.AggregatorService"

# Retries happen only before response headers (a stream that already delivered events is resumed
# by the client instead), so re-running a call is safe: creation is idempotent by its key.
SERVICE_CONFIG: Final[str] = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": SERVICE}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
        # Each failure costs a token, each success gives back 0.1; below 5 tokens retries stop.
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    }
)

# Servers accept pings every 10 s with or without calls; pinging every 30 s keeps a quiet
# minute-long stream alive through proxies and notices a dead peer within 40 s.
CHANNEL_OPTIONS: Final[tuple[tuple[str, str | int], ...]] = (
    ("grpc.enable_retries", 1),
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)


def open_channel(
    target: str, credentials: grpc.ChannelCredentials | None = None
) -> grpc.aio.Channel:
    """A channel to `target` ("host:port"), over TLS when `credentials` are given."""
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
