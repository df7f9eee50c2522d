"""A private, throwaway PostgreSQL server for tests and the dev mesh.

Runs the installed binaries (Debian's `postgresql` package, installed with apt-get when missing)
on a free localhost port with its own data directory, trust authentication and fsync off, and
stops it and removes the directory on exit. `initdb` refuses to run as root, so as root the
server runs as the `postgres` user in a directory handed over to it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT_S = 30


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
                    str(START_TIMEOUT_S),
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
