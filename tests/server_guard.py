"""A pytest plugin that keeps unit tests free of servers.

While a test that is not marked `functional` runs (its set-up and call, so fixtures of any scope
that it triggers too; not its tear-down, which may end what functional tests started), binding a
socket, creating a gRPC server or starting a child process raises `ServerInUnitTest` and fails
the test, even when the code under test swallows the exception. `pytest -m "not functional"`
(`make unit`) therefore starts nothing: no Redis, no mesh, no aiohttp or gRPC server on a port,
no Envoy, no Chromium, no subprocess.

Binds and child processes are caught with an audit hook (`sys.addaudithook`: every Python-level
`socket.bind`, `subprocess.Popen` and `os.posix_spawn`/`exec`); gRPC binds inside its C core, so
`grpc.server` and `grpc.aio.server` are replaced for the test's duration.
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from typing import Any, NoReturn

import grpc
import grpc.aio
import pytest

FORBIDDEN_EVENTS = frozenset({"socket.bind", "subprocess.Popen", "os.posix_spawn", "os.exec", "os.fork"})


class ServerInUnitTest(RuntimeError):
    """A test not marked `functional` tried to start a server or a process."""


class _Guard:
    def __init__(self) -> None:
        self.test: str | None = None  # the unit test running now, or None (functional or between tests)
        self.violations: list[str] = []

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if self.test is None or event not in FORBIDDEN_EVENTS:
            return
        what = f"{event}{_short(args)}"
        self.violations.append(what)
        raise ServerInUnitTest(f"{self.test} is not marked functional but did {what}")

    def refuse_grpc_server(self, *_: Any, **__: Any) -> NoReturn:
        what = "grpc server()"
        self.violations.append(what)
        raise ServerInUnitTest(f"{self.test} is not marked functional but created a {what}")


def _short(args: tuple[Any, ...]) -> str:
    if not args:
        return "()"
    last = args[-1] if args[0].__class__.__name__ == "socket" else args[:2]
    return f"({str(last)[:120]})"


GUARD = _Guard()
sys.addaudithook(GUARD.audit)  # audit hooks cannot be removed; it acts only while a unit test runs


def _unit(item: pytest.Item) -> bool:
    return item.get_closest_marker("functional") is None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    if not _unit(item):
        yield
        return
    GUARD.test, GUARD.violations = item.nodeid, []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(grpc, "server", GUARD.refuse_grpc_server)
        patch.setattr(grpc.aio, "server", GUARD.refuse_grpc_server)
        try:
            yield
        finally:
            GUARD.test = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, None]:
    """Fails a unit test that started something even if the code it ran caught the error."""
    outcome = yield
    if _unit(item) and GUARD.violations and outcome.excinfo is None:
        outcome.force_exception(
            ServerInUnitTest(f"{item.nodeid} is not marked functional but did {', '.join(GUARD.violations)}")
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    """A unit test's tear-down also ends the broader fixtures no later test needs (the session's
    Postgres after the last test, a module's mesh after its last): stopping what functional
    tests started is not the unit test starting anything."""
    GUARD.test = None
    yield
