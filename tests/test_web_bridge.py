"""web_bridge's REST + WebSocket API against the real mesh: create, snapshot, stream, resume, and
every kind of bad input answered with a JSON error naming what is wrong, never a 500."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import aggregator_service_pb2_grpc

from aggregator.servicer import GetContext, StreamContext
from osago_common.env import SettingsError
from tests.conftest import EXAMPLES, Mesh, serve_app, start_mesh
from web_bridge.app import make_app
from web_bridge.service import BridgeService
from web_bridge.settings import DEFAULT_STATIC_DIR, BridgeSettings

# The dev mode (plaintext): these tests are about the other settings.
DEV_ENV = {"OSAGO_DEV_INSECURE": "true"}

pytestmark = pytest.mark.functional

Json = dict[str, Any]
QUOTES = "/osago/quotes"


def example(name: str = "moscow-young-driver") -> Json:
    document: Json = json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    return document


@contextlib.asynccontextmanager
async def running_bridge(target: str, **settings: Any) -> AsyncIterator[str]:
    service = BridgeService(BridgeSettings(aggregator_target=target, port=0, **settings))
    await service.start()
    try:
        yield service.url
    finally:
        await service.stop()


@pytest.fixture
async def bridge(mesh: Mesh, tmp_path: Path) -> AsyncIterator[str]:
    async with running_bridge(mesh.target, static_dir=tmp_path / "no-page") as url:
        yield url


# Access tokens of the requests these tests created, by request id: `get` and `read_stream`
# present the one of the request their URL names, as the creator would.
TOKENS: dict[str, str] = {}


def token_of(url: str) -> str:
    parts = url.split(QUOTES + "/", 1)
    request_id = parts[1].split("/", 1)[0].split("?", 1)[0] if len(parts) == 2 else ""
    return TOKENS.get(request_id, "")


def ws_protocols(request_id: str) -> tuple[str, ...]:
    token = TOKENS.get(request_id, "")
    return ("osago.v1", f"access-token.{token}") if token else ("osago.v1",)


async def post(
    http: aiohttp.ClientSession, url: str, data: bytes | str | None = None, **kwargs: Any
) -> tuple[int, Json, Any]:
    kwargs["headers"] = {"Content-Type": "application/json", **kwargs.get("headers", {})}
    async with http.post(url, data=data, **kwargs) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json(), response.headers


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, Json]:
    token = token_of(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, headers=headers) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


async def create(http: aiohttp.ClientSession, bridge: str, document: Json | None = None, **kwargs: Any) -> Json:
    status, body, _ = await post(http, bridge + QUOTES, json.dumps(document or example()), **kwargs)
    assert status == 201, body
    TOKENS[body["requestId"]] = body["accessToken"]
    return body


async def read_stream(http: aiohttp.ClientSession, url: str) -> tuple[list[Json], int | None]:
    """Every JSON message of the WebSocket at `url` and the server's close code."""
    messages: list[Json] = []
    token = token_of(url)
    async with http.ws_connect(url, protocols=("osago.v1", f"access-token.{token}") if token else ()) as ws:
        async for message in ws:
            assert message.type == aiohttp.WSMsgType.TEXT, message
            messages.append(json.loads(message.data))
        return messages, ws.close_code


def ws_url(bridge: str, request_id: str, query: str = "") -> str:
    return f"{bridge.replace('http://', 'ws://')}{QUOTES}/{request_id}/stream{query}"


def kind(event: Json) -> str:
    return next(
        k
        for k in ("sessionStarted", "quoteReceived", "insurerProgress", "insurerFailed", "sessionFinished")
        if k in event
    )


def violations(body: Json) -> dict[str, Json]:
    return {v["field"]: v for v in body["fieldViolations"]}


# --- create, snapshot, stream, resume ---------------------------------------------------------


