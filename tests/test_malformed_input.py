"""Raw malformed input on web_bridge's entry points (REST, WebSocket, grpc-web) while a real
session runs beside it: each gets a clear 4xx (or a gRPC status, or a close code), the process
stays up, and the other session finishes with every offer. And the browser boundary: JSON only,
CORS only for configured origins, security headers, WebSocket Origin checks, limits."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import events_pb2

from osago_mesh.local import LocalMesh
from tests.conftest import EXAMPLES, start_mesh
from tests.grpc_web import BINARY, TEXT, frame
from web_bridge import stream
from web_bridge.security import CSP
from web_bridge.service import BridgeService
from web_bridge.settings import BridgeSettings

pytestmark = pytest.mark.functional

QUOTES = "/osago/quotes"
GRPC_WEB = "/osago.v1.AggregatorService/"
ALLOWED_ORIGIN = "https://partner.example"
JSON = {"Content-Type": "application/json"}
BODY = (EXAMPLES / "moscow-young-driver.json").read_bytes()


@dataclass
class Stack:
    mesh: LocalMesh
    url: str
    service: BridgeService


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with start_mesh(n=3, time_scale=0.05) as mesh:
        service = BridgeService(
            BridgeSettings(
                aggregator_target=mesh.target, port=0, allowed_origins=(ALLOWED_ORIGIN,), max_streams_per_client=3
            )
        )
        await service.start()
        try:
            yield Stack(mesh, service.url, service)
        finally:
            await service.stop()


async def status_and_body(response: aiohttp.ClientResponse) -> tuple[int, Any]:
    text = await response.text()
    return response.status, json.loads(text) if text else None


async def a_full_session(http: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    async with http.post(url + QUOTES + "?timeLimitS=10", data=BODY, headers=JSON) as response:
        assert response.status == 201, await response.text()
        created = await response.json()
    protocols = ("osago.v1", f"access-token.{created['accessToken']}")
    ws_url = url.replace("http", "ws", 1) + f"{QUOTES}/{created['requestId']}/stream"
    async with http.ws_connect(ws_url, protocols=protocols) as ws:
        return [json.loads(m.data) async for m in ws]


async def test_malformed_input_everywhere_is_a_clear_4xx_and_the_other_session_goes_on(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        session = asyncio.create_task(a_full_session(http, stack.url))
        deep = b"[" * 100_000 + b"]" * 100_000
        rest_cases: list[tuple[bytes, dict[str, str], int]] = [
            (BODY, {"Content-Type": "text/plain"}, 415),  # a CORS "simple request"
            (BODY, {"Content-Type": "application/x-www-form-urlencoded"}, 415),
            (BODY, {}, 415),
            (b"\xff\xfe\xfd", JSON, 400),
            (b'{"vehicle": {"make": "\xc3\x28"}}', JSON, 400),  # invalid UTF-8 inside a string
            (b"\x00\x01garbage", JSON, 400),
            (deep[:60_000], JSON, 400),
            (json.dumps({"vehicle": {"make": "x" * 70_000}}).encode(), JSON, 413),
            (b"[" * 5000 + b"]" * 5000, JSON, 400),
        ]
        for data, headers, expected in rest_cases:
            async with http.post(stack.url + QUOTES, data=data, headers=headers) as response:
                status, body = await status_and_body(response)
            assert status == expected, (data[:30], body)
            assert body["error"] and "Traceback" not in json.dumps(body)

        message = b"\x0a\x03abc"
        grpc_web_cases: list[tuple[bytes, str, int, str | None]] = [
            (frame(message)[:7], BINARY, 400, None),  # truncated frame
            ((0).to_bytes(1, "big") + (2**31).to_bytes(4, "big") + message, BINARY, 400, None),  # claims 2 GiB
            (b"\xff" * 40, BINARY, 400, None),
            (frame(message) + frame(message), BINARY, 400, None),
            (b"!!!not base64!!!", TEXT, 400, None),
            (frame(message), "text/plain", 415, None),
            (frame(b"\xff\xff\xff\xff"), BINARY, 200, "3"),  # a frame of bytes that are no protobuf
            (base64.b64encode(frame(b"\x0a\x02\xc3\x28")), TEXT, 200, "3"),  # invalid UTF-8 in a string field
        ]
        for data, content_type, expected, grpc_status in grpc_web_cases:
            async with http.post(
                stack.url + GRPC_WEB + "GetQuoteRequest", data=data, headers={"Content-Type": content_type}
            ) as response:
                assert response.status == expected, (data[:20], await response.text())
                if grpc_status is not None:
                    assert response.headers["grpc-status"] == grpc_status

        ws_base = stack.url.replace("http", "ws", 1) + f"{QUOTES}/anything/stream"
        async with http.ws_connect(ws_base) as flood:  # no token: refused, then closed
            for _ in range(100):
                with_error = flood.closed
                if with_error:
                    break
                await flood.send_str("hello")
            messages = [m async for m in flood]
        assert flood.close_code in (1008, 4403), messages
        async with http.ws_connect(ws_base, max_msg_size=0) as huge:
            await huge.send_bytes(b"x" * 100_000)
            _ = [m async for m in huge]
        assert huge.close_code in (1009, 4403)

        events = await session
        assert events[-1]["sessionFinished"]["status"] == "SESSION_STATUS_COMPLETED"
        asked = len(events[0]["sessionStarted"]["insurers"])
        assert sum(1 for e in events if "quoteReceived" in e or "insurerFailed" in e) == asked
        async with http.get(stack.url + "/readyz") as ready:
            assert ready.status == 200


async def test_cors_answers_configured_origins_only_and_foreign_origins_are_refused(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        preflight = {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"}
        async with http.options(stack.url + QUOTES, headers=preflight) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
            assert "content-type" in response.headers["Access-Control-Allow-Headers"]
        async with http.post(stack.url + QUOTES, data=BODY, headers={**JSON, "Origin": ALLOWED_ORIGIN}) as response:
            assert response.status == 201
            assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
        for method in ("OPTIONS", "POST"):
            foreign = {**JSON, "Origin": "https://evil.example"}
            async with http.request(method, stack.url + QUOTES, data=BODY, headers=foreign) as response:
                status, body = await status_and_body(response)
                assert status == 403 and body["error"] == "forbidden origin"
                assert "Access-Control-Allow-Origin" not in response.headers
        # The page's own origin (a same-origin fetch also sends Origin) is always allowed.
        own = {**JSON, "Origin": stack.url}
        async with http.post(stack.url + QUOTES, data=BODY, headers=own) as response:
            assert response.status == 201


async def test_a_websocket_from_a_foreign_origin_is_refused_before_the_upgrade(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        url = stack.url.replace("http", "ws", 1) + f"{QUOTES}/anything/stream"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, origin="https://evil.example")
        assert refused.value.status == 403
        async with http.ws_connect(url, origin=ALLOWED_ORIGIN) as ws:  # allowed: then the token decides
            _ = [m async for m in ws]
        assert ws.close_code == 4403


async def test_the_page_and_the_api_send_security_headers(stack: Stack, tmp_path: Any) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", QUOTES + "/x"):
            async with http.get(stack.url + path) as response:
                assert response.headers["Content-Security-Policy"] == CSP
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                assert response.headers["X-Frame-Options"] == "DENY"
                assert response.headers["Referrer-Policy"] == "no-referrer"
                assert "Strict-Transport-Security" not in response.headers  # plain HTTP here
        async with http.get(stack.url + "/healthz", headers={"X-Forwarded-Proto": "https"}) as response:
            assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "script-src 'self'" in CSP and "frame-ancestors 'none'" in CSP and "unsafe-inline" not in CSP


async def test_websocket_streams_are_limited_per_client(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(stack.url + QUOTES + "?timeLimitS=10", data=BODY, headers=JSON) as response:
            created = await response.json()
        protocols = ("osago.v1", f"access-token.{created['accessToken']}")
        url = stack.url.replace("http", "ws", 1) + f"{QUOTES}/{created['requestId']}/stream"
        open_sockets = [await http.ws_connect(url, protocols=protocols) for _ in range(3)]
        try:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url, protocols=protocols)
            assert refused.value.status == 429
            assert refused.value.headers is not None and refused.value.headers["Retry-After"] == "1"
        finally:
            for ws in open_sockets:
                await ws.close()


async def test_a_client_that_does_not_take_its_events_is_cut_off_alone() -> None:
    """_pump with a socket whose sends never complete (a client that stopped reading): it ends
    that stream with 1008 "too slow" instead of waiting; nothing else is touched."""

    class StuckSocket:
        sent = 0

        async def send_str(self, text: str) -> None:
            self.sent += 1
            await asyncio.Event().wait()  # the client's window never opens

    async def events() -> AsyncIterator[pb.StreamQuoteEventsResponse]:
        yield pb.StreamQuoteEventsResponse(event=events_pb2.QuoteEvent(request_id="r", seq=1))
        yield pb.StreamQuoteEventsResponse(event=events_pb2.QuoteEvent(request_id="r", seq=2))

    ws = StuckSocket()
    ending = await stream._pump(events(), ws, send_timeout_s=0.01)  # type: ignore[arg-type]
    assert ending is not None and ending.code == stream.CLOSE_POLICY
    assert ending.payload is not None and ending.payload["error"] == "too slow"
    assert ws.sent == 1  # cut off at the first event it did not take
