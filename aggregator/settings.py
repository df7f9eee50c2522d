"""The aggregator's settings, read from an injectable environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from osago_common import insurers
from osago_common.breaker import BreakerConfig
from osago_common.env import SettingsError, env_float, env_int, env_str
from osago_common.grpc_options import replicas_target


@dataclass(frozen=True)
class GatewayEndpoint:
    """Where one insurer's gateway listens."""

    insurer_id: str
    insurer_name: str
    target: str


@dataclass(frozen=True)
class AggregatorSettings:
    # host:port the gRPC server binds (port 0 picks a free one).
    bind: str = "127.0.0.1:50050"
    # The insurer gateways, in the order insurers are asked.
    gateways: tuple[GatewayEndpoint, ...] = field(default_factory=tuple)
    # Every session ends by this many seconds after it started; a caller may ask for less.
    session_limit_s: float = 60.0
    # The gateways are asked to finish this much before the session deadline, so their last
    # answer reaches the session before it closes.
    gateway_margin_s: float = 0.1
    # After a GetQuotes caller goes away, the session keeps running this long for a
    # StreamQuoteEvents to pick it up; with nobody watching it is then cancelled.
    orphan_grace_s: float = 5.0
    # Finished sessions stay readable (snapshot, replay) this long in the embedded store; the
    # bus keeps a session's stream this long after its deadline.
    retention_s: float = 900.0
    # This instance's name in the store's ownership records (a random part is added per run);
    # empty: the host's name (a pod's name in Kubernetes).
    instance_name: str = ""
    # The shared backends: Postgres (the record) and Redis (live events, the cache of results).
    # Unset: the embedded, in-process ones (one instance).
    postgres_url: str | None = None
    redis_url: str | None = None
    # How long an instance's lease lasts without renewal: its sessions are taken over once it
    # lapses. Renewed every `takeover_scan_s`, which is also how often orphans are looked for.
    lease_ttl_s: float = 5.0
    takeover_scan_s: float = 1.0
    # Sessions claimed per scan.
    takeover_batch: int = 200
    # While the store is unreachable a session retries its writes up to this long past its
    # deadline; a follower reads the store for a session this long past its deadline.
    store_grace_s: float = 10.0
    # Offers of a finished session answer an identical application this long (0: no cache),
    # never past an offer's own validity.
    cache_ttl_s: float = 300.0
    # SIGTERM: sessions are handed over at once (shared backends) or may run this long to
    # their end (embedded); streams still open end with UNAVAILABLE.
    drain_grace_s: float = 65.0
    # Concurrent RPCs beyond this get RESOURCE_EXHAUSTED.
    max_concurrent_rpcs: int = 20_000
    # Load shedding (aggregator.shedding): with this many sessions running here, new ones are
    # refused with RESOURCE_EXHAUSTED and a time to retry (0: no cap) ...
    max_sessions: int = 0
    # ... and likewise while the event loop runs this many seconds late, smoothed (0: not watched).
    shed_loop_lag_s: float = 0.25
    # The retry delay a refused caller is given.
    shed_retry_s: float = 2.0
    # The breaker per gateway: over the last `breaker_window` calls, once `breaker_min_calls`
    # were made, a failure rate at or above `breaker_failure_rate` opens it for `breaker_open_s`.
    breaker_window: int = 10
    breaker_min_calls: int = 3
    breaker_failure_rate: float = 0.5
    breaker_open_s: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> AggregatorSettings:
        settings = cls(
            bind=env_str(env, "OSAGO_AGGREGATOR_BIND", cls.bind),
            gateways=parse_gateways(env_str(env, "OSAGO_GATEWAYS", "")) if env.get("OSAGO_GATEWAYS") else (),
            session_limit_s=env_float(env, "OSAGO_SESSION_LIMIT_S", cls.session_limit_s),
            gateway_margin_s=env_float(env, "OSAGO_GATEWAY_MARGIN_S", cls.gateway_margin_s),
            orphan_grace_s=env_float(env, "OSAGO_ORPHAN_GRACE_S", cls.orphan_grace_s),
            retention_s=env_float(env, "OSAGO_RETENTION_S", cls.retention_s),
            instance_name=env_str(env, "OSAGO_INSTANCE_NAME", ""),
            postgres_url=env.get("OSAGO_POSTGRES_URL") or None,
            redis_url=env.get("OSAGO_REDIS_URL") or None,
            lease_ttl_s=env_float(env, "OSAGO_LEASE_TTL_S", cls.lease_ttl_s),
            takeover_scan_s=env_float(env, "OSAGO_TAKEOVER_SCAN_S", cls.takeover_scan_s),
            takeover_batch=env_int(env, "OSAGO_TAKEOVER_BATCH", cls.takeover_batch),
            store_grace_s=env_float(env, "OSAGO_STORE_GRACE_S", cls.store_grace_s),
            cache_ttl_s=env_float(env, "OSAGO_CACHE_TTL_S", cls.cache_ttl_s),
            drain_grace_s=env_float(env, "OSAGO_DRAIN_GRACE_S", cls.drain_grace_s),
            max_concurrent_rpcs=env_int(env, "OSAGO_MAX_CONCURRENT_RPCS", cls.max_concurrent_rpcs),
            max_sessions=env_int(env, "OSAGO_MAX_SESSIONS", cls.max_sessions),
            shed_loop_lag_s=env_float(env, "OSAGO_SHED_LOOP_LAG_S", cls.shed_loop_lag_s),
            shed_retry_s=env_float(env, "OSAGO_SHED_RETRY_S", cls.shed_retry_s),
            breaker_window=env_int(env, "OSAGO_AGGREGATOR_BREAKER_WINDOW", cls.breaker_window),
            breaker_min_calls=env_int(env, "OSAGO_AGGREGATOR_BREAKER_MIN_CALLS", cls.breaker_min_calls),
            breaker_failure_rate=env_float(env, "OSAGO_AGGREGATOR_BREAKER_FAILURE_RATE", cls.breaker_failure_rate),
            breaker_open_s=env_float(env, "OSAGO_AGGREGATOR_BREAKER_OPEN_S", cls.breaker_open_s),
        )
        settings = replace(settings, **overrides)
        if not settings.gateways:
            raise SettingsError("OSAGO_GATEWAYS is required (id=host:port,...)")
        if not 0 < settings.session_limit_s <= 600:
            raise SettingsError("OSAGO_SESSION_LIMIT_S must be between 0 and 600 seconds")
        if bool(settings.postgres_url) != bool(settings.redis_url):
            raise SettingsError("OSAGO_POSTGRES_URL and OSAGO_REDIS_URL go together: set both or neither")
        if settings.max_sessions < 0:
            raise SettingsError("OSAGO_MAX_SESSIONS must be 0 (no cap) or a positive number of sessions")
        if settings.shed_loop_lag_s < 0:
            raise SettingsError("OSAGO_SHED_LOOP_LAG_S must be 0 (not watched) or a positive number of seconds")
        if not 0 < settings.shed_retry_s <= 3600:
            raise SettingsError("OSAGO_SHED_RETRY_S must be between 0 and 3600 seconds")
        if not 0 < settings.takeover_scan_s < settings.lease_ttl_s:
            raise SettingsError("OSAGO_TAKEOVER_SCAN_S must be positive and shorter than OSAGO_LEASE_TTL_S")
        try:
            settings.breaker()
        except ValueError as error:
            raise SettingsError(f"OSAGO_AGGREGATOR_BREAKER_*: {error}") from None
        return settings

    def breaker(self) -> BreakerConfig:
        return BreakerConfig(
            window_size=self.breaker_window,
            minimum_calls=self.breaker_min_calls,
            failure_rate_threshold=self.breaker_failure_rate,
            open_duration_s=self.breaker_open_s,
        )