async def test_create_answers_201_with_location_and_a_running_request(mesh: Mesh, bridge: str) -> None:
    status, body, headers = await post(mesh.http, bridge + QUOTES, json.dumps(example()))
    assert status == 201
    request_id = body["requestId"]
    assert headers["Location"] == f"{QUOTES}/{request_id}"
    assert body["status"] == "SESSION_STATUS_RUNNING"
    assert len(body["insurers"]) == 10
    assert isinstance(body["quotes"], list) and int(body["lastSeq"]) >= 1


async def test_snapshot_after_the_stream_holds_every_streamed_offer(mesh: Mesh, bridge: str) -> None:
    request_id = (await create(mesh.http, bridge))["requestId"]
    events, _ = await read_stream(mesh.http, ws_url(bridge, request_id))
    status, snapshot = await get(mesh.http, f"{bridge}{QUOTES}/{request_id}")
    assert status == 200
    assert snapshot["requestId"] == request_id
    assert snapshot["status"] == events[-1]["sessionFinished"]["status"]
    assert snapshot["quotes"] == [e["quoteReceived"]["quote"] for e in events if "quoteReceived" in e]
    assert int(snapshot["lastSeq"]) == len(events)


async def test_stream_delivers_every_event_in_order_with_the_ledger_offers_then_closes_1000(
    mesh: Mesh, bridge: str
) -> None:
    request_id = (await create(mesh.http, bridge))["requestId"]
    events, code = await read_stream(mesh.http, ws_url(bridge, request_id))
    assert code == 1000
    assert [int(e["seq"]) for e in events] == list(range(1, len(events) + 1))
    assert all(e["requestId"] == request_id for e in events)
    assert kind(events[0]) == "sessionStarted" and kind(events[-1]) == "sessionFinished"
    assert [kind(e) for e in events].count("sessionFinished") == 1

    quotes = [e["quoteReceived"]["quote"] for e in events if "quoteReceived" in e]
    ledger = await mesh.ledger(request_id)
    assert sorted((q["insurerId"], q["offerId"]) for q in quotes) == sorted(
        (o["insurer_id"], o["offer_id"]) for o in ledger
    ), "offers lost, duplicated or invented"
    issued = {o["offer_id"]: o for o in ledger}
    for quote in quotes:
        assert int(quote["premiumKopecks"]) == issued[quote["offerId"]]["premium_kopecks"]
        assert quote["currency"] == "RUB" and quote["breakdown"]["kt"] == pytest.approx(1.8)
    assert len(quotes) >= 8
    finished = events[-1]["sessionFinished"]
    assert finished["quotesReceived"] == len(quotes)


