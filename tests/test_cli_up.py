"""The commands a person runs: `osago up` brings the mesh up as separate processes and takes it
down leaving nothing behind; `osago quote` streams a session from it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import EXAMPLES

pytestmark = pytest.mark.functional

OSAGO = [sys.executable, "-m", "osago_cli.main"]


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
async def mesh_up(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, str]]]:
    process = await asyncio.create_subprocess_exec(
        *OSAGO, "up", "--insurers", "10", "--time-scale", "0.02", "--aggregator-port", "0", "--page-port", "0",
        stdout=asyncio.subprocess.PIPE,
        # Its scratch files (Envoy's config) land here, even when a test kills it outright.
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 90)
        text = line.decode().strip()
        assert text.startswith("ready "), text
        addresses = dict(pair.split("=", 1) for pair in text.split()[1:])
        yield process, addresses
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)


async def run_osago(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *OSAGO, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_up_quote_json_and_clean_stop(mesh_up: tuple[asyncio.subprocess.Process, dict[str, str]], tmp_path: Path) -> None:
    process, addresses = mesh_up
    assert addresses["sim"].startswith("http://127.0.0.1:")
    services = children_of(process.pid)
    assert len(services) == 14  # simulator, ten gateways, aggregator, web_bridge, Envoy
    async with aiohttp.ClientSession() as http:
        async with http.get(addresses["page"]) as response:
            assert response.status == 200
            assert "text/html" in response.headers["content-type"]

    code, out, err = await run_osago("quote", "--file", str(EXAMPLES / "moscow-young-driver.json"), "--json", "--target", addresses["aggregator"])
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert "sessionStarted" in events[0] and "sessionFinished" in events[-1]
    quotes = [e["quoteReceived"]["quote"] for e in events if "quoteReceived" in e]
    assert len({q["insurerId"] for q in quotes}) >= 8
    assert all(int(q["premiumKopecks"]) > 0 for q in quotes)
    assert len({e["time"] for e in events if "quoteReceived" in e}) == len(quotes)

    bad = json.loads((EXAMPLES / "moscow-young-driver.json").read_text(encoding="utf-8"))
    bad["vehicle"]["vin"] = "XTA21099OY276543"
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps(bad), encoding="utf-8")
    code, out, err = await run_osago("quote", "--file", str(bad_file), "--json", "--target", addresses["aggregator"])
    assert code != 0
    assert "INVALID_ARGUMENT" in err and "application.vehicle.vin" in err

    # Still serving after the bad request.
    code, out, _ = await run_osago("quote", "--file", str(EXAMPLES / "kazan-two-drivers.json"), "--json", "--target", addresses["aggregator"])
    assert code == 0 and "sessionFinished" in out.splitlines()[-1]

    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 30) == 0
    for _ in range(100):
        if not any(alive(pid) for pid in services):
            break
        await asyncio.sleep(0.05)
    assert not [pid for pid in services if alive(pid)], "a service outlived osago up"


async def test_services_die_with_a_killed_up(mesh_up: tuple[asyncio.subprocess.Process, dict[str, str]]) -> None:
    process, _ = mesh_up
    services = children_of(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    await process.wait()
    for _ in range(200):
        if not any(alive(pid) for pid in services):
            break
        await asyncio.sleep(0.05)
    assert not [pid for pid in services if alive(pid)]
