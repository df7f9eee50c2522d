"""A private, throwaway redis-server for tests: `with redis_server() as url: ...`.

Runs the installed binary (installing it with apt-get when missing) on a free localhost port,
with no persistence and a temporary directory, and stops it and removes the directory on exit.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

REDIS_SERVER = "redis-server"
START_TIMEOUT_S = 10.0


def _binary() -> str:
    found = shutil.which(REDIS_SERVER) or shutil.which("/usr/bin/redis-server")
    if found is None:
        subprocess.run(["apt-get", "install", "-y", "redis-server"], check=True, capture_output=True)
        found = shutil.which(REDIS_SERVER) or shutil.which("/usr/bin/redis-server")
    if found is None:
        raise RuntimeError("redis-server is not installed and apt-get could not install it")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> bool:
    """True once the server answers PING; False if it exited (e.g. the port was taken)."""
    deadline = time.monotonic() + START_TIMEOUT_S
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
    raise RuntimeError(f"redis-server did not start within {START_TIMEOUT_S} s:\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
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
    binary = _binary()
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
                if _wait_ready(process, port, log):
                    yield f"redis://127.0.0.1:{port}/0"
                    return
            finally:
                _stop(process)
        raise RuntimeError("redis-server could not bind a free port")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