async def test_resume_after_seq_gives_exactly_the_events_after_it(mesh: Mesh, bridge: str) -> None:
    request_id = (await create(mesh.http, bridge))["requestId"]
    events, _ = await read_stream(mesh.http, ws_url(bridge, request_id))
    n = len(events)
    for k in (0, 1, n // 2, n - 1, n):
        replay, code = await read_stream(mesh.http, ws_url(bridge, request_id, f"?afterSeq={k}"))
        assert replay == events[k:] and code == 1000
    replay, _ = await read_stream(mesh.http, ws_url(bridge, request_id, "?after_seq=2"))
    assert replay == events[2:]


async def test_resume_mid_session_loses_and_repeats_nothing(mesh: Mesh, bridge: str) -> None:
    request_id = (await create(mesh.http, bridge))["requestId"]
    seen: list[Json] = []
    async with mesh.http.ws_connect(ws_url(bridge, request_id), protocols=ws_protocols(request_id)) as ws:
        seen.append(json.loads((await ws.receive()).data))
    rest, code = await read_stream(mesh.http, ws_url(bridge, request_id, f"?afterSeq={seen[-1]['seq']}"))
    assert code == 1000
    assert [int(e["seq"]) for e in seen + rest] == list(range(1, len(seen + rest) + 1))


async def test_the_same_idempotency_key_returns_the_same_request(mesh: Mesh, bridge: str) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await create(mesh.http, bridge, headers=headers)
    again = await create(mesh.http, bridge, headers=headers)
    assert again["requestId"] == first["requestId"]
    assert again["createdAt"] == first["createdAt"]
    other = await create(mesh.http, bridge)
    assert other["requestId"] != first["requestId"]

    status, body, _ = await post(mesh.http, bridge + QUOTES, json.dumps(example("spb-unlimited")), headers=headers)
    assert status == 400
    reused = violations(body)["idempotency_key"]
    assert reused["parameter"] == "Idempotency-Key" and "jsonPath" not in reused


async def test_time_limit_query_shortens_the_session(mesh: Mesh, bridge: str) -> None:
    status, body, _ = await post(mesh.http, f"{bridge}{QUOTES}?timeLimitS=20", json.dumps(example()))
    assert status == 201
    limit = datetime.fromisoformat(body["deadline"]) - datetime.fromisoformat(body["createdAt"])
    assert limit.total_seconds() == pytest.approx(20, abs=0.01)


async def test_a_client_that_leaves_cancels_the_aggregator_stream(tmp_path: Path) -> None:
    # A slow simulator, so the session is still running when the client leaves.
    async with start_mesh(time_scale=0.5) as mesh:
        service = BridgeService(BridgeSettings(aggregator_target=mesh.target, port=0))
        await service.start()
        try:
            request_id = (await create(mesh.http, service.url))["requestId"]
            async with mesh.http.ws_connect(ws_url(service.url, request_id), protocols=ws_protocols(request_id)) as ws:
                assert "sessionStarted" in json.loads((await ws.receive()).data)
            streams = service.streams
            await asyncio.wait_for(streams.idle.wait(), 5)
            assert streams.abandoned == 1 and streams.finished == 0
            _, snapshot = await get(mesh.http, f"{service.url}{QUOTES}/{request_id}")
            assert snapshot["status"] == "SESSION_STATUS_RUNNING"
        finally:
            await service.stop()


async def test_stopping_the_bridge_tells_open_streams_to_go_away() -> None:
    async with start_mesh(time_scale=0.5) as mesh:
        service = BridgeService(BridgeSettings(aggregator_target=mesh.target, port=0))
        await service.start()
        stopped = False
        try:
            request_id = (await create(mesh.http, service.url))["requestId"]
            async with mesh.http.ws_connect(ws_url(service.url, request_id), protocols=ws_protocols(request_id)) as ws:
                assert "sessionStarted" in json.loads((await ws.receive()).data)
                stopping = asyncio.create_task(service.stop())
                # Events already on their way may come first; then the socket is closed "going away".
                message = await ws.receive()
                while message.type == aiohttp.WSMsgType.TEXT:
                    message = await ws.receive()
                assert message.type == aiohttp.WSMsgType.CLOSE
                assert ws.close_code == 1001
            await asyncio.wait_for(stopping, 5)
            stopped = True
        finally:
            if not stopped:
                await service.stop()


async def test_personal_data_never_reaches_the_logs(mesh: Mesh, bridge: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    document = example()
    request_id = (await create(mesh.http, bridge, document))["requestId"]
    await read_stream(mesh.http, ws_url(bridge, request_id))
    document["vehicle"]["vin"] = "XTAGFL110NY61234O"
    await post(mesh.http, bridge + QUOTES, json.dumps(document))
    for secret in ("XTAGFL110NY61234", "Смирнов", "7731456802"):
        assert secret not in caplog.text


# --- bad input: always a JSON 4xx naming what is wrong ------------------------------------------


def _with(path: str, value: Any) -> Json:
    document = example()
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[last] = value
    return document


@pytest.mark.parametrize(
    ("document", "field", "json_path", "description"),
    [
        (_with("vehicle.colour", "red"), "application.vehicle.colour", "vehicle.colour", "unknown field"),
        (
            _with("vehicle.powerHp", "lots"),
            "application.vehicle.power_hp",
            "vehicle.powerHp",
            "must be a 32-bit integer",
        ),
        (_with("vehicle.year", 2022.5), "application.vehicle.year", "vehicle.year", "must be a 32-bit integer"),
        (_with("vehicle.vin", 12345), "application.vehicle.vin", "vehicle.vin", "must be a string"),
        (
            _with("unlimitedDrivers", "yes"),
            "application.unlimited_drivers",
            "unlimitedDrivers",
            "must be true or false",
        ),
        (
            _with("vehicle.category", "VEHICLE_CATEGORY_Z"),
            "application.vehicle.category",
            "vehicle.category",
            "must be one of",
        ),
        (
            _with("drivers.0.kbmClass", "GOLD"),
            "application.drivers[0].kbm_class",
            "drivers[0].kbmClass",
            "must be one of",
        ),
        (_with("owner.kbmClass", True), "application.owner.kbm_class", "owner.kbmClass", "must be one of"),
        (_with("drivers", {"name": "x"}), "application.drivers", "drivers", "must be a JSON array"),
        (_with("drivers", [None]), "application.drivers[0]", "drivers[0]", "must not be null"),
        (_with("owner", "Смирнов"), "application.owner", "owner", "must be a JSON object"),
        (_with("vehicle.power_hp", 106), "application.vehicle.power_hp", "vehicle.powerHp", "is given twice"),
    ],
)
async def test_a_field_of_the_wrong_shape_is_400_naming_it(
    mesh: Mesh, bridge: str, document: Json, field: str, json_path: str, description: str
) -> None:
    status, body, _ = await post(mesh.http, bridge + QUOTES, json.dumps(document))
    assert status == 400
    assert body["error"] == "invalid request"
    violation = violations(body)[field]
    assert violation["jsonPath"] == json_path
    assert violation["description"].startswith(description)


async def test_every_mistake_in_the_body_is_named_at_once(mesh: Mesh, bridge: str) -> None:
    document = _with("vehicle.colour", "red")
    document["owner"]["kbmClass"] = 3.5
    document["drivers"][0]["licenceNumber"] = ["7731456802"]
    status, body, _ = await post(mesh.http, f"{bridge}{QUOTES}?timeLimitS=soon", json.dumps(document))
    assert status == 400
    assert set(violations(body)) == {
        "application.vehicle.colour",
        "application.owner.kbm_class",
        "application.drivers[0].licence_number",
        "time_limit",
    }
    assert violations(body)["time_limit"]["parameter"] == "timeLimitS"


async def test_a_bad_vin_is_400_naming_application_vehicle_vin(mesh: Mesh, bridge: str) -> None:
    document = _with("vehicle.vin", "XTAGFL110NY61234O")
    document["vehicle"]["powerHp"] = 0
    document["drivers"][0]["birthDate"] = "2007-02-30"
    status, body, _ = await post(mesh.http, bridge + QUOTES, json.dumps(document))
    assert status == 400
    found = violations(body)
    assert found["application.drivers[0].birth_date"]["jsonPath"] == "drivers[0].birthDate"
    assert found["application.vehicle.vin"]["jsonPath"] == "vehicle.vin"
    assert found["application.vehicle.power_hp"]["jsonPath"] == "vehicle.powerHp"
    assert "XTAGFL110NY61234O" not in json.dumps(body)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b'{"vehicle": {', "malformed JSON"),
        (b'{"vehicle": {}} trailing', "malformed JSON"),
        (b"\xff\xfe{}", "malformed JSON"),
        (b'{"usageMonths": NaN}', "malformed JSON"),
        (b'{"usageMonths": 12, "usageMonths": 6}', "malformed JSON"),
        (b"[" * 60_000, "malformed JSON"),
        (b"", "invalid request"),
        (b"  \n", "invalid request"),
        (b"[]", "invalid request"),
        (b'"an application"', "invalid request"),
        (b"42", "invalid request"),
        (b"null", "invalid request"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_400(mesh: Mesh, bridge: str, raw: bytes, error: str) -> None:
    status, body, _ = await post(mesh.http, bridge + QUOTES, raw, headers={"Content-Type": "application/json"})
    assert status == 400
    assert body["error"] == error and body["message"]
    if error == "invalid request":
        assert violations(body)["application"]["jsonPath"] == ""


async def test_malformed_json_says_where(mesh: Mesh, bridge: str) -> None:
    _, body, _ = await post(mesh.http, bridge + QUOTES, b'{\n  "vehicle": {,\n}')
    assert (body["line"], body["column"]) == (2, 15)
    _, body, _ = await post(mesh.http, bridge + QUOTES, b'{"usageMonths": 12, "usageMonths": 6}')
    assert body["message"] == 'the body is not valid JSON: an object has the key "usageMonths" twice'


async def test_an_empty_object_is_400_with_the_aggregators_violations(mesh: Mesh, bridge: str) -> None:
    status, body, _ = await post(mesh.http, bridge + QUOTES, b"{}")
    assert status == 400
    assert all(v["field"].startswith("application.") for v in body["fieldViolations"])
    assert all("jsonPath" in v for v in body["fieldViolations"])


async def test_a_body_too_large_is_413(mesh: Mesh, bridge: str) -> None:
    big = json.dumps(_with("vehicle.make", "x" * 70_000))
    status, body, _ = await post(mesh.http, bridge + QUOTES, big)
    assert status == 413 and body["error"] == "payload too large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(20):
            yield b" " * 4096

    status, body, _ = await post(mesh.http, bridge + QUOTES, chunks())  # type: ignore[arg-type]
    assert status == 413 and body["error"] == "payload too large"


@pytest.mark.parametrize("query", ["?timeLimitS=0", "?timeLimitS=-5", "?timeLimitS=nan", "?time_limit_s=inf"])
async def test_a_bad_time_limit_is_400(mesh: Mesh, bridge: str, query: str) -> None:
    status, body, _ = await post(mesh.http, bridge + QUOTES + query, json.dumps(example()))
    assert status == 400 and violations(body)["time_limit"]["description"] == "must be a positive number of seconds"


async def test_an_idempotency_key_too_long_is_400_naming_the_header(mesh: Mesh, bridge: str) -> None:
    status, body, _ = await post(
        mesh.http, bridge + QUOTES, json.dumps(example()), headers={"Idempotency-Key": "k" * 129}
    )
    assert status == 400 and violations(body)["idempotency_key"]["parameter"] == "Idempotency-Key"


async def test_an_unknown_request_is_403_like_any_request_without_its_token(mesh: Mesh, bridge: str) -> None:
    known = (await create(mesh.http, bridge))["requestId"]
    unknown = await get(mesh.http, f"{bridge}{QUOTES}/no-such-request")
    async with mesh.http.get(f"{bridge}{QUOTES}/{known}") as response:  # no token
        existing = (response.status, await response.json())
    assert unknown == existing
    assert unknown[0] == 403 and unknown[1]["error"] == "forbidden"


async def test_an_unknown_request_stream_sends_an_error_then_closes_4403(mesh: Mesh, bridge: str) -> None:
    messages, code = await read_stream(mesh.http, ws_url(bridge, "no-such-request"))
    assert code == 4403
    assert messages[0]["error"] == "forbidden"


@pytest.mark.parametrize("query", ["?afterSeq=-1", "?afterSeq=two", "?after_seq=1.5"])
async def test_a_bad_after_seq_sends_an_error_then_closes_4400(mesh: Mesh, bridge: str, query: str) -> None:
    messages, code = await read_stream(mesh.http, ws_url(bridge, "whatever", query))
    assert code == 4400
    assert [v["field"] for v in messages[0]["fieldViolations"]] == ["after_seq"]


async def test_the_stream_without_a_websocket_upgrade_is_426(mesh: Mesh, bridge: str) -> None:
    status, body = await get(mesh.http, f"{bridge}{QUOTES}/whatever/stream")
    assert status == 426 and body["error"] == "upgrade required"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", QUOTES, "POST"),
        ("DELETE", f"{QUOTES}/abc", "GET,HEAD"),
        ("PUT", f"{QUOTES}/abc", "GET,HEAD"),
        ("POST", "/healthz", "GET,HEAD"),
    ],
)
async def test_a_wrong_method_is_405_json(mesh: Mesh, bridge: str, method: str, path: str, allow: str) -> None:
    async with mesh.http.request(method, bridge + path) as response:
        assert response.status == 405
        assert (await response.json())["error"] == "method not allowed"
        assert sorted(response.headers["Allow"].replace(" ", "").split(",")) == sorted(allow.split(","))


