"""The guard that keeps unit tests free of servers (tests/server_guard.py) is really on: these
tests are not marked `functional`, so each attempt below is refused."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from tests.server_guard import GUARD, ServerInUnitTest


@contextlib.contextmanager
def refused(match: str) -> Iterator[None]:
    """Expects the guard's refusal; provoked on purpose, it is not held against the test."""
    with pytest.raises(ServerInUnitTest, match=match):
        yield
    GUARD.violations.clear()


def test_binding_a_socket_is_refused() -> None:
    with socket.socket() as sock:
        with pytest.raises(ServerInUnitTest, match=r"not marked functional but did socket\.bind"):
            sock.bind(("127.0.0.1", 0))
        assert GUARD.violations == ["socket.bind(('127.0.0.1', 0))"]
        GUARD.violations.clear()


async def test_an_asyncio_server_is_refused() -> None:
    with refused(r"socket\.bind"):
        await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)


def test_a_grpc_server_is_refused() -> None:
    with refused("grpc server"):
        grpc.aio.server()
    with refused("grpc server"), ThreadPoolExecutor(max_workers=1) as pool:
        grpc.server(pool)


async def test_a_child_process_is_refused() -> None:
    with refused(r"subprocess\.Popen"):  # a blocking run, on purpose: the guard must refuse it too
        subprocess.run([sys.executable, "-c", "pass"], check=True)  # noqa: ASYNC221
    with refused(r"subprocess\.Popen"):
        await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")


@pytest.mark.functional
def test_a_functional_test_may_bind() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
    assert GUARD.violations == []
