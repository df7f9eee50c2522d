"""Keepalive and retry options of every gRPC channel and server of the project, in one place so
that what clients do always fits what servers allow.

Keepalive: a channel pings a connection every 30 s, calls or not, and drops it when a ping goes
unanswered for 10 s, so a quiet minute-long stream stays open through proxies and a dead peer is
noticed within 40 s. Servers accept pings as often as every 10 s (Envoy and other proxies ping
idle connections too) and never answer them with GOAWAY too_many_pings, which the gRPC defaults
(one ping per 5 minutes, 2 strikes) would do.

Load balancing: calls go round-robin over every replica the target names, and a replica that
reports NOT_SERVING on grpc.health.v1 (it drains) gets no new call.

Retries (gRPC proposal A6) are only of UNAVAILABLE, before response headers, and throttled by
tokens: each failure costs one, each success gives back `token_ratio`, and below half of
`max_tokens` the channel stops retrying, so a failing service is not sent a multiple of its load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

Options = tuple[tuple[str, str | int], ...]

KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
# The shortest interval between a client's pings that servers accept.
MIN_PING_INTERVAL_MS = 10_000

KEEPALIVE: Options = (
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
)

SERVER_OPTIONS: Options = (
    *KEEPALIVE,
    ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_concurrent_streams", 10_000),
)


@dataclass(frozen=True)
class CallRetry:
    """How a channel retries UNAVAILABLE calls of one service, and the throttle on it."""

    max_attempts: int
    initial_backoff_s: float
    max_backoff_s: float
    max_tokens: int
    token_ratio: float
    backoff_multiplier: float = 2.0


def service_config(service: str, retry: CallRetry) -> str:
    """The channel's service config (JSON) retrying every method of `service`, spreading calls
    round-robin over every address the target names (several replicas: a list, or a DNS name
    with several records), and skipping a replica whose grpc.health.v1 says NOT_SERVING (one
    that drains)."""
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": ""},
            "methodConfig": [
                {
                    "name": [{"service": service}],
                    "retryPolicy": {
                        "maxAttempts": retry.max_attempts,
                        "initialBackoff": f"{retry.initial_backoff_s:g}s",
                        "maxBackoff": f"{retry.max_backoff_s:g}s",
                        "backoffMultiplier": retry.backoff_multiplier,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
            "retryThrottling": {"maxTokens": retry.max_tokens, "tokenRatio": retry.token_ratio},
        }
    )


def channel_options(service: str, retry: CallRetry, *extra: tuple[str, str | int]) -> Options:
    """Options of a channel to `service`: its retries, the shared keepalive, then `extra`."""
    return (
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config(service, retry)),
        *KEEPALIVE,
        # Keep pinging a connection that carries no data (the default stops after 2 pings).
        ("grpc.http2.max_pings_without_data", 0),
        *extra,
    )
