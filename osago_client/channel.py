"""The client channel: retries of UNAVAILABLE and keepalive as every channel of the project has
them (osago_common.grpc_options), with this client's own retry budget."""

from __future__ import annotations

from typing import Final

import grpc

from osago_common.grpc_options import CallRetry, Options, balanced, channel_options

SERVICE = "osago.v1.AggregatorService"

# Retries happen only before response headers (a stream that already delivered events is resumed
# by the client instead), so re-running a call is safe: creation is idempotent by its key. A
# second of backoff at most rides out an aggregator instance being replaced.
RETRY = CallRetry(max_attempts=4, initial_backoff_s=0.1, max_backoff_s=1.0, max_tokens=10, token_ratio=0.1)
CHANNEL_OPTIONS: Final[Options] = channel_options(SERVICE, RETRY)
# Several aggregator instances: calls spread over those that report SERVING.
SPREAD_CHANNEL_OPTIONS: Final[Options] = channel_options(
    SERVICE, RETRY, ("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 2_000), spread=True
)


def open_channel(
    target: str, credentials: grpc.ChannelCredentials | None = None, extra: Options = ()
) -> grpc.aio.Channel:
    """A channel to `target` ("host:port", or several instances: "ipv4:a:p,b:p", "dns:///name:p"),
    over TLS when `credentials` are given; `extra` options after the project's."""
    options = (*(SPREAD_CHANNEL_OPTIONS if balanced(target) else CHANNEL_OPTIONS), *extra)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, credentials, options=options)
