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

# Calls that arrived but that the server's event loop has not taken yet (it is busy): gRPC's C
# core cancels them beyond 1000 (3000 at once), before any code of ours sees them, so a burst of
# customers would be cancelled rather than reach the guard's stream limits and the aggregator's
# load shedding, which answer RESOURCE_EXHAUSTED with a time to retry. Above the aggregator's
# OSAGO_MAX_CONCURRENT_RPCS, the largest number of calls any server of the project takes.
MAX_PENDING_CALLS = 25_000

SERVER_OPTIONS: Options = (
    *KEEPALIVE,
    ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_concurrent_streams", 10_000),
    ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
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


def balanced(target: str) -> bool:
    """Whether `target` may name several replicas (an address list, or a DNS name with several
    records) and calls should be spread over them."""
    return target.startswith(("ipv4:", "ipv6:", "dns:"))


def service_config(service: str, retry: CallRetry, *, spread: bool = False) -> str:
    """The channel's service config (JSON) retrying every method of `service`. With `spread`,
    calls go round-robin over every address the target names and skip a replica whose
    grpc.health.v1 says NOT_SERVING (one that drains); without, the one address is used as
    gRPC does by default (pick_first, which reconnects on demand)."""
    balancing: dict[str, object] = (
        {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}} if spread else {}
    )
    return json.dumps(
        {
            **balancing,
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


def channel_options(service: str, retry: CallRetry, *extra: tuple[str, str | int], spread: bool = False) -> Options:
    """Options of a channel to `service`: its retries (and load balancing, see service_config),
    the shared keepalive, then `extra`."""
    return (
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config(service, retry, spread=spread)),
        *KEEPALIVE,
        # Keep pinging a connection that carries no data (the default stops after 2 pings).
        ("grpc.http2.max_pings_without_data", 0),
        *extra,
    )


def replicas_target(addresses: list[str]) -> str:
    """One gRPC target for several replicas given as `ip:port` (IPv4 literals, as gRPC's `ipv4:`
    scheme takes): calls go round-robin over them. One address is returned as it is, so any gRPC
    target (`host:port`, `dns:///name:port` whose every record is used) fits too."""
    if len(addresses) == 1:
        return addresses[0]
    for address in addresses:
        host, sep, port = address.rpartition(":")
        octets = host.split(".")
        if not (sep and port.isdigit() and len(octets) == 4 and all(o.isdigit() for o in octets)):
            raise ValueError(
                f"replicas listed together must be ipv4:port, got {address!r} "
                "(for host names use one DNS name that resolves to every replica: dns:///name:port)"
            )
    return "ipv4:" + ",".join(addresses)
