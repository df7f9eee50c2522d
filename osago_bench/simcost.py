"""`osago bench sim`: the insurer simulator's CPU per HTTP request under a fixed request mix.

The load benchmark's figure for the simulator (its CPU over the HTTP requests it answered) moves
with the mix of requests: a create prices an application, a poll only looks it up, so a policy
that polls less raises the cost per request while the cost per session falls. This one holds the
mix still: `--concurrency` clients, each creating an application at the next polled insurer of
the catalogue (round robin over the first `--insurers`, those that call back left out) and then
polling it `--polls` times 20 ms apart whatever it answers, for `--seconds`; the simulator's CPU
time (user + system, /proc/PID/stat) over the requests made.

It starts its own simulator process (`osago sim --insurer-ports`: each insurer on a port of its
own, served by the lean server, as in every mesh `osago up` starts; `own_ports=False`: under the
shared port, served by aiohttp), or measures a running one
(`--sim URL --pid PID`), e.g. another checkout's, to compare two versions on the same machine
back to back; the clients call the `base_url` each insurer is listed with.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from osago.v1 import application_pb2

from insurer_gateway.dialects import DIALECTS, Rejected
from insurer_gateway.exchange import TransportError
from insurer_gateway.transport import AiohttpTransport
from osago_bench.procstat import cpu_seconds
from osago_common.clock import SYSTEM_CLOCK
from osago_common.dates import default_policy_start, moscow_today
from osago_mesh.child import Child

POLL_PAUSE_S = 0.02


@dataclass(frozen=True)
class SimCostConfig:
    seconds: float = 15.0
    concurrency: int = 100
    polls: int = 10
    insurers: int = 12
    sim: str | None = None
    pid: int | None = None
    own_ports: bool = True  # the simulator it starts: each insurer on its own port


async def measure(config: SimCostConfig, application: application_pb2.Application) -> dict[str, Any]:
    """Runs the fixed mix against the simulator; what it cost."""
    child: Child | None = None
    sim, pid = config.sim, config.pid
    if sim is None:
        args = ["sim", "--insurers", str(config.insurers), "--port", "0"]
        env = dict(os.environ, OSAGO_SIM_INSURER_PORTS=str(config.own_ports).lower())
        child = await Child.spawn("sim", args, env)
        sim, pid = await child.listening(), child.process.pid
    assert sim is not None and pid is not None
    try:
        return await _drive(config, application, sim, pid)
    finally:
        if child is not None:
            await child.stop()


async def _drive(config: SimCostConfig, application: application_pb2.Application, sim: str, pid: int) -> dict[str, Any]:
    if not application.policy_start_date:
        application.policy_start_date = default_policy_start(moscow_today(SYSTEM_CLOCK)).isoformat()
    start = date.fromisoformat(application.policy_start_date)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=config.concurrency)) as http:
        async with http.get(f"{sim}/_sim/insurers") as response:
            listed = (await response.json())[: config.insurers]
        polled = [i for i in listed if i["dialect"] != "push"]
        own_ports = all(urlsplit(i["base_url"]).port != urlsplit(sim).port for i in polled)
        transports = [(DIALECTS[i["dialect"]], AiohttpTransport(http, i["base_url"])) for i in polled]
        requests = failed = 0
        stop = 0.0

        async def client(k: int) -> None:
            nonlocal requests, failed
            n = 0
            while time.monotonic() < stop:
                dialect, transport = transports[(k + n) % len(transports)]
                n += 1
                ref = f"simcost-{k}-{n}-{time.monotonic_ns()}"
                try:
                    answer = await transport(dialect.create_request(ref, ref, application, start), 5.0)
                    requests += 1
                    created = dialect.parse_create(answer)
                    if isinstance(created, Rejected):
                        continue
                    call = dialect.poll_request(created.application_id)
                    for _ in range(config.polls):
                        await asyncio.sleep(POLL_PAUSE_S)
                        await transport(call, 5.0)
                        requests += 1
                except TransportError:
                    failed += 1

        before = cpu_seconds(pid)
        began = time.monotonic()
        stop = began + config.seconds
        await asyncio.gather(*(client(k) for k in range(config.concurrency)))
        window = time.monotonic() - began
        cpu = cpu_seconds(pid) - before
    return {
        "requests": requests,
        "failed": failed,
        "window_s": round(window, 1),
        "requests_per_s": round(requests / window),
        "sim_cpu_s": round(cpu, 4),
        "sim_ms_per_request": round(cpu * 1000 / requests, 4) if requests else None,
        "config": {
            "seconds": config.seconds,
            "concurrency": config.concurrency,
            "polls": config.polls,
            # Where the insurers were called, as the simulator listed them.
            "server": "own ports" if own_ports else "shared port",
        },
    }


def line(result: dict[str, Any]) -> str:
    failed = f", {result['failed']} failed" if result["failed"] else ""
    return (
        f"simulator: {result['sim_ms_per_request']} ms CPU per HTTP request ({result['requests']} requests in "
        f"{result['window_s']} s, {result['requests_per_s']}/s, {result['sim_cpu_s']} CPU s; a create and "
        f"{result['config']['polls']} polls per application, {result['config']['concurrency']} clients, "
        f"{result['config']['server']}{failed})"
    )
