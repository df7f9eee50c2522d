"""`osago up`: the whole mesh on one machine, each service its own process, real gRPC and HTTP
between them; stops everything on Ctrl-C / SIGTERM and leaves no process behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from osago_common import insurers
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


async def run_mesh(options: MeshOptions) -> int:
    profiles = insurers.first(options.insurers)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("OSAGO_")}
    base_env["PYTHONUNBUFFERED"] = "1"
    for name in ("OSAGO_LOG_LEVEL",):
        if name in os.environ:
            base_env[name] = os.environ[name]
    children: list[Child] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def start(name: str, args: list[str], env: dict[str, str]) -> Child:
        child = await Child.spawn(name, args, {**base_env, **env})
        children.append(child)
        await child.listening()
        return child

    try:
        sim_env = {
            "OSAGO_SIM_INSURERS": str(options.insurers),
            "OSAGO_SIM_TIME_SCALE": str(options.time_scale),
            "OSAGO_SIM_HOST": options.host,
            "OSAGO_SIM_PORT": str(options.sim_port),
        }
        if options.seed is not None:
            sim_env["OSAGO_SIM_SEED"] = str(options.seed)
        sim = await start("sim", ["sim"], sim_env)
        await wait_http_ok(f"{sim.address}/_sim/health")
        gateways = await asyncio.gather(
            *(
                start(
                    f"gateway {p.insurer_id}",
                    ["gateway"],
                    {
                        "OSAGO_GATEWAY_INSURER": p.insurer_id,
                        "OSAGO_GATEWAY_BASE_URL": f"{sim.address}/insurers/{p.insurer_id}",
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
        print(f"ready aggregator={aggregator.address} sim={sim.address} gateways={len(gateways)}", flush=True)

        exited = [asyncio.create_task(c.process.wait()) for c in children]
        stopping = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopping, *exited], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        for task in exited:
            task.cancel()
        if stopping in done:
            return 0
        dead = [c.name for c in children if c.process.returncode is not None]
        print(f"osago up: {', '.join(dead)} exited; stopping the mesh", file=sys.stderr)
        return 1
    except (RuntimeError, OSError) as error:
        print(f"osago up: {error}", file=sys.stderr)
        return 1
    finally:
        await asyncio.gather(*(c.stop() for c in reversed(children)), return_exceptions=True)
        print("stopped", flush=True)
