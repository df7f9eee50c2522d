"""The production Envoy config, checked by the real Envoy binary: it validates, and a browser's
grpc-web call streams a whole quote session through it to the aggregator, frame by frame, with
the trailers and CORS headers a browser client needs. The grpc-web framing is spoken by hand."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import trustme
from aiohttp import web
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import aggregator_service_pb2_grpc

from osago_mesh.envoy import (
    ENVOY_YAML,
    EnvoyProcess,
    downstream_tls,
    envoy_binary,
    render_envoy_config,
    start_envoy,
    upstream_tls,
)
from tests.conftest import Mesh, load_example, serve_app, start_mesh
from tests.grpc_web import (
    GET_QUOTES,
    TRAILERS,
    b64decode_unpadded,
    decode_text_body,
    frame,
    parse_frames,
    parse_trailers,
    request_body,
)

pytestmark = pytest.mark.functional

ORIGIN = "http://127.0.0.1:8080"
EXPOSED = ("grpc-status", "grpc-message", "grpc-status-details-bin")
GRPC_WEB_HEADERS = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1", "origin": ORIGIN}


def local_config(aggregator_port: int, **overrides: Any) -> str:
    settings: dict[str, Any] = {
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "aggregators": [("127.0.0.1", aggregator_port)],
        "web_bridge_host": "127.0.0.1",
        "web_bridge_port": 9,  # nothing listens there: these tests never reach web_bridge
        "admin_port": 0,
        "allowed_origins": [ORIGIN],
    }
    return render_envoy_config(**{**settings, **overrides})


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--log-level", "warn", "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def stand_in_tls(root: Path) -> Path:
    """public/ and upstream/ certificates where a pod mounts them (/etc/envoy-tls/)."""
    ca = trustme.CA()
    issued = ca.issue_cert("osago.example")
    for part in ("public", "upstream"):
        (root / part).mkdir(parents=True)
        issued.private_key_pem.write_to_path(str(root / part / "tls.key"))
        issued.cert_chain_pems[0].write_to_path(str(root / part / "tls.crt"))
        ca.cert_pem.write_to_path(str(root / part / "ca.crt"))
    return root


def test_committed_config_validates_with_the_real_envoy(tmp_path: Path) -> None:
    text = ENVOY_YAML.read_text(encoding="utf-8")
    assert text.count("/etc/envoy-tls/") == 5  # browsers' certificate; Envoy's own and the CA toward the aggregator
    path = tmp_path / "envoy.yaml"
    path.write_text(text.replace("/etc/envoy-tls/", f"{stand_in_tls(tmp_path / 'tls')}/"), encoding="utf-8")
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_rendered_config_with_tls_both_ways_validates(tmp_path: Path) -> None:
    tls = stand_in_tls(tmp_path / "tls")
    text = local_config(
        50051,
        listener_tls=downstream_tls(tls / "public" / "tls.crt", tls / "public" / "tls.key"),
        aggregator_tls=upstream_tls(
            tls / "upstream" / "tls.crt", tls / "upstream" / "tls.key", tls / "upstream" / "ca.crt"
        ),
    )
    path = tmp_path / "envoy.yaml"
    path.write_text(text, encoding="utf-8")
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert text.count("envoy.transport_sockets.tls") == 2


def test_rendered_local_config_validates_and_keeps_admin_private(tmp_path: Path) -> None:
    text = local_config(50051, allowed_origin_regexes=[r"^http://localhost:\d+$"])
    path = tmp_path / "envoy.yaml"
    path.write_text(text, encoding="utf-8")
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"address": "127.0.0.1", "port_value": 50051}}}}]  # @aggregator_endpoints' in text
    assert '"exact": "http://127.0.0.1:8080"' in text
    assert text.count("address: 127.0.0.1  # admin") == 1
    assert "transport_socket: null  # @listener_tls" in text and "transport_socket: null  # @aggregator_tls" in text


def test_validation_is_real_an_unknown_field_fails(tmp_path: Path) -> None:
    broken = ENVOY_YAML.read_text(encoding="utf-8").replace(
        "stream_idle_timeout: 300s", "stream_idle_timeout: 300s\n                stream_idle_timeuot: 10s", 1
    )
    path = tmp_path / "broken.yaml"
    path.write_text(broken, encoding="utf-8")
    result = validate(path)
    assert result.returncode != 0
    assert "stream_idle_timeuot" in result.stdout + result.stderr


def test_render_rejects_values_without_an_origin() -> None:
    with pytest.raises(ValueError, match="origin"):
        local_config(50051, allowed_origins=[])


@dataclass
class Bridge:
    mesh: Mesh
    envoy: EnvoyProcess
    url: str


@contextlib.asynccontextmanager
async def envoy_mesh(workdir: Path, time_scale: float = 0.01, **overrides: Any) -> AsyncIterator[Bridge]:
    async with start_mesh(time_scale=time_scale) as mesh:
        port = int(mesh.target.rsplit(":", 1)[1])
        envoy = await start_envoy(local_config(port, **overrides), workdir)
        try:
            yield Bridge(mesh, envoy, f"http://127.0.0.1:{envoy.port}")
        finally:
            await envoy.stop()
            print(envoy.log_path.read_text(encoding="utf-8", errors="replace")[-4000:])


def assert_cors(headers: Any) -> None:
    assert headers.get("access-control-allow-origin") == ORIGIN
    exposed = {h.strip().lower() for h in headers.get("access-control-expose-headers", "").split(",")}
    assert set(EXPOSED) <= exposed


async def test_grpc_web_session_streams_frame_by_frame_with_trailers_and_cors(tmp_path: Path) -> None:
    async with envoy_mesh(tmp_path, time_scale=0.05) as bridge, aiohttp.ClientSession() as http:
        started = time.monotonic()
        body = request_body(load_example())
        async with http.post(bridge.url + GET_QUOTES, data=body, headers=GRPC_WEB_HEADERS) as response:
            assert response.status == 200
            assert response.headers["content-type"].startswith("application/grpc-web")
            assert "grpc-status" not in response.headers  # not trailers-only: a real stream
            assert "content-encoding" not in response.headers
            assert_cors(response.headers)
            arrivals: list[tuple[float, int, bytes]] = []
            while True:
                header = await response.content.readexactly(5)
                payload = await response.content.readexactly(int.from_bytes(header[1:], "big"))
                arrivals.append((time.monotonic() - started, header[0], payload))
                if header[0] & TRAILERS:
                    break
            assert await response.content.read() == b""  # the trailers frame is the last one

        *data_frames, (ended_at, _, trailer_payload) = arrivals
        assert all(flag == 0 for _, flag, _ in data_frames)
        assert parse_trailers(trailer_payload)["grpc-status"] == "0"
        events = [pb.GetQuotesResponse.FromString(payload).event for _, _, payload in data_frames]
        assert events[0].HasField("session_started")
        assert events[-1].HasField("session_finished")
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        # Streamed as they happened, not buffered by Envoy until the end.
        first_at = data_frames[0][0]
        assert ended_at - first_at > 0.2, [round(t, 3) for t, _, _ in arrivals]
        quotes = [e.quote_received.quote for e in events if e.HasField("quote_received")]
        assert quotes
        ledger = await bridge.mesh.ledger(events[0].request_id)
        assert sorted(q.offer_id for q in quotes) == sorted(o["offer_id"] for o in ledger)

        # Envoy's own gRPC health checks of the aggregator pass (osago.v1.AggregatorService).
        async with http.get(bridge.envoy.admin_url + "/clusters") as clusters:
            lines = (await clusters.text()).splitlines()
        flags = [line for line in lines if line.startswith(f"aggregator::{bridge.mesh.target}::health_flags::")]
        assert flags == [f"aggregator::{bridge.mesh.target}::health_flags::healthy"]


async def test_health_route_answers_through_envoy(tmp_path: Path) -> None:
    async with envoy_mesh(tmp_path) as bridge, aiohttp.ClientSession() as http:
        body = frame(health_pb2.HealthCheckRequest(service="osago.v1.AggregatorService").SerializeToString())
        url = bridge.url + "/grpc.health.v1.Health/Check"
        async with http.post(url, data=body, headers=GRPC_WEB_HEADERS) as response:
            frames = parse_frames(await response.read())
        assert [flag for flag, _ in frames] == [0, TRAILERS]
        assert health_pb2.HealthCheckResponse.FromString(frames[0][1]).status == health_pb2.HealthCheckResponse.SERVING
        assert parse_trailers(frames[1][1])["grpc-status"] == "0"
        # Native gRPC (HTTP/2 without TLS) through the same listener.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.envoy.port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="osago.v1.AggregatorService"), timeout=5
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_cors_preflight_allows_the_grpc_web_headers_and_only_allowed_origins(tmp_path: Path) -> None:
    async with envoy_mesh(tmp_path) as bridge, aiohttp.ClientSession() as http:
        asked = "content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization,connect-protocol-version"
        preflight = {"origin": ORIGIN, "access-control-request-method": "POST", "access-control-request-headers": asked}
        async with http.options(bridge.url + GET_QUOTES, headers=preflight) as response:
            assert response.status == 200
            assert response.headers["access-control-allow-origin"] == ORIGIN
            allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
            assert set(asked.split(",")) <= allowed
            assert "POST" in response.headers["access-control-allow-methods"]
            assert int(response.headers["access-control-max-age"]) > 0
        # A foreign origin gets no CORS grant, and Envoy answers it itself (web_bridge is down).
        foreign = {**preflight, "origin": "https://evil.example"}
        async with http.options(bridge.url + GET_QUOTES, headers=foreign) as response:
            assert "access-control-allow-origin" not in response.headers
            assert response.status != 503


async def test_invalid_application_is_trailers_only_invalid_argument_with_details(tmp_path: Path) -> None:
    async with envoy_mesh(tmp_path) as bridge, aiohttp.ClientSession() as http:
        app = load_example()
        app.vehicle.vin = "XTA21099OY2765439"  # the letter O is not allowed
        async with http.post(bridge.url + GET_QUOTES, data=request_body(app), headers=GRPC_WEB_HEADERS) as response:
            assert response.status == 200
            assert response.headers["grpc-status"] == "3"
            assert response.headers["grpc-message"]
            assert_cors(response.headers)
            details = response.headers["grpc-status-details-bin"]
            body = await response.read()
        assert body == b""
        status = status_pb2.Status.FromString(b64decode_unpadded(details))
        assert status.code == 3
        violations = []
        for detail in status.details:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                violations += [v.field for v in bad.field_violations]
        assert violations == ["application.vehicle.vin"]


@pytest.mark.parametrize("method", ["GetQuotes", "CreateQuoteRequest"])
async def test_a_body_cut_short_is_invalid_argument_at_once_not_a_hung_call(tmp_path: Path, method: str) -> None:
    """A grpc-web body that ends inside a frame (or before one) is refused with INVALID_ARGUMENT
    naming the request; before, the call hung until the stream's 65 s cap. The client waits far
    less than that, so a hang fails the test."""
    request = pb.CreateQuoteRequestRequest(application=load_example()).SerializeToString()
    if method == "GetQuotes":
        request = pb.GetQuotesRequest(application=load_example()).SerializeToString()
    whole = frame(request)
    async with envoy_mesh(tmp_path) as bridge, aiohttp.ClientSession() as http:
        for body in (whole[:-10], whole[:5], whole[:3], b""):
            url = f"{bridge.url}/osago.v1.AggregatorService/{method}"
            timeout = aiohttp.ClientTimeout(total=20)
            async with http.post(url, data=body, headers=GRPC_WEB_HEADERS, timeout=timeout) as response:
                assert response.status == 200
                assert response.headers["grpc-status"] == "3", (len(body), dict(response.headers))
                details = status_pb2.Status.FromString(b64decode_unpadded(response.headers["grpc-status-details-bin"]))
            bad = error_details_pb2.BadRequest()
            assert details.details[0].Unpack(bad)
            assert [v.field for v in bad.field_violations] == ["request"]
        # The whole frame still works.
        async with http.post(url, data=whole, headers=GRPC_WEB_HEADERS) as response:
            assert "grpc-status" not in response.headers  # not trailers-only: an answer came
            *_, (flag, trailers) = parse_frames(await response.read())
        assert flag == TRAILERS and parse_trailers(trailers)["grpc-status"] == "0"


async def test_grpc_web_text_mode_streams_base64_frames(tmp_path: Path) -> None:
    async with envoy_mesh(tmp_path) as bridge, aiohttp.ClientSession() as http:
        text_type = "application/grpc-web-text"
        headers = {**GRPC_WEB_HEADERS, "content-type": text_type, "accept": text_type}
        body = base64.b64encode(request_body(load_example()))
        async with http.post(bridge.url + GET_QUOTES, data=body, headers=headers) as response:
            assert response.status == 200
            assert response.headers["content-type"].startswith("application/grpc-web-text")
            assert_cors(response.headers)
            text = (await response.read()).decode("ascii")
        with pytest.raises(binascii.Error):
            base64.b64decode(text, validate=True)  # not one base64 blob: padding mid-body
        frames = parse_frames(decode_text_body(text))
        assert [flag for flag, _ in frames[:-1]] == [0] * (len(frames) - 1)
        events = [pb.GetQuotesResponse.FromString(payload).event for _, payload in frames[:-1]]
        assert events[0].HasField("session_started") and events[-1].HasField("session_finished")
        assert frames[-1][0] == TRAILERS
        assert parse_trailers(frames[-1][1])["grpc-status"] == "0"


async def test_local_rate_limit_answers_resource_exhausted_once_the_bucket_is_empty(tmp_path: Path) -> None:
    bucket = {"ratelimit_max_tokens": 2, "ratelimit_tokens_per_fill": 1, "ratelimit_fill_interval_s": 3600.0}
    async with envoy_mesh(tmp_path, **bucket) as bridge, aiohttp.ClientSession() as http:
        app = load_example()
        app.vehicle.vin = "XTA21099OY2765439"  # answered at once: the test is about the bucket
        statuses = []
        for text_mode in (False, False, False, True):
            body = base64.b64encode(request_body(app)) if text_mode else request_body(app)
            content_type = "application/grpc-web-text" if text_mode else "application/grpc-web+proto"
            headers = {**GRPC_WEB_HEADERS, "content-type": content_type}
            async with http.post(bridge.url + GET_QUOTES, data=body, headers=headers) as response:
                # Trailers-only, HTTP 200: what grpc-web clients read as a status, not a 429.
                assert response.status == 200
                assert await response.read() == b""
                statuses.append(response.headers["grpc-status"])
                if statuses[-1] == "8":
                    assert response.headers["grpc-message"]
                    assert_cors(response.headers)
        assert statuses == ["3", "3", "8", "8"]

        # Native gRPC through the same listener is limited the same way.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{bridge.envoy.port}") as channel:
            stub = aggregator_service_pb2_grpc.AggregatorServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                async for _ in stub.GetQuotes(pb.GetQuotesRequest(application=load_example()), timeout=5):
                    pass
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        # Page and REST requests get a plain 429.
        async with http.get(bridge.url + "/", headers={"origin": ORIGIN}) as response:
            assert response.status == 429
            assert "grpc-status" not in response.headers


async def test_page_and_websocket_reach_web_bridge_through_envoy(tmp_path: Path) -> None:
    """A stand-in for web_bridge (plain aiohttp) behind the catch-all and WebSocket routes."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>OSAGO</title>", content_type="text/html")

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(f"echo {message.data}")
        return ws

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/healthz", page)
    app.router.add_get("/osago/quotes/{request_id}/stream", echo)
    async with serve_app(app) as bridge_url:
        bridge_port = int(bridge_url.rsplit(":", 1)[1])
        config = local_config(9, web_bridge_port=bridge_port)
        async with await start_envoy(config, tmp_path) as envoy, aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{envoy.port}"
            async with http.get(url + "/") as response:
                assert response.status == 200
                assert "OSAGO" in await response.text()
                assert "content-encoding" not in response.headers
            async with http.ws_connect(url + "/osago/quotes/r-1/stream") as ws:
                await ws.send_str("hello")
                assert await ws.receive_str(timeout=5) == "echo hello"


async def test_envoy_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    script = f"""
import asyncio, pathlib
from osago_mesh.envoy import render_envoy_config, start_envoy
async def main():
    config = render_envoy_config(listen_host="127.0.0.1", listen_port=0, aggregators=[("127.0.0.1", 9)],
        web_bridge_host="127.0.0.1", web_bridge_port=9, admin_port=0,
        allowed_origins=["{ORIGIN}"])
    envoy = await start_envoy(config, pathlib.Path({str(tmp_path)!r}))
    print(envoy.process.pid, flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=ENVOY_YAML.parent.parent, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        line = await asyncio.wait_for(parent.stdout.readline(), 15)
        pid = int(line)
        assert _alive(pid)
    finally:
        parent.kill()
        await parent.wait()
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, "envoy outlived its parent"
        await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
