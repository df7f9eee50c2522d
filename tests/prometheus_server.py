"""A private Prometheus server for the tests: Debian's /usr/bin/prometheus with its own data
directory, on a free loopback port, scraping the given targets every SCRAPE_S; and its HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.metrics_kit import PROMETHEUS, require

SCRAPE_S = 0.25
START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def prometheus_server(jobs: Mapping[str, Sequence[str]], rule_files: Sequence[Path] = ()) -> AsyncIterator[str]:
    """Runs Prometheus scraping `jobs` (job name -> `host:port` targets, each at /metrics) and
    evaluating `rule_files`; yields its base URL, stops and removes it on exit."""
    binary = require(PROMETHEUS)
    interval = f"{int(SCRAPE_S * 1000)}ms"
    with tempfile.TemporaryDirectory(prefix="osago-prometheus-") as workdir:
        root = Path(workdir)
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(targets)}]} for job, targets in jobs.items()
            ],
        }
        (root / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        port = _free_port()
        log = (root / "prometheus.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            await _wait_ready(url, process, root / "prometheus.log")
            yield url
        finally:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
            log.close()


async def _wait_ready(url: str, process: asyncio.subprocess.Process, log: Path) -> None:
    loop = asyncio.get_running_loop()
    give_up = loop.time() + START_TIMEOUT_S
    async with aiohttp.ClientSession() as http:
        while loop.time() < give_up:
            assert process.returncode is None, f"prometheus exited: {log.read_text(errors='replace')}"
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{url}/-/ready") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError(f"prometheus not ready within {START_TIMEOUT_S} s: {log.read_text(errors='replace')}")


async def query(http: aiohttp.ClientSession, url: str, expr: str) -> list[tuple[dict[str, str], float]]:
    """An instant query through /api/v1/query: each series' labels and value."""
    async with http.get(f"{url}/api/v1/query", params={"query": expr}) as response:
        body: dict[str, Any] = await response.json()
    assert body["status"] == "success", body
    return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]


async def until(
    http: aiohttp.ClientSession, url: str, expr: str, expected: float, timeout_s: float = 20.0
) -> list[tuple[dict[str, str], float]]:
    """Queries `expr` (one series) until its value is `expected`: the scrapes after an event
    take a few intervals to land."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_s
    result: list[tuple[dict[str, str], float]] = []
    while loop.time() < give_up:
        result = await query(http, url, expr)
        if len(result) == 1 and result[0][1] == expected:
            return result
        await asyncio.sleep(SCRAPE_S)
    raise AssertionError(f"{expr}: {result}, expected {expected}")
