"""`osago up`: the whole mesh on one machine, each service its own process, real gRPC and HTTP
between them; stops everything on Ctrl-C / SIGTERM and leaves no process behind."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from osago_common import insurers
from web_bridge.envoy_config import EnvoyProcess, render_envoy_config, start_envoy
from osago_common.process import spawn_bound, stop_process

STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class MeshOptions:
    insurers: int = 12
    time_scale: float = 1.0
    host: str = "127.0.0.1"
    aggregator_port: int = 50050
    sim_port: int = 0
    page_port: int = 8080
    session_limit_s: float | None = None
    seed: int | None = None


class Child:
    """One service process; `address` is what it printed as `listening ADDRESS`."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.address = ""
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def spawn(cls, name: str, args: list[str], env: dict[str, str]) -> Child:
        # Bound to this process: each service dies with `osago up`, even if it is SIGKILLed.
        process = await spawn_bound(
            sys.executable, "-m", "osago_cli.main", *args,
            env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        )
        return cls(name, process)

    async def listening(self) -> str:
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} exited before listening (code {await self.process.wait()})")
            text = line.decode().strip()
            if text.startswith("listening "):
                self.address = text.split(" ", 1)[1]
                self._drain = asyncio.create_task(self._drain_stdout())
                return self.address

    async def _drain_stdout(self) -> None:
        assert self.process.stdout is not None
        while await self.process.stdout.readline():
            pass

    async def stop(self) -> None:
        await stop_process(self.process, STOP_TIMEOUT_S)
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.gather(self._drain, return_exceptions=True)


async def wait_grpc_serving(target: str, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Waits until grpc.health.v1 reports the server SERVING."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0, wait_for_ready=True)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if loop.time() > deadline:
                raise RuntimeError(f"{target} did not report SERVING within {timeout_s:g} s")
            await asyncio.sleep(0.1)


async def wait_http_ok(url: str, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            if loop.time() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout_s:g} s")
            await asyncio.sleep(0.1)


async def _insurer_urls(sim: str) -> dict[str, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{sim}/_sim/insurers", timeout=aiohttp.ClientTimeout(total=5)) as response:
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


@dataclass
class RunningMesh:
    """Addresses of a mesh started by `process_mesh`, and its processes."""

    sim: str
    gateways: dict[str, str]
    aggregator: str
    page: str | None
    processes: list[asyncio.subprocess.Process]

    def ready_line(self) -> str:
        page = f" page={self.page}" if self.page else ""
        return f"ready aggregator={self.aggregator} sim={self.sim}{page} gateways={len(self.gateways)}"


@contextlib.asynccontextmanager
async def process_mesh(
    options: MeshOptions, *, web: bool = True, env: Mapping[str, str] | None = None
) -> AsyncIterator[RunningMesh]:
    """Starts every service as its own process, each SERVING before the next depends on it;
    stops them all on exit. `env` adds settings (OSAGO_GATEWAY_*, ...) for every service."""
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
            "OSAGO_GATEWAYS": ",".join(f"{p.insurer_id}={g.address}" for p, g in zip(profiles, gateways)),
        }
        if options.session_limit_s is not None:
            aggregator_env["OSAGO_SESSION_LIMIT_S"] = str(options.session_limit_s)
        aggregator = await start("aggregator", ["aggregator"], aggregator_env)
        await wait_grpc_serving(aggregator.address)
        processes = [c.process for c in children]
        page = None
        if web:
            bridge = await start(
                "web_bridge",
                ["bridge"],
                {"OSAGO_BRIDGE_AGGREGATOR": aggregator.address, "OSAGO_BRIDGE_HOST": options.host, "OSAGO_BRIDGE_PORT": "0"},
            )
            await wait_http_ok(f"{bridge.address}/healthz")
            workdir = Path(tempfile.mkdtemp(prefix="osago-up-"))
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            envoy = await stack.enter_async_context(await _start_envoy(options, aggregator.address, bridge.address, workdir))
            page = f"http://{options.host}:{envoy.port}/"
            processes = [c.process for c in children] + [envoy.process]
        yield RunningMesh(
            sim=sim.address,
            gateways={p.insurer_id: g.address for p, g in zip(profiles, gateways)},
            aggregator=aggregator.address,
            page=page,
            processes=processes,
        )


async def _stop_all(children: list[Child]) -> None:
    await asyncio.gather(*(c.stop() for c in reversed(children)), return_exceptions=True)


def _port_or_any(host: str, port: int, what: str) -> int:
    """`port` if it can be bound on `host`, else 0 (any free port) with a warning: the demo comes
    up even where the usual port is taken, and its ready line tells where."""
    if port == 0:
        return 0
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            print(f"osago up: port {port} ({what}) is taken; using a free one", file=sys.stderr)
            return 0
    return port


async def run_mesh(options: MeshOptions) -> int:
    """`osago up`: the mesh until Ctrl-C / SIGTERM, or until one of its processes dies."""
    options = dataclasses.replace(
        options,
        aggregator_port=_port_or_any(options.host, options.aggregator_port, "aggregator"),
        page_port=_port_or_any(options.host, options.page_port, "page"),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with process_mesh(options) as mesh:
            print(mesh.ready_line(), flush=True)
            exited = [asyncio.create_task(p.wait()) for p in mesh.processes]
            stopping = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopping, *exited], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            for task in exited:
                task.cancel()
            if stopping not in done:
                print("osago up: a service exited; stopping the mesh", file=sys.stderr)
                return 1
            return 0
    except (RuntimeError, OSError) as error:
        print(f"osago up: {error}", file=sys.stderr)
        return 1
    finally:
        print("stopped", flush=True)