async def test_an_unknown_path_is_404_json(mesh: Mesh, bridge: str) -> None:
    for path in ("/nope", "/", "/osago", f"{QUOTES}/a/b/c"):
        status, body = await get(mesh.http, bridge + path)
        assert status == 404 and body["error"] == "not found"


# --- upstream failures ---------------------------------------------------------------------------


class FailingAggregator(aggregator_service_pb2_grpc.AggregatorServiceServicer):
    """Answers GetQuoteRequest with the status named by the request id."""

    async def GetQuoteRequest(
        self, request: pb.GetQuoteRequestRequest, context: GetContext
    ) -> pb.GetQuoteRequestResponse:
        if request.request_id == "slow":
            await asyncio.sleep(5)
        await context.abort(grpc.StatusCode[request.request_id.upper()], "secret internal detail")
        raise AssertionError("unreachable")

    async def StreamQuoteEvents(
        self, request: pb.StreamQuoteEventsRequest, context: StreamContext
    ) -> AsyncIterator[pb.StreamQuoteEventsResponse]:
        await context.abort(grpc.StatusCode[request.request_id.upper()], "secret internal detail")
        yield pb.StreamQuoteEventsResponse()


@pytest.fixture
async def failing_bridge() -> AsyncIterator[str]:
    server = grpc.aio.server()
    aggregator_service_pb2_grpc.add_AggregatorServiceServicer_to_server(FailingAggregator(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with running_bridge(f"127.0.0.1:{port}", request_timeout_s=0.3) as url:
            yield url
    finally:
        await server.stop(0)


@pytest.mark.parametrize(
    ("code", "status", "error", "close_code"),
    [
        ("unknown", 502, "upstream error", 1011),
        ("internal", 502, "upstream error", 1011),
        ("permission_denied", 403, "forbidden", 4403),
        ("unauthenticated", 502, "upstream error", 1011),
        ("resource_exhausted", 429, "too many requests", 1013),
        ("slow", 504, "upstream timeout", None),
    ],
)
async def test_upstream_failures_are_json_and_never_leak_their_text(
    failing_bridge: str, code: str, status: int, error: str, close_code: int | None
) -> None:
    async with aiohttp.ClientSession() as http:
        answer, body = await get(http, f"{failing_bridge}{QUOTES}/{code}")
        assert (answer, body["error"]) == (status, error)
        assert "secret" not in json.dumps(body)
        if close_code is not None:
            messages, closed = await read_stream(http, ws_url(failing_bridge, code))
            assert closed == close_code and messages[0]["error"] == error


async def test_a_busy_aggregator_is_429_with_retry_after_from_its_retry_info() -> None:
    # One session at most; real time, so the first session is still running for the second.
    async with (
        start_mesh(time_scale=1.0, aggregator_overrides={"max_sessions": 1, "shed_retry_s": 2.5}) as mesh,
        running_bridge(mesh.target) as bridge,
        aiohttp.ClientSession() as http,
    ):
        first = await create(http, bridge)
        status, body, headers = await post(http, bridge + QUOTES, json.dumps(example()))
        assert (status, body["error"]) == (429, "too many requests")
        # 2.5 s lengthened by up to half (so refused customers do not come back together), in whole
        # seconds rounded up.
        assert body["retryAfterS"] in (3, 4) and headers["Retry-After"] == str(body["retryAfterS"])
        _, snapshot = await get(http, f"{bridge}{QUOTES}/{first['requestId']}")
        assert snapshot["status"] == "SESSION_STATUS_RUNNING"  # the running one is untouched


async def test_an_unreachable_aggregator_is_503_and_not_ready() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    async with running_bridge(dead) as url, aiohttp.ClientSession() as http:
        status, body, _ = await post(http, url + QUOTES, json.dumps(example()))
        assert status == 503 and body["error"] == "upstream unavailable"
        status, body = await get(http, url + "/readyz")
        assert status == 503 and body["error"] == "not ready"
        status, body = await get(http, url + "/healthz")
        assert status == 200


async def test_health_and_readiness_with_the_mesh_up(mesh: Mesh, bridge: str) -> None:
    assert await get(mesh.http, bridge + "/healthz") == (200, {"status": "ok"})
    assert await get(mesh.http, bridge + "/readyz") == (200, {"status": "ready", "aggregator": "SERVING"})


async def test_an_unexpected_exception_is_a_json_500_with_a_logged_trace_id(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(BridgeSettings(aggregator_target="127.0.0.1:1", port=0))

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internal detail")

    app.router.add_get("/boom", boom)
    async with serve_app(app) as url, aiohttp.ClientSession() as http:
        status, body = await get(http, f"{url}/boom")
    assert status == 500 and body["error"] == "internal error"
    assert "secret" not in json.dumps(body)
    assert body["traceId"] in caplog.text


# --- the page, settings, the process ------------------------------------------------------------


async def test_the_page_and_its_files_are_served(mesh: Mesh, tmp_path: Path) -> None:
    page = tmp_path / "page"
    (page / "assets").mkdir(parents=True)
    (page / "index.html").write_text("<!doctype html><title>OSAGO</title>")
    (page / "app.js").write_text("console.log('hi')")
    (page / "assets" / "styles.css").write_text("body {}")
    (tmp_path / "secret.txt").write_text("no")
    async with running_bridge(mesh.target, static_dir=page) as url:
        for path, text in (
            ("/", "<title>OSAGO"),
            ("/index.html", "<title>OSAGO"),
            ("/app.js", "console"),
            ("/assets/styles.css", "body"),
        ):
            async with mesh.http.get(url + path) as response:
                assert response.status == 200 and text in await response.text()
        (page / "assets" / ".hidden").write_text("no")
        for path in (
            "/missing.js",
            "/assets/missing.css",
            "/assets/../../secret.txt",
            "/assets/%2e%2e/%2e%2e/secret.txt",
            "/assets/.hidden",
            "/assets/",
            "/assets",
        ):
            status, body = await get(mesh.http, url + path)
            assert status == 404 and body["error"] == "not found"
        status, _, _ = await post(mesh.http, url + QUOTES, json.dumps(example()))
        assert status == 201


def test_settings_from_the_environment() -> None:
    with pytest.raises(SettingsError, match="OSAGO_BRIDGE_AGGREGATOR"):
        BridgeSettings.from_env(DEV_ENV | {})
    with pytest.raises(SettingsError, match="OSAGO_BRIDGE_PORT"):
        BridgeSettings.from_env(DEV_ENV | {"OSAGO_BRIDGE_AGGREGATOR": "a:1", "OSAGO_BRIDGE_PORT": "http"})
    settings = BridgeSettings.from_env(
        DEV_ENV | {"OSAGO_BRIDGE_AGGREGATOR": "agg:50050", "OSAGO_BRIDGE_HOST": "0.0.0.0", "OSAGO_BRIDGE_PORT": "9000"}
    )
    assert (settings.aggregator_target, settings.host, settings.port) == ("agg:50050", "0.0.0.0", 9000)
    assert settings.page_dir == DEFAULT_STATIC_DIR
    assert BridgeSettings.from_env(DEV_ENV | {}, aggregator_target="x:1", port=0).port == 0


async def test_the_process_prints_its_address_and_stops_on_sigterm(mesh: Mesh) -> None:
    env = {**os.environ, **DEV_ENV, "OSAGO_BRIDGE_AGGREGATOR": mesh.target, "OSAGO_BRIDGE_PORT": "0"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "web_bridge", env=env, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        assert line.startswith("listening http://127.0.0.1:"), line
        assert await get(mesh.http, line.split()[1] + "/readyz") == (200, {"status": "ready", "aggregator": "SERVING"})
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
