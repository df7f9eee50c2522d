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
from osago.v1 import aggregator_service_pb2 as pb

from osago_mesh.defaults import LOCALHOST, SIM_PORT, SIM_URL, port_is_free
from tests.conftest import EXAMPLES, load_example
from tests.grpc_web import BINARY, GET_QUOTES, TRAILERS, parse_frames, parse_trailers, request_body

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
        *OSAGO,
        "up",
        "--insurers",
        "10",
        "--time-scale",
        "0.02",
        "--aggregator-port",
        "0",
        "--sim-port",
        "0",
        "--page-port",
        "0",
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


async def run_osago(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *OSAGO, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_up_quote_json_and_clean_stop(
    mesh_up: tuple[asyncio.subprocess.Process, dict[str, str]], tmp_path: Path
) -> None:
    process, addresses = mesh_up
    assert addresses["sim"].startswith("http://127.0.0.1:")
    services = children_of(process.pid)
    assert len(services) == 14  # simulator, ten gateways, aggregator, web_bridge, Envoy
    async with aiohttp.ClientSession() as http, http.get(addresses["page"]) as response:
        assert response.status == 200
        assert "text/html" in response.headers["content-type"]

    code, out, err = await run_osago(
        "quote", "--file", str(EXAMPLES / "moscow-young-driver.json"), "--json", "--target", addresses["aggregator"]
    )
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
    code, out, _ = await run_osago(
        "quote", "--file", str(EXAMPLES / "kazan-two-drivers.json"), "--json", "--target", addresses["aggregator"]
    )
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


async def test_without_envoy_web_bridge_serves_the_page_and_sim_fault_finds_the_simulator(tmp_path: Path) -> None:
    """`--edge web_bridge` (what a plain `pip install .` gets, Envoy not being installed) and the
    simulator on its usual port, where `osago sim fault` looks without `--sim`."""
    sim_port_was_free = port_is_free(LOCALHOST, SIM_PORT)
    process = await asyncio.create_subprocess_exec(
        *OSAGO,
        "up",
        "--insurers",
        "3",
        "--time-scale",
        "0.02",
        "--aggregator-port",
        "0",
        "--page-port",
        "0",
        "--edge",
        "web_bridge",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert process.stdout is not None and process.stderr is not None
    errors: list[str] = []

    async def drain(stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            errors.append(line.decode())

    draining = asyncio.create_task(drain(process.stderr))
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 90)).decode().strip()
        assert line.startswith("ready "), (line, errors)
        addresses = dict(pair.split("=", 1) for pair in line.split()[1:])
        assert addresses["edge"] == "web_bridge"
        assert "web_bridge serves the page and grpc-web itself" in "".join(errors)
        assert len(children_of(process.pid)) == 6  # simulator, three gateways, aggregator, web_bridge

        page = addresses["page"]
        async with aiohttp.ClientSession() as http:
            async with http.get(page) as response:
                assert response.status == 200 and "text/html" in response.headers["content-type"]
                assert "app.js" in await response.text()
            async with http.get(page + "app.js") as response:
                assert response.status == 200 and "javascript" in response.headers["content-type"]
            # The page's own origin answers grpc-web: a whole session streams through it.
            headers = {"content-type": BINARY, "x-grpc-web": "1"}
            async with http.post(
                page.rstrip("/") + GET_QUOTES, data=request_body(load_example(), 20), headers=headers
            ) as response:
                frames = parse_frames(await response.read())
        events = [pb.GetQuotesResponse.FromString(payload).event for _, payload in frames[:-1]]
        assert events[0].HasField("session_started") and events[-1].HasField("session_finished")
        assert frames[-1][0] == TRAILERS and parse_trailers(frames[-1][1])["grpc-status"] == "0"

        env = {k: v for k, v in os.environ.items() if k != "OSAGO_SIM_URL"}
        if sim_port_was_free:
            # The defaults meet: no --sim needed.
            assert addresses["sim"] == SIM_URL
            fault: tuple[str, ...] = ("sim", "fault", "alfa", "down")
            heal: tuple[str, ...] = ("sim", "heal", "alfa")
        else:
            # Something else holds the usual port: osago up said so and took another.
            assert addresses["sim"] != SIM_URL
            assert f"port {SIM_PORT} (simulator) is taken" in "".join(errors)
            fault = ("sim", "fault", "alfa", "down", "--sim", addresses["sim"])
            heal = ("sim", "heal", "alfa", "--sim", addresses["sim"])
        code, out, err = await run_osago(*fault, env=env)
        assert code == 0, err
        assert json.loads(out)["fault"]["mode"] == "down"
        async with aiohttp.ClientSession() as http, http.get(addresses["sim"] + "/_sim/faults") as response:
            states = {s["insurer_id"]: s["fault"] for s in (await response.json())["insurers"]}
        assert states["alfa"] is not None and states["alfa"]["mode"] == "down"
        assert states["ingos"] is None
        code, out, err = await run_osago(*heal, env=env)
        assert code == 0, err
        assert json.loads(out)["fault"] is None
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
        await asyncio.wait_for(draining, 10)
