"""The aggregator's settings, read from an injectable environment (the variables are listed in
the README's configuration table; OSAGO_METRICS_PORT / OSAGO_METRICS_HOST in osago_common.metrics)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aggregator.access import AccessKeys
from aggregator.admission import Rate
from osago_common import insurers
from osago_common.breaker import BreakerConfig
from osago_common.env import SettingsError, env_float, env_int, env_str
from osago_common.grpc_guard import StreamLimits
from osago_common.grpc_options import replicas_target
from osago_common.metrics import MetricsEndpoint
from osago_common.service_tokens import DEFAULT_AUDIENCE, VerifierConfig
from osago_common.tls import TlsFiles, tls_from_env


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
    # Asks go to each gateway as messages over this many long-lived Offers streams (at least as
    # many as the gateway has replicas, so round-robin reaches each), another stream opening
    # while every one carries `gateway_stream_asks` asks; 0: one RequestOffer call per ask.
    gateway_streams: int = 4
    gateway_stream_asks: int = 250
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
    # Connections to Postgres each instance opens at start-up and keeps: a pool that grew only
    # on demand made the first busy seconds wait for new connections (docs/BENCHMARKS.md).
    postgres_pool: int = 20
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
    # ... and likewise while a call waits this many seconds at the door before the instance takes
    # it: probes of its own through gRPC's queues of calls not yet taken (0: not watched), with an
    # adaptive cap on sessions running and a longer retry delay while it lasts (aggregator.shedding).
    shed_queue_wait_s: float = 2.5
    # The shortest retry delay a refused caller is given.
    shed_retry_s: float = 2.0
    # The breaker per gateway: over the last `breaker_window` calls, once `breaker_min_calls`
    # were made, a failure rate at or above `breaker_failure_rate` opens it for `breaker_open_s`.
    breaker_window: int = 10
    breaker_min_calls: int = 3
    breaker_failure_rate: float = 0.5
    breaker_open_s: float = 5.0
    # TLS on every link (osago_common.tls): callers present client certificates our CA issued,
    # and the gateways are called with this certificate. None: the dev mode (plaintext, anyone).
    tls: TlsFiles | None = None
    # A second port, TLS without client certificates, for callers with a bearer JWT (core-app),
    # verified against `jwt`'s keys.
    jwt_bind: str | None = None
    jwt: VerifierConfig | None = None
    # Plaintext grpc.health.v1 alone, for probes that cannot speak TLS.
    health_bind: str | None = None
    # The keys of the customers' access tokens (shared by every instance; None: a random one,
    # for a lone dev instance) and how long a token is good for.
    access_keys: AccessKeys | None = None
    access_token_ttl_s: float = 900.0
    # Sessions created per second by this instance, and per customer (or anonymous client
    # address) per minute, each with its burst.
    create_rate_per_s: float = 100.0
    create_burst: int = 200
    customer_create_per_min: float = 30.0
    customer_create_burst: int = 10
    # Open event streams (GetQuotes, StreamQuoteEvents) in total and per customer or client.
    max_streams: int = 10_000
    max_streams_per_client: int = 20
    # The largest request message taken (gRPC answers RESOURCE_EXHAUSTED beyond it).
    max_message_bytes: int = 64 * 1024
    # The application (personal data) of a finished request is erased this long after it was
    # created; the purge runs this often (shared store; the embedded one forgets whole requests
    # after `retention_s`).
    personal_data_retention_s: float = 3 * 86400.0
    purge_interval_s: float = 3600.0
    # Where Prometheus scrapes /metrics (osago_common.metrics); no port: nowhere.
    metrics: MetricsEndpoint = field(default_factory=MetricsEndpoint)

    @property
    def dev(self) -> bool:
        return self.tls is None

    def create_rates(self) -> tuple[Rate, Rate]:
        return (
            Rate(self.create_rate_per_s, self.create_burst),
            Rate(self.customer_create_per_min / 60.0, self.customer_create_burst),
        )

    def stream_limits(self) -> StreamLimits:
        return StreamLimits(self.max_streams, self.max_streams_per_client)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> AggregatorSettings:
        settings = cls(
            bind=env_str(env, "OSAGO_AGGREGATOR_BIND", cls.bind),
            gateways=parse_gateways(env_str(env, "OSAGO_GATEWAYS", "")) if env.get("OSAGO_GATEWAYS") else (),
            session_limit_s=env_float(env, "OSAGO_SESSION_LIMIT_S", cls.session_limit_s),
            gateway_margin_s=env_float(env, "OSAGO_GATEWAY_MARGIN_S", cls.gateway_margin_s),
            gateway_streams=env_int(env, "OSAGO_GATEWAY_STREAMS", cls.gateway_streams),
            gateway_stream_asks=env_int(env, "OSAGO_GATEWAY_STREAM_ASKS", cls.gateway_stream_asks),
            orphan_grace_s=env_float(env, "OSAGO_ORPHAN_GRACE_S", cls.orphan_grace_s),
            retention_s=env_float(env, "OSAGO_RETENTION_S", cls.retention_s),
            instance_name=env_str(env, "OSAGO_INSTANCE_NAME", ""),
            postgres_url=env.get("OSAGO_POSTGRES_URL") or None,
            redis_url=env.get("OSAGO_REDIS_URL") or None,
            postgres_pool=env_int(env, "OSAGO_POSTGRES_POOL", cls.postgres_pool),
            lease_ttl_s=env_float(env, "OSAGO_LEASE_TTL_S", cls.lease_ttl_s),
            takeover_scan_s=env_float(env, "OSAGO_TAKEOVER_SCAN_S", cls.takeover_scan_s),
            takeover_batch=env_int(env, "OSAGO_TAKEOVER_BATCH", cls.takeover_batch),
            store_grace_s=env_float(env, "OSAGO_STORE_GRACE_S", cls.store_grace_s),
            cache_ttl_s=env_float(env, "OSAGO_CACHE_TTL_S", cls.cache_ttl_s),
            drain_grace_s=env_float(env, "OSAGO_DRAIN_GRACE_S", cls.drain_grace_s),
            max_concurrent_rpcs=env_int(env, "OSAGO_MAX_CONCURRENT_RPCS", cls.max_concurrent_rpcs),
            max_sessions=env_int(env, "OSAGO_MAX_SESSIONS", cls.max_sessions),
            shed_loop_lag_s=env_float(env, "OSAGO_SHED_LOOP_LAG_S", cls.shed_loop_lag_s),
            shed_queue_wait_s=env_float(env, "OSAGO_SHED_QUEUE_WAIT_S", cls.shed_queue_wait_s),
            shed_retry_s=env_float(env, "OSAGO_SHED_RETRY_S", cls.shed_retry_s),
            breaker_window=env_int(env, "OSAGO_AGGREGATOR_BREAKER_WINDOW", cls.breaker_window),
            breaker_min_calls=env_int(env, "OSAGO_AGGREGATOR_BREAKER_MIN_CALLS", cls.breaker_min_calls),
            breaker_failure_rate=env_float(env, "OSAGO_AGGREGATOR_BREAKER_FAILURE_RATE", cls.breaker_failure_rate),
            breaker_open_s=env_float(env, "OSAGO_AGGREGATOR_BREAKER_OPEN_S", cls.breaker_open_s),
            tls=tls_from_env(env),
            jwt_bind=env.get("OSAGO_AGGREGATOR_JWT_BIND") or None,
            jwt=_jwt(env),
            health_bind=env.get("OSAGO_AGGREGATOR_HEALTH_BIND") or None,
            access_keys=AccessKeys.parse(env["OSAGO_ACCESS_TOKEN_KEYS"])
            if env.get("OSAGO_ACCESS_TOKEN_KEYS")
            else None,
            access_token_ttl_s=env_float(env, "OSAGO_ACCESS_TOKEN_TTL_S", cls.access_token_ttl_s),
            create_rate_per_s=env_float(env, "OSAGO_CREATE_RATE_PER_S", cls.create_rate_per_s),
            create_burst=env_int(env, "OSAGO_CREATE_BURST", cls.create_burst),
            customer_create_per_min=env_float(env, "OSAGO_CUSTOMER_CREATE_PER_MIN", cls.customer_create_per_min),
            customer_create_burst=env_int(env, "OSAGO_CUSTOMER_CREATE_BURST", cls.customer_create_burst),
            max_streams=env_int(env, "OSAGO_MAX_STREAMS", cls.max_streams),
            max_streams_per_client=env_int(env, "OSAGO_MAX_STREAMS_PER_CLIENT", cls.max_streams_per_client),
            max_message_bytes=env_int(env, "OSAGO_MAX_MESSAGE_BYTES", cls.max_message_bytes),
            personal_data_retention_s=env_float(env, "OSAGO_PERSONAL_DATA_RETENTION_S", cls.personal_data_retention_s),
            purge_interval_s=env_float(env, "OSAGO_PURGE_INTERVAL_S", cls.purge_interval_s),
            metrics=MetricsEndpoint.from_env(env),
        )
        settings = replace(settings, **overrides)
        if settings.tls is not None and settings.access_keys is None:
            raise SettingsError("OSAGO_ACCESS_TOKEN_KEYS is required with TLS: every instance must share the keys")
        if settings.jwt_bind and (settings.tls is None or settings.jwt is None):
            raise SettingsError("OSAGO_AGGREGATOR_JWT_BIND needs TLS and OSAGO_JWT_JWKS")
        if (
            min(settings.create_rate_per_s, settings.customer_create_per_min) <= 0
            or min(
                settings.create_burst,
                settings.customer_create_burst,
                settings.max_streams,
                settings.max_streams_per_client,
            )
            < 1
        ):
            raise SettingsError("OSAGO_CREATE_*, OSAGO_CUSTOMER_CREATE_* and OSAGO_MAX_STREAMS* must be positive")
        if not 0 < settings.access_token_ttl_s <= 86400:
            raise SettingsError("OSAGO_ACCESS_TOKEN_TTL_S must be between 0 and 86400 seconds")
        if settings.personal_data_retention_s <= 0 or settings.purge_interval_s <= 0:
            raise SettingsError("OSAGO_PERSONAL_DATA_RETENTION_S and OSAGO_PURGE_INTERVAL_S must be positive")
        if not settings.gateways:
            raise SettingsError("OSAGO_GATEWAYS is required (id=host:port,...)")
        if not 0 < settings.session_limit_s <= 600:
            raise SettingsError("OSAGO_SESSION_LIMIT_S must be between 0 and 600 seconds")
        if bool(settings.postgres_url) != bool(settings.redis_url):
            raise SettingsError("OSAGO_POSTGRES_URL and OSAGO_REDIS_URL go together: set both or neither")
        if not 1 <= settings.postgres_pool <= 1000:
            raise SettingsError("OSAGO_POSTGRES_POOL must be between 1 and 1000 connections")
        if settings.gateway_streams < 0 or settings.gateway_stream_asks < 1:
            raise SettingsError(
                "OSAGO_GATEWAY_STREAMS must be 0 (a call per ask) or more, OSAGO_GATEWAY_STREAM_ASKS at least 1"
            )
        if settings.max_sessions < 0:
            raise SettingsError("OSAGO_MAX_SESSIONS must be 0 (no cap) or a positive number of sessions")
        if settings.shed_loop_lag_s < 0:
            raise SettingsError("OSAGO_SHED_LOOP_LAG_S must be 0 (not watched) or a positive number of seconds")
        if not 0 <= settings.shed_queue_wait_s <= 30:
            raise SettingsError("OSAGO_SHED_QUEUE_WAIT_S must be 0 (not watched) or up to 30 seconds")
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


def _jwt(env: Mapping[str, str]) -> VerifierConfig | None:
    """The bearer-token check (osago_common.service_tokens), when a JWKS file is given."""
    path = env.get("OSAGO_JWT_JWKS")
    if not path:
        return None
    issuers = tuple(i.strip() for i in env_str(env, "OSAGO_JWT_ISSUERS", "core-app").split(",") if i.strip())
    return VerifierConfig(
        jwks_path=Path(path),
        audience=env_str(env, "OSAGO_JWT_AUDIENCE", DEFAULT_AUDIENCE),
        issuers=issuers,
        max_lifetime_s=env_float(env, "OSAGO_JWT_MAX_LIFETIME_S", 3600.0),
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