def grpc_target(addresses: str) -> str:
    """A gRPC target for one address (`host:port`, or any gRPC target such as
    `dns:///gw-alfa:50051`, whose records are all used) or for several replicas listed with `|`
    (`10.0.0.5:50051|10.0.0.6:50051`: IP addresses, as gRPC's `ipv4:` target takes)."""
    try:
        return replicas_target([p.strip() for p in addresses.split("|")])
    except ValueError as error:
        raise SettingsError(f"OSAGO_GATEWAYS: {error}") from None


def parse_gateways(spec: str) -> tuple[GatewayEndpoint, ...]:
    """Parses `id=host:port,id2=host:port`, or `id:Display Name=host:port` to name the insurer;
    several replicas of a gateway as `id=10.0.0.5:50051|10.0.0.6:50051` or one DNS name.
    Without a name, the dev catalogue's (osago_common.insurers) is used, else the id itself."""
    endpoints: list[GatewayEndpoint] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, target = item.partition("=")
        if not sep or not key or not target:
            raise SettingsError(f"OSAGO_GATEWAYS: expected id=host:port, got {item!r}")
        insurer_id, _, name = key.partition(":")
        if not name:
            known = insurers.BY_ID.get(insurer_id)
            name = known.name if known else insurer_id
        endpoints.append(GatewayEndpoint(insurer_id, name, grpc_target(target)))
    ids = [e.insurer_id for e in endpoints]
    if len(set(ids)) != len(ids):
        raise SettingsError("OSAGO_GATEWAYS: an insurer is listed twice")
    return tuple(endpoints)
