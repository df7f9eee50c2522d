"""web_bridge's settings, read from an injectable environment.

| variable | meaning | default |
|---|---|---|
| `OSAGO_BRIDGE_AGGREGATOR` | the aggregator's gRPC target, `host:port`; several instances as `host:port,host:port` or one `dns:///name:port` | required |
| `OSAGO_BRIDGE_HOST` | address the HTTP server binds | `127.0.0.1` |
| `OSAGO_BRIDGE_PORT` | port the HTTP server binds (0: a free one) | `8081` |
| `OSAGO_BRIDGE_STATIC_DIR` | the page's files | the installed package's `web_bridge/static` |
| `OSAGO_BRIDGE_REQUEST_TIMEOUT_S` | deadline of each unary call to the aggregator | `10` |
| `OSAGO_BRIDGE_STREAM_TIMEOUT_S` | deadline of one WebSocket's event stream | `75` |
| `OSAGO_BRIDGE_ALLOWED_ORIGINS` | browser origins besides the page's own that may call the API (CORS, WebSocket), comma-separated | none |
| `OSAGO_BRIDGE_TRUST_FORWARDED` | behind a trusted edge: the client's address is the last `X-Forwarded-For` hop | `false` |
| `OSAGO_BRIDGE_MAX_STREAMS` / `OSAGO_BRIDGE_MAX_STREAMS_PER_CLIENT` | open WebSocket streams in total, and per client address | `5000` / `10` |
| `OSAGO_BRIDGE_SEND_TIMEOUT_S` | a WebSocket client that does not take an event within this long is cut off | `10` |
| `OSAGO_METRICS_PORT` / `OSAGO_METRICS_HOST` | Prometheus metrics at `/metrics` on their own port (osago_common.metrics; 0: a free one) | unset (none) / `127.0.0.1` |
| `OSAGO_TLS_*` / `OSAGO_DEV_INSECURE` | TLS toward the aggregator with this service's client certificate (osago_common.tls) | required |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from osago_common.env import SettingsError, env_flag, env_float, env_int, env_str
from osago_common.metrics import MetricsEndpoint
from osago_common.resources import package_path
from osago_common.tls import TlsFiles, tls_from_env

# The page's files ship inside this package (package data), wherever it is installed.
DEFAULT_STATIC_DIR = package_path("web_bridge", "static")


@dataclass(frozen=True)
class BridgeSettings:
    # The aggregator's gRPC target, "host:port".
    aggregator_target: str
    # Address and port of the HTTP server; port 0 picks a free one.
    host: str = "127.0.0.1"
    port: int = 8081
    # The page's files (index.html and its assets); None means the installed web_bridge/static.
    static_dir: Path | None = None
    # Deadline of each unary call to the aggregator (create, snapshot, health).
    request_timeout_s: float = 10.0
    # Deadline of one WebSocket's event stream: a session lasts at most 60 s, plus slack.
    stream_timeout_s: float = 75.0
    # WebSocket ping interval; a client that does not answer is dropped.
    heartbeat_s: float = 15.0
    # Largest accepted request body; an application is a few kilobytes.
    max_body_bytes: int = 64 * 1024
    # TLS toward the aggregator (this service's client certificate); None: the dev mode.
    tls: TlsFiles | None = None
    # Browser origins besides the page's own that may call the API.
    allowed_origins: tuple[str, ...] = ()
    # Behind a trusted edge, the client's address is the last X-Forwarded-For hop.
    trust_forwarded: bool = False
    # Open WebSocket streams in total and per client address.
    max_streams: int = 5000
    max_streams_per_client: int = 10
    # A WebSocket client that does not take an event within this long is cut off.
    send_timeout_s: float = 10.0
    # Messages a WebSocket client may send (it has nothing to say): more closes the socket.
    max_client_messages: int = 16
    # Where Prometheus scrapes /metrics (osago_common.metrics); no port: nowhere.
    metrics: MetricsEndpoint = field(default_factory=MetricsEndpoint)

    @property
    def page_dir(self) -> Path:
        """Where the page's files are, the default applied."""
        return self.static_dir if self.static_dir is not None else DEFAULT_STATIC_DIR

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> BridgeSettings:
        """Settings from `env`; keyword overrides win (and make their variable optional)."""
        target = overrides.pop("aggregator_target", None) or env_str(env, "OSAGO_BRIDGE_AGGREGATOR")
        static = env.get("OSAGO_BRIDGE_STATIC_DIR")
        settings = cls(
            aggregator_target=target,
            host=env_str(env, "OSAGO_BRIDGE_HOST", cls.host),
            port=env_int(env, "OSAGO_BRIDGE_PORT", cls.port),
            static_dir=Path(static) if static else None,
            request_timeout_s=env_float(env, "OSAGO_BRIDGE_REQUEST_TIMEOUT_S", cls.request_timeout_s),
            stream_timeout_s=env_float(env, "OSAGO_BRIDGE_STREAM_TIMEOUT_S", cls.stream_timeout_s),
            tls=tls_from_env(env),
            allowed_origins=tuple(
                o.strip().rstrip("/") for o in env.get("OSAGO_BRIDGE_ALLOWED_ORIGINS", "").split(",") if o.strip()
            ),
            trust_forwarded=env_flag(env, "OSAGO_BRIDGE_TRUST_FORWARDED"),
            max_streams=env_int(env, "OSAGO_BRIDGE_MAX_STREAMS", cls.max_streams),
            max_streams_per_client=env_int(env, "OSAGO_BRIDGE_MAX_STREAMS_PER_CLIENT", cls.max_streams_per_client),
            send_timeout_s=env_float(env, "OSAGO_BRIDGE_SEND_TIMEOUT_S", cls.send_timeout_s),
            metrics=MetricsEndpoint.from_env(env),
        )
        settings = replace(settings, **overrides)
        settings.check()
        return settings

    def check(self) -> None:
        """Raises SettingsError naming the first setting out of range."""
        if not 0 <= self.port <= 65535:
            raise SettingsError("OSAGO_BRIDGE_PORT must be between 0 and 65535")
        if not self.request_timeout_s > 0:
            raise SettingsError("OSAGO_BRIDGE_REQUEST_TIMEOUT_S must be positive")
        if not self.stream_timeout_s > 0:
            raise SettingsError("OSAGO_BRIDGE_STREAM_TIMEOUT_S must be positive")
        if not self.heartbeat_s > 0 or self.max_body_bytes <= 0:
            raise SettingsError("heartbeat_s and max_body_bytes must be positive")
        if min(self.max_streams, self.max_streams_per_client) < 1 or not self.send_timeout_s > 0:
            raise SettingsError("OSAGO_BRIDGE_MAX_STREAMS* and OSAGO_BRIDGE_SEND_TIMEOUT_S must be positive")
