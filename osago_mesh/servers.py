"""Private, throwaway PostgreSQL and Redis servers, for the tests and for the dev mesh when no
URL is given: `with postgres_server() as url: ...`, `with redis_server() as url: ...`.

Each runs the installed binaries (Debian's `postgresql` and `redis-server`, installed with apt-get
when missing) on a free localhost port with a temporary directory and nothing kept, and is stopped
and its directory removed on exit. `initdb` refuses to run as root, so as root PostgreSQL runs as
the `postgres` user in a directory handed over to it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

POSTGRES_START_TIMEOUT_S = 30


def _bindir() -> Path:
    def found() -> list[str]:
        return sorted(str(path) for path in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))

    if not found():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True, capture_output=True, env=env)
    candidates = found()
    if not candidates:
        raise RuntimeError("PostgreSQL is not installed and apt-get could not install it")
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_as() -> list[str]:
    """The command prefix that runs the server's binaries as a non-root user."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Starts a PostgreSQL server and yields its URL (`postgresql://postgres@127.0.0.1:PORT/postgres`)."""
    bindir = _bindir()
    workdir = Path(tempfile.mkdtemp(prefix="test-postgres-"))
    prefix = _run_as()
    if prefix:
        user = pwd.getpwnam("postgres")
        os.chown(workdir, user.pw_uid, user.pw_gid)
    data = workdir / "data"
    try:
        subprocess.run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            check=True,
            capture_output=True,
        )
        for _ in range(5):  # another process may take the free port before the server binds it
            port = _free_port()
            options = (
                f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
            )
            started = subprocess.run(
                [
                    *prefix,
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    options,
                    "-l",
                    str(workdir / f"log-{port}"),
                    "-w",
                    "-t",
                    str(POSTGRES_START_TIMEOUT_S),
                    "start",
                ],
                capture_output=True,
                check=False,
            )
            if started.returncode != 0:
                continue
            try:
                yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
                return
            finally:
                subprocess.run(
                    [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                    capture_output=True,
                    check=False,
                )
        raise RuntimeError("postgres could not start on a free port")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


REDIS_SERVER = "redis-server"
REDIS_START_TIMEOUT_S = 10.0


def _redis_binary() -> str:
    found = shutil.which(REDIS_SERVER) or shutil.which("/usr/bin/redis-server")
    if found is None:
        subprocess.run(["apt-get", "install", "-y", "redis-server"], check=True, capture_output=True)
        found = shutil.which(REDIS_SERVER) or shutil.which("/usr/bin/redis-server")
    if found is None:
        raise RuntimeError("redis-server is not installed and apt-get could not install it")
    return found


def _wait_redis_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> bool:
    """True once the server answers PING; False if it exited (e.g. the port was taken)."""
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.01)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise RuntimeError(f"redis-server did not start within {REDIS_START_TIMEOUT_S} s:\n{tail}")


def _stop_redis(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Starts a redis-server and yields its URL (`redis://127.0.0.1:PORT/0`)."""
    binary = _redis_binary()
    workdir = Path(tempfile.mkdtemp(prefix="test-redis-"))
    try:
        for _ in range(5):  # another process may grab the free port before redis binds it
            port = _free_port()
            log = workdir / f"redis-{port}.log"
            process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                    "--logfile",
                    str(log),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                if _wait_redis_ready(process, port, log):
                    yield f"redis://127.0.0.1:{port}/0"
                    return
            finally:
                _stop_redis(process)
        raise RuntimeError("redis-server could not bind a free port")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
