"""When Redis or Postgres cannot be reached: new sessions are refused with UNAVAILABLE and a clear
message, health turns NOT_SERVING, nothing is half-created, running sessions keep what they have,
and everything comes back by itself when the server returns."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from osago.v1 import aggregator_service_pb2 as pb

from osago_mesh.local import LocalMesh, start_mesh
from tests.conftest import access, load_example, remembered

pytestmark = pytest.mark.functional

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Redis:
    """A redis-server on a fixed port that can be stopped and started again on it."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.dir = Path(tempfile.mkdtemp(prefix="test-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
        )
        with redis.Redis.from_url(self.url) as client:
            for _ in range(500):
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(0.01)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def own_redis() -> Iterator[Redis]:
    server = Redis()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def shared_mesh(postgres_url: str, redis_url: str) -> AsyncIterator[LocalMesh]:
    overrides = {"postgres_url": postgres_url, "redis_url": redis_url}
    async with start_mesh(n=3, time_scale=0.2, aggregator_overrides=overrides) as mesh:
        yield mesh


async def health_becomes(watch: Any, status: int) -> None:
    async for reply in watch:
        if reply.status == status:
            return
    raise AssertionError(f"health never became {status}")


async def refused(mesh: LocalMesh) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.stub.CreateQuoteRequest(pb.CreateQuoteRequestRequest(application=load_example(), fresh=True))
    return caught.value


async def count_requests(postgres_url: str) -> int:
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        cursor = await conn.execute("SELECT count(*) FROM osago_requests")
        row = await cursor.fetchone()
        return int(row[0]) if row else 0


async def test_redis_down_refuses_new_sessions_lets_running_ones_finish_and_recovers(
    postgres_db: str, own_redis: Redis
) -> None:
    async with shared_mesh(postgres_db, own_redis.url) as mesh:
        watch = health_pb2_grpc.HealthStub(mesh.channel).Watch(health_pb2.HealthCheckRequest(service=""))
        await health_becomes(watch, SERVING)
        running = mesh.stub.GetQuotes(pb.GetQuotesRequest(application=load_example(), fresh=True), timeout=30)
        first = await anext(aiter(running))
        remembered(first)
        own_redis.stop()
        await health_becomes(watch, NOT_SERVING)
        error = await refused(mesh)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error.details() == "the quote service's storage is unavailable; please retry in a moment"
        # The session already running goes on to its end: Postgres has it, its caller reads it here.
        rest = [r.event async for r in running]
        assert rest[-1].HasField("session_finished")
        assert [e.seq for e in [first.event, *rest]] == list(range(1, len(rest) + 2))
        snapshot = await mesh.stub.GetQuoteRequest(
            pb.GetQuoteRequestRequest(access_token=access(first.event.request_id), request_id=first.event.request_id)
        )
        assert snapshot.quote_request.last_seq == rest[-1].seq
        assert await count_requests(postgres_db) == 1  # the refused one left nothing behind

        own_redis.start()  # back on the same port: the service recovers by itself
        await health_becomes(watch, SERVING)
        events = [
            r.event async for r in mesh.stub.GetQuotes(pb.GetQuotesRequest(application=load_example(), fresh=True))
        ]
        assert events[-1].HasField("session_finished")


async def test_postgres_unreachable_refuses_new_sessions_and_recovers(postgres_db: str, redis_db: str) -> None:
    database = postgres_db.rsplit("/", 1)[1]
    admin_url = postgres_db.rsplit("/", 1)[0] + "/postgres"
    async with shared_mesh(postgres_db, redis_db) as mesh:
        watch = health_pb2_grpc.HealthStub(mesh.channel).Watch(health_pb2.HealthCheckRequest(service=""))
        await health_becomes(watch, SERVING)
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
            # The database refuses connections and drops the ones it has: an outage as the service sees it.
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'.encode())
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,)
            )
            await health_becomes(watch, NOT_SERVING)
            error = await refused(mesh)
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            assert "storage is unavailable" in (error.details() or "")
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'.encode())
        await health_becomes(watch, SERVING)
        events = [
            r.event async for r in mesh.stub.GetQuotes(pb.GetQuotesRequest(application=load_example(), fresh=True))
        ]
        assert events[-1].HasField("session_finished")
        assert await count_requests(postgres_db) == 1
