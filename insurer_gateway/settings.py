"""The gateway's settings: one frozen dataclass, read from an injectable environment.

| variable | default | meaning |
|---|---|---|
| OSAGO_GATEWAY_INSURER | required | insurer id from the catalogue, e.g. "alfa" |
| OSAGO_GATEWAY_INSURER_NAME | catalogue name | display name put on quotes |
| OSAGO_GATEWAY_DIALECT | catalogue dialect | insurer API dialect: "rest" or "calc" |
| OSAGO_GATEWAY_BASE_URL | required | the insurer API's base URL |
| OSAGO_GATEWAY_BIND | 127.0.0.1:0 | gRPC listen address (port 0 picks a free port) |
| OSAGO_GATEWAY_HTTP_TIMEOUT_S | 5.0 | total timeout of every HTTP call (connect + read) |
| OSAGO_GATEWAY_HTTP_MAX_CONNECTIONS | 1000 | HTTP connection pool size toward the insurer |
| OSAGO_GATEWAY_POLL_INTERVAL_S | 1.0 | poll interval when the insurer gives no hint |
| OSAGO_GATEWAY_MIN_POLL_INTERVAL_S | 0.01 | lower bound of any poll interval |
| OSAGO_GATEWAY_MAX_POLL_INTERVAL_S | 5.0 | upper bound of any poll interval |
| OSAGO_GATEWAY_PENDING_HEARTBEAT_S | 5.0 | least time between two "pending" updates |
| OSAGO_GATEWAY_MAX_CALL_S | 120.0 | deadline of a RequestOffer call that carries none |
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from insurer_gateway.dialects import DIALECTS
from osago_common.env import SettingsError, env_float, env_int, env_str
from osago_common.insurers import BY_ID


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

    def __post_init__(self) -> None:
        if not self.insurer_id:
            raise SettingsError("insurer_id must not be empty")
        if self.dialect not in DIALECTS:
            raise SettingsError(
                f"unknown dialect {self.dialect!r} for {self.insurer_id}; known: {', '.join(DIALECTS)}"
            )
        if not self.base_url.startswith(("http://", "https://")):
            raise SettingsError(f"base URL must be http(s), got {self.base_url!r}")
        positive = ("http_timeout_s", "default_poll_interval_s", "max_poll_interval_s",
                    "min_poll_interval_s", "pending_heartbeat_s", "max_call_s")
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if self.min_poll_interval_s > self.max_poll_interval_s:
            raise SettingsError("min_poll_interval_s must not exceed max_poll_interval_s")
        if self.poll_backoff < 1.0:
            raise SettingsError("poll_backoff must be at least 1.0")
        if self.http_max_connections < 1:
            raise SettingsError("http_max_connections must be at least 1")
        if self.final_poll_lead_s < 0 or self.deadline_margin_s < 0:
            raise SettingsError("final_poll_lead_s and deadline_margin_s must not be negative")

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
        known = BY_ID.get(insurer_id)
        fields: dict[str, Any] = {
            "insurer_id": insurer_id,
            "insurer_name": text(
                "insurer_name", "OSAGO_GATEWAY_INSURER_NAME", known.name if known else None
            ),
            "dialect": text("dialect", "OSAGO_GATEWAY_DIALECT", known.dialect if known else None),
            "base_url": text("base_url", "OSAGO_GATEWAY_BASE_URL").rstrip("/"),
            "bind": text("bind", "OSAGO_GATEWAY_BIND", cls.bind),
            "http_timeout_s": env_float(env, "OSAGO_GATEWAY_HTTP_TIMEOUT_S", cls.http_timeout_s),
            "http_max_connections": env_int(
                env, "OSAGO_GATEWAY_HTTP_MAX_CONNECTIONS", cls.http_max_connections
            ),
            "default_poll_interval_s": env_float(
                env, "OSAGO_GATEWAY_POLL_INTERVAL_S", cls.default_poll_interval_s
            ),
            "min_poll_interval_s": env_float(
                env, "OSAGO_GATEWAY_MIN_POLL_INTERVAL_S", cls.min_poll_interval_s
            ),
            "max_poll_interval_s": env_float(
                env, "OSAGO_GATEWAY_MAX_POLL_INTERVAL_S", cls.max_poll_interval_s
            ),
            "pending_heartbeat_s": env_float(
                env, "OSAGO_GATEWAY_PENDING_HEARTBEAT_S", cls.pending_heartbeat_s
            ),
            "max_call_s": env_float(env, "OSAGO_GATEWAY_MAX_CALL_S", cls.max_call_s),
        }
        fields.update(overrides)
        return cls(**fields)
