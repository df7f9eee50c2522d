"""Shared fixtures: the whole mesh on real localhost ports, in this test's event loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from google.protobuf import json_format
from osago.v1 import application_pb2

from osago_mesh.local import LocalMesh, start_mesh
from osago_common.clock import FakeClock

Mesh = LocalMesh

__all__ = ["EXAMPLES", "Mesh", "load_example", "serve_app", "start_mesh"]

# Unit tests (not marked `functional`) fail when they bind a socket or start a process.
pytest_plugins = ["tests.server_guard"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def load_example(name: str = "moscow-young-driver") -> application_pb2.Application:
    app = application_pb2.Application()
    json_format.Parse((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"), app)
    return app


@pytest.fixture
async def mesh() -> AsyncIterator[LocalMesh]:
    async with start_mesh() as running:
        yield running


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Serves `app` (a stand-in insurer, bridge, ...) on a free localhost port; yields its
    "http://127.0.0.1:PORT"."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
