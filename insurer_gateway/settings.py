"""The gateway's settings: one frozen dataclass, read from an injectable environment.

| variable | default | meaning |
|---|---|---|
| OSAGO_GATEWAY_INSURER | required | the insurer's id, e.g. "alfa" |
| OSAGO_GATEWAY_INSURER_NAME | dev catalogue's | display name put on quotes (required for an insurer the dev catalogue does not list) |
| OSAGO_GATEWAY_DIALECT | dev catalogue's | insurer API dialect: "rest" or "calc" (create, then poll), or "push" (the insurer calls back) (required likewise) |
| OSAGO_GATEWAY_BASE_URL | required | the insurer API's base URL |
| OSAGO_GATEWAY_BIND | 127.0.0.1:0 | gRPC listen address (port 0 picks a free port) |
| OSAGO_GATEWAY_HTTP_TIMEOUT_S | 5.0 | total timeout of every HTTP call (connect + read) |
| OSAGO_GATEWAY_HTTP_MAX_CONNECTIONS | 1000 | HTTP connection pool size toward the insurer |
| OSAGO_GATEWAY_POLL_INTERVAL_S | 1.0 | poll interval when the insurer gives no hint |
| OSAGO_GATEWAY_MIN_POLL_INTERVAL_S | 0.01 | lower bound of any poll interval |
| OSAGO_GATEWAY_MAX_POLL_INTERVAL_S | 5.0 | upper bound of a poll interval, but for hints that have proved right and Retry-After; the pace after the vague-hint schedule |
| OSAGO_GATEWAY_PENDING_HEARTBEAT_S | 5.0 | least time between two "pending" updates |
| OSAGO_GATEWAY_MAX_CALL_S | 120.0 | deadline of a RequestOffer call that carries none |
| OSAGO_GATEWAY_READY_WINDOW | 100 | offers remembered to estimate the insurer's time-to-offer (first poll without hint, the vague-hint schedule) |
| OSAGO_GATEWAY_VAGUE_POLL_QUANTILES | 0.05,0.95 | for an insurer whose hints are vague: poll at these quantiles of its learned time-to-offer (insurer_gateway.polling) |
| OSAGO_GATEWAY_VAGUE_POLL_MAX_GAP_S | 1.0 | ...and never more than this apart (0: no limit) |
| OSAGO_GATEWAY_BREAKER_WINDOW_TYPE | count | breaker sliding window: "count" (last N calls) or "time" (last N seconds) |
| OSAGO_GATEWAY_BREAKER_WINDOW | 20 | breaker window size: calls, or seconds for a time window |
| OSAGO_GATEWAY_BREAKER_MIN_CALLS | 10 | calls in the window before the breaker may open |
| OSAGO_GATEWAY_BREAKER_FAILURE_RATE | 0.5 | failure rate (0–1] that opens the breaker |
| OSAGO_GATEWAY_BREAKER_SLOW_CALL_RATE | 1.0 | slow-call rate (0–1] that opens the breaker |
| OSAGO_GATEWAY_BREAKER_SLOW_CALL_S | 4.0 | an HTTP call at least this long is slow |
| OSAGO_GATEWAY_BREAKER_OPEN_S | 10.0 | how long an open breaker fails calls fast before probing |
| OSAGO_GATEWAY_BREAKER_HALF_OPEN_PROBES | 2 | probe calls let through when half-open |
| OSAGO_GATEWAY_RATE_LIMIT_PER_S | 50.0 | the insurer's quota: HTTP calls per second, all replicas together |
| OSAGO_GATEWAY_RATE_LIMIT_BURST | 100 | calls the quota allows at once |
| OSAGO_GATEWAY_RETRY_MAX_ATTEMPTS | 3 | attempts per HTTP call, the first included (1: no retries) |
| OSAGO_GATEWAY_RETRY_BASE_S | 0.1 | backoff base: retry n waits uniform(0, min(cap, base·2^n)) |
| OSAGO_GATEWAY_RETRY_CAP_S | 2.0 | backoff cap |
| OSAGO_GATEWAY_RETRY_BUDGET_RATIO | 0.2 | retries allowed per call made (in the budget window) |
| OSAGO_GATEWAY_RETRY_BUDGET_MIN_PER_S | 1.0 | retries per second always allowed, however few the calls |
| OSAGO_GATEWAY_RETRY_BUDGET_WINDOW_S | 10.0 | the retry budget's sliding window |
| OSAGO_GATEWAY_MAX_IN_FLIGHT | 200 | bulkhead: concurrent HTTP calls to the insurer; beyond it a call fails at once |
| OSAGO_REDIS_URL | unset | Redis shared by the replicas for the global quota (unset: a quota per process) |
| OSAGO_GATEWAY_REDIS_TIMEOUT_S | 0.25 | connect and reply timeout of Redis calls (then the process's own quota is used) |
| OSAGO_GATEWAY_REDIS_RETRY_S | 1.0 | after a Redis failure, how long the process's own quota is used before trying Redis again |
| OSAGO_GATEWAY_CALLBACK_BIND | 127.0.0.1:0 | "push" insurers: the HTTP listen address of the callback endpoint, `POST /callbacks/<insurer id>` |
| OSAGO_GATEWAY_CALLBACK_BASE_URL | this replica's address | "push": the public base URL insurers call back at (`<base>/callbacks/<insurer id>` is given them); required when the callback endpoint listens on all interfaces |
| OSAGO_GATEWAY_CALLBACK_SECRET | required for "push" | the secret shared with the insurer, which signs its callbacks (at least 16 characters) |
| OSAGO_GATEWAY_CALLBACK_WINDOW_S | 300 | a callback's timestamp must lie this close to now; a callback replayed within it is refused |
| OSAGO_GATEWAY_CALLBACK_KEEP_S | 600 | how long a callback's outcome is kept for a stream that asks later (re-routed, resumed) |
| OSAGO_GATEWAY_CALLBACK_POLL_FACTOR | 2.0 | the safety-net poll comes this many times the insurer's recent time-to-offer p95 after the create |
| OSAGO_GATEWAY_CALLBACK_POLL_MIN_S | 1.0 | ...and never sooner than this |
| OSAGO_GATEWAY_CALLBACK_POLL_DEFAULT_S | 30.0 | ...or this long after it until 20 times-to-offer are known |
| OSAGO_METRICS_PORT / OSAGO_METRICS_HOST | unset (none) / 127.0.0.1 | Prometheus metrics at `/metrics` on their own port (osago_common.metrics; 0: a free one) |
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from insurer_gateway.dialects import CALLBACK_DIALECTS, DIALECTS
from insurer_gateway.ratelimit import RateLimitConfig
from insurer_gateway.retry import RetryPolicy
from osago_common import insurers
from osago_common.breaker import BreakerConfig
from osago_common.env import SettingsError, env_float, env_int, env_str
from osago_common.metrics import MetricsEndpoint
from osago_common.tls import TlsFiles, tls_from_env


@dataclass(frozen=True)
class GatewaySettings:
    insurer_id: str
    insurer_name: str
    # Insurer API dialect, a key of insurer_gateway.dialects.DIALECTS.
    dialect: str
    # The insurer API's base URL, e.g. "http://127.0.0.1:8080/insurers/alfa".
    base_url: str
    bind: str = "127.0.0.1:0"
    # Total timeout of every HTTP call; a call never runs past the RPC deadline either.
    http_timeout_s: float = 5.0
    http_max_connections: int = 1000
    # Poll interval without a hint from the insurer; it grows by `poll_backoff` per hintless poll.
    default_poll_interval_s: float = 1.0
    max_poll_interval_s: float = 5.0
    min_poll_interval_s: float = 0.01
    poll_backoff: float = 1.5
    # Least time between two "pending" updates on one stream.
    pending_heartbeat_s: float = 5.0
    # When the next regular poll would come after the deadline, one last poll is made this long
    # before it.
    final_poll_lead_s: float = 0.25
    # The stream ends this long before the RPC deadline, so its last message reaches the caller.
    deadline_margin_s: float = 0.05
    # The deadline of a RequestOffer call that carries none.
    max_call_s: float = 120.0
    # Observed time-to-offer of this many recent offers; their median paces the first poll of
    # an application the insurer gave no hint for, their quantiles the polls of one whose hints
    # are vague (a hundred: twenty made that schedule jump from one draw to the next).
    ready_window: int = 100
    # An insurer whose hints are vague is polled at these quantiles of its learned time-to-offer,
    # never more than `vague_poll_max_gap_s` apart (0: no limit; a wider gap is split evenly):
    # see insurer_gateway.polling. The default, from its 5th to its 95th percentile every second
    # at most, keeps the detection delay's p95 under 1 s with the fewest polls; the trade-off
    # between requests and delay, and other points on it: `osago bench polling`,
    # docs/BENCHMARKS.md.
    vague_poll_quantiles: tuple[float, ...] = (0.05, 0.95)
    vague_poll_max_gap_s: float = 1.0
    # Circuit breaker (see osago_common.breaker): window type and size, when it opens, how
    # long it stays open, how many probes it lets through half-open.
    breaker_window_type: str = "count"
    breaker_window: int = 20
    breaker_min_calls: int = 10
    breaker_failure_rate: float = 0.5
    breaker_slow_call_rate: float = 1.0
    breaker_slow_call_s: float = 4.0
    breaker_open_s: float = 10.0
    breaker_half_open_probes: int = 2
    # The insurer's quota, shared by every replica through Redis when `redis_url` is set.
    rate_limit_per_s: float = 50.0
    rate_limit_burst: int = 100
    # Retries of transient failures: attempts (the first included), full-jitter backoff, and a
    # budget of `ratio` retries per call plus `min_per_s` per second over a sliding window.
    retry_max_attempts: int = 3
    retry_base_s: float = 0.1
    retry_cap_s: float = 2.0
    retry_budget_ratio: float = 0.2
    retry_budget_min_per_s: float = 1.0
    retry_budget_window_s: float = 10.0
    # Bulkhead: HTTP calls in flight to the insurer at most; one more fails at once.
    max_in_flight: int = 200
    redis_url: str | None = None
    # Redis calls time out after `redis_timeout_s`; after a failure the process's own quota is
    # used for `redis_retry_s` before Redis is tried again.
    redis_timeout_s: float = 0.25
    redis_retry_s: float = 1.0
    # Insurers that call back ("push"): where the callback endpoint listens, the public base URL
    # the insurer is given (None: this replica's own address), the shared secret signing the
    # callbacks, the timestamp window (and replay memory), how long an outcome is kept.
    callback_bind: str = "127.0.0.1:0"
    callback_base_url: str | None = None
    callback_secret: str | None = dataclasses.field(default=None, repr=False)
    callback_window_s: float = 300.0
    callback_keep_s: float = 600.0
    # The safety-net poll for a callback that never came: `callback_poll_factor` × the p95 of the
    # insurer's recent times-to-offer after the create, at least `callback_poll_min_s`;
    # `callback_poll_default_s` until 20 times are known. Later ones back off by `poll_backoff`,
    # and one last poll comes just before the deadline.
    callback_poll_factor: float = 2.0
    callback_poll_min_s: float = 1.0
    # The default is half a 60 s session: a safety-net poll is paid for by every application whose
    # callback is slower than it, so before anything is learned it waits long (10 s cost an
    # insurer with an 8 s median a poll on a third of its applications).
    callback_poll_default_s: float = 30.0
    # mTLS (osago_common.tls): only clients with a certificate our CA issued (the aggregator)
    # may call; None: the dev mode, plaintext.
    tls: TlsFiles | None = None
    # Plaintext grpc.health.v1 alone, for probes that cannot speak TLS.
    health_bind: str | None = None
    # Where Prometheus scrapes /metrics (osago_common.metrics); no port: nowhere.
    metrics: MetricsEndpoint = dataclasses.field(default_factory=MetricsEndpoint)

    @property
    def callbacks(self) -> bool:
        """Whether the insurer calls back (its dialect's property)."""
        return self.dialect in CALLBACK_DIALECTS

    def __post_init__(self) -> None:
        if not self.insurer_id:
            raise SettingsError("insurer_id must not be empty")
        if self.dialect not in DIALECTS:
            raise SettingsError(f"unknown dialect {self.dialect!r} for {self.insurer_id}; known: {', '.join(DIALECTS)}")
        if not self.base_url.startswith(("http://", "https://")):
            raise SettingsError(f"base URL must be http(s), got {self.base_url!r}")
        positive = (
            "http_timeout_s",
            "default_poll_interval_s",
            "max_poll_interval_s",
            "min_poll_interval_s",
            "pending_heartbeat_s",
            "max_call_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if self.min_poll_interval_s > self.max_poll_interval_s:
            raise SettingsError("min_poll_interval_s must not exceed max_poll_interval_s")
        if self.poll_backoff < 1.0:
            raise SettingsError("poll_backoff must be at least 1.0")
        if not self.vague_poll_quantiles or not all(0 < q <= 1 for q in self.vague_poll_quantiles):
            raise SettingsError("vague_poll_quantiles must be one or more numbers in (0, 1]")
        if self.vague_poll_max_gap_s < 0:
            raise SettingsError("vague_poll_max_gap_s must not be negative")
        if self.http_max_connections < 1:
            raise SettingsError("http_max_connections must be at least 1")
        if self.final_poll_lead_s < 0 or self.deadline_margin_s < 0:
            raise SettingsError("final_poll_lead_s and deadline_margin_s must not be negative")
        for name in ("ready_window", "max_in_flight"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1")
        if self.retry_budget_ratio < 0 or self.retry_budget_min_per_s < 0:
            raise SettingsError("retry_budget_ratio and retry_budget_min_per_s must not be negative")
        for name in ("retry_budget_window_s", "redis_timeout_s", "redis_retry_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError("redis_url must be a redis://, rediss:// or unix:// URL")
        self._check_callbacks()
        try:  # the primitives check their own thresholds
            self.breaker_config()
            self.rate_limit_config()
            self.retry_policy()
        except ValueError as exc:
            raise SettingsError(str(exc)) from None

    def _check_callbacks(self) -> None:
        for name in ("callback_window_s", "callback_keep_s", "callback_poll_min_s", "callback_poll_default_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if self.callback_poll_factor < 1.0:
            raise SettingsError("callback_poll_factor must be at least 1.0")
        if self.callback_base_url is not None and not self.callback_base_url.startswith(("http://", "https://")):
            raise SettingsError("callback_base_url must be an http(s) URL")
        if not self.callbacks:
            return
        if not self.callback_secret or len(self.callback_secret) < MIN_SECRET_CHARS:
            raise SettingsError(
                f"OSAGO_GATEWAY_CALLBACK_SECRET of at least {MIN_SECRET_CHARS} characters is required: "
                f"{self.insurer_id}'s dialect {self.dialect} calls back"
            )
        host = self.callback_bind.rpartition(":")[0].strip("[]")
        if self.callback_base_url is None and host in ("", "0.0.0.0", "::"):  # noqa: S104 - refused, not bound
            raise SettingsError(
                "OSAGO_GATEWAY_CALLBACK_BASE_URL is required when the callback endpoint listens on all interfaces"
            )

    def breaker_config(self) -> BreakerConfig:
        if self.breaker_window_type not in ("count", "time"):
            raise SettingsError(f"breaker_window_type must be 'count' or 'time', not {self.breaker_window_type!r}")
        return BreakerConfig(
            window_type="count" if self.breaker_window_type == "count" else "time",
            window_size=self.breaker_window,
            minimum_calls=self.breaker_min_calls,
            failure_rate_threshold=self.breaker_failure_rate,
            slow_call_rate_threshold=self.breaker_slow_call_rate,
            slow_call_duration_s=self.breaker_slow_call_s,
            open_duration_s=self.breaker_open_s,
            half_open_probes=self.breaker_half_open_probes,
        )

    def rate_limit_config(self) -> RateLimitConfig:
        return RateLimitConfig(rate_per_s=self.rate_limit_per_s, burst=self.rate_limit_burst)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(base_s=self.retry_base_s, cap_s=self.retry_cap_s, max_attempts=self.retry_max_attempts)

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> GatewaySettings:
        """Reads the OSAGO_GATEWAY_* variables; `overrides` (field names) win over them."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise SettingsError(f"unknown settings: {', '.join(sorted(unknown))}")

        def text(field: str, variable: str, default: str | None = None) -> str:
            if field in overrides:
                return str(overrides[field])
            return env_str(env, variable, default)

        insurer_id = text("insurer_id", "OSAGO_GATEWAY_INSURER")
        # The dev catalogue only fills in what the configuration leaves out.
        known = insurers.BY_ID.get(insurer_id)
        fields: dict[str, Any] = {
            "insurer_id": insurer_id,
            "insurer_name": text("insurer_name", "OSAGO_GATEWAY_INSURER_NAME", known.name if known else None),
            "dialect": text("dialect", "OSAGO_GATEWAY_DIALECT", known.dialect if known else None),
            "base_url": text("base_url", "OSAGO_GATEWAY_BASE_URL").rstrip("/"),
            "bind": text("bind", "OSAGO_GATEWAY_BIND", cls.bind),
            "http_timeout_s": env_float(env, "OSAGO_GATEWAY_HTTP_TIMEOUT_S", cls.http_timeout_s),
            "http_max_connections": env_int(env, "OSAGO_GATEWAY_HTTP_MAX_CONNECTIONS", cls.http_max_connections),
            "default_poll_interval_s": env_float(env, "OSAGO_GATEWAY_POLL_INTERVAL_S", cls.default_poll_interval_s),
            "min_poll_interval_s": env_float(env, "OSAGO_GATEWAY_MIN_POLL_INTERVAL_S", cls.min_poll_interval_s),
            "max_poll_interval_s": env_float(env, "OSAGO_GATEWAY_MAX_POLL_INTERVAL_S", cls.max_poll_interval_s),
            "pending_heartbeat_s": env_float(env, "OSAGO_GATEWAY_PENDING_HEARTBEAT_S", cls.pending_heartbeat_s),
            "max_call_s": env_float(env, "OSAGO_GATEWAY_MAX_CALL_S", cls.max_call_s),
            "breaker_window_type": text(
                "breaker_window_type", "OSAGO_GATEWAY_BREAKER_WINDOW_TYPE", cls.breaker_window_type
            ),
            "redis_url": env.get("OSAGO_REDIS_URL") or None,
            "callback_bind": text("callback_bind", "OSAGO_GATEWAY_CALLBACK_BIND", cls.callback_bind),
            "callback_base_url": (env.get("OSAGO_GATEWAY_CALLBACK_BASE_URL") or "").rstrip("/") or None,
            "callback_secret": env.get("OSAGO_GATEWAY_CALLBACK_SECRET") or None,
            "tls": tls_from_env(env),
            "health_bind": env.get("OSAGO_GATEWAY_HEALTH_BIND") or None,
            "metrics": MetricsEndpoint.from_env(env),
            "vague_poll_quantiles": _quantiles(env, "OSAGO_GATEWAY_VAGUE_POLL_QUANTILES", cls.vague_poll_quantiles),
        }
        for field, variable in _NUMBERS.items():
            default = getattr(cls, field)
            if isinstance(default, int):
                fields[field] = env_int(env, variable, default)
            else:
                fields[field] = env_float(env, variable, default)
        fields.update(overrides)
        return cls(**fields)


def _quantiles(env: Mapping[str, str], variable: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """A comma-separated list of quantiles, e.g. "0.2,0.5,0.8,0.95" (checked by the settings)."""
    raw = env.get(variable, "").strip()
    if not raw:
        return default
    try:
        return tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise SettingsError(f"{variable} must be comma-separated numbers, got {raw!r}") from None


# Numeric settings read by name from the environment, each with its field's default.
_NUMBERS: dict[str, str] = {
    "ready_window": "OSAGO_GATEWAY_READY_WINDOW",
    "vague_poll_max_gap_s": "OSAGO_GATEWAY_VAGUE_POLL_MAX_GAP_S",
    "breaker_window": "OSAGO_GATEWAY_BREAKER_WINDOW",
    "breaker_min_calls": "OSAGO_GATEWAY_BREAKER_MIN_CALLS",
    "breaker_failure_rate": "OSAGO_GATEWAY_BREAKER_FAILURE_RATE",
    "breaker_slow_call_rate": "OSAGO_GATEWAY_BREAKER_SLOW_CALL_RATE",
    "breaker_slow_call_s": "OSAGO_GATEWAY_BREAKER_SLOW_CALL_S",
    "breaker_open_s": "OSAGO_GATEWAY_BREAKER_OPEN_S",
    "breaker_half_open_probes": "OSAGO_GATEWAY_BREAKER_HALF_OPEN_PROBES",
    "rate_limit_per_s": "OSAGO_GATEWAY_RATE_LIMIT_PER_S",
    "rate_limit_burst": "OSAGO_GATEWAY_RATE_LIMIT_BURST",
    "retry_max_attempts": "OSAGO_GATEWAY_RETRY_MAX_ATTEMPTS",
    "retry_base_s": "OSAGO_GATEWAY_RETRY_BASE_S",
    "retry_cap_s": "OSAGO_GATEWAY_RETRY_CAP_S",
    "retry_budget_ratio": "OSAGO_GATEWAY_RETRY_BUDGET_RATIO",
    "retry_budget_min_per_s": "OSAGO_GATEWAY_RETRY_BUDGET_MIN_PER_S",
    "retry_budget_window_s": "OSAGO_GATEWAY_RETRY_BUDGET_WINDOW_S",
    "max_in_flight": "OSAGO_GATEWAY_MAX_IN_FLIGHT",
    "redis_timeout_s": "OSAGO_GATEWAY_REDIS_TIMEOUT_S",
    "redis_retry_s": "OSAGO_GATEWAY_REDIS_RETRY_S",
    "callback_window_s": "OSAGO_GATEWAY_CALLBACK_WINDOW_S",
    "callback_keep_s": "OSAGO_GATEWAY_CALLBACK_KEEP_S",
    "callback_poll_factor": "OSAGO_GATEWAY_CALLBACK_POLL_FACTOR",
    "callback_poll_min_s": "OSAGO_GATEWAY_CALLBACK_POLL_MIN_S",
    "callback_poll_default_s": "OSAGO_GATEWAY_CALLBACK_POLL_DEFAULT_S",
}
# A callback secret shorter than this is refused: it would be guessable.
MIN_SECRET_CHARS = 16
