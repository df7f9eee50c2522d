"""Shared fixtures: the whole mesh on real localhost ports, in this test's event loop."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psycopg
import pytest
import redis
from aiohttp import web
from google.protobuf import json_format
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from osago.v1 import aggregator_service_pb2, application_pb2, events_pb2

from osago_common import tracing
from osago_common.clock import FakeClock
from osago_mesh.local import LocalMesh, start_mesh
from osago_mesh.servers import postgres_server, redis_server

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
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span ended during the test, from a provider of the test's own (the global one can
    be set only once per process, and is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.set_tracer_provider_for_tests(provider)
    try:
        yield exporter
    finally:
        tracing.set_tracer_provider_for_tests(None)
        provider.shutdown()


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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL server for the whole test session."""
    with postgres_server() as url:
        yield url


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's server; its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A private redis-server for the whole test session."""
    with redis_server() as url:
        yield url


@pytest.fixture
def redis_db(redis_url: str) -> str:
    """The session's Redis, emptied for this test; its URL."""
    with redis.Redis.from_url(redis_url) as client:
        client.flushall()
    return redis_url


# Access tokens of the quote requests tests created, by request id: a test reads a request as its
# creator would, presenting the token its creation returned (tests of isolation use none).
ACCESS_TOKENS: dict[str, str] = {}


def remember(request_id: str, token: str) -> str:
    """Keeps a request's access token (from CreateQuoteRequest or GetQuotes' first answer)."""
    if request_id and token:
        ACCESS_TOKENS[request_id] = token
    return request_id


def access(request_id: str) -> str:
    """The access token of a request a test created ("" for any other)."""
    return ACCESS_TOKENS.get(request_id, "")


def remembered(response: aggregator_service_pb2.GetQuotesResponse) -> events_pb2.QuoteEvent:
    """A GetQuotes answer's event, its access token (set on the first answer) remembered."""
    remember(response.event.request_id, response.access_token)
    return response.event
