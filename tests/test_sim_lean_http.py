"""The lean HTTP server of the simulated insurers' own ports, over raw sockets: what any HTTP/1.1
client may send it (pipelined requests, Connection: close, HTTP/1.0, HEAD, Expect: 100-continue,
bodies and heads too large, bytes that are not HTTP), the Host header in payment links, idle
connections, an unexpected error, and the server on uvloop as every simulator process runs it.
The API itself (routes, dialects, faults) is tested on both servers in test_insurer_sim.py and
test_sim_faults.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import uvloop
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from insurer_sim import api, lean_http
from insurer_sim.config import SimConfig
from insurer_sim.server import SimServer
from osago_common.clock import FakeClock
from tests.test_insurer_sim import PROFILES, rest_body
from tests.test_sim_faults import fault, heal, until_held

functional = pytest.mark.functional


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[SimServer]:
    async with SimServer(SimConfig(PROFILES, seed=7, insurer_ports=True), clock) as server:
        yield server


def address(sim: SimServer, insurer_id: str = "restco") -> tuple[str, int]:
    parts = urlsplit(sim.insurer_url(insurer_id))
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def read_response(reader: asyncio.StreamReader, *, head: bool = False, version: str = "1.1") -> Response:
    """One HTTP response, read as any client would: status line (of the request's HTTP
    version), headers, Content-Length."""
    status_line = (await asyncio.wait_for(reader.readline(), 10)).decode("latin-1")
    answered, status, _ = status_line.split(" ", 2)
    assert answered == f"HTTP/{version}", status_line
    headers: dict[str, str] = {}
    while (line := (await reader.readline()).decode("latin-1").rstrip("\r\n")) != "":
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    body = b"" if head else await reader.readexactly(length)
    return Response(int(status), headers, body)


async def closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection (EOF) with nothing more to read."""
    return await asyncio.wait_for(reader.read(1), 10) == b""


@functional
async def test_pipelined_requests_are_answered_in_order_on_one_connection(sim: SimServer) -> None:
    reader, writer = await asyncio.open_connection(*address(sim))
    body = json.dumps(rest_body("req-pipe")).encode()
    writer.write(
        b"GET /insurers/restco/nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /insurers/restco/api/v1/applications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s"
        b"DELETE /insurers/restco/api/v1/applications HTTP/1.1\r\nHost: x\r\n\r\n" % (len(body), body)
    )
    first, second, third = [await read_response(reader) for _ in range(3)]
    assert (first.status, first.json()) == (404, {"error": "not found"})
    assert second.status == 201 and second.json()["status"] == "PROCESSING"
    assert second.headers["content-type"] == "application/json; charset=utf-8"
    assert (third.status, third.headers["allow"]) == (405, "POST")
    writer.write(b"GET /insurers/restco/nowhere HTTP/1.1\r\nHost: x\r\n\r\n")  # and it stays open
    assert (await read_response(reader)).status == 404
    writer.close()


@functional
async def test_a_chunked_body_and_an_absolute_url_are_taken_as_any_http_1_1_server_takes_them(
    sim: SimServer,
) -> None:
    host, port = address(sim)
    reader, writer = await asyncio.open_connection(host, port)
    body = json.dumps(rest_body("req-chunked")).encode()
    half = len(body) // 2
    writer.write(
        b"POST http://%s:%d/insurers/restco/api/v1/applications?x=1 HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
        % (host.encode(), port, half, body[:half], len(body) - half, body[half:])
    )
    created = await read_response(reader)
    assert created.status == 201, created.body
    writer.write(
        b"GET http://%s:%d/insurers/restco/api/v1/applications/%s HTTP/1.1\r\nHost: x\r\n\r\n"
        % (host.encode(), port, created.json()["applicationId"].encode())
    )
    assert (await read_response(reader)).json()["status"] == "PROCESSING"
    writer.close()


def create_request(ref: str, extra: bytes = b"") -> bytes:
    body = json.dumps(rest_body(ref)).encode()
    return (
        b"POST /insurers/restco/api/v1/applications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"%sContent-Length: %d\r\n\r\n%s" % (extra, len(body), body)
    )


NOWHERE = b"GET /insurers/restco/nowhere HTTP/1.1\r\nHost: x\r\n\r\n"


@functional
async def test_requests_pipelined_behind_a_delayed_one_wait_for_it_however_many(
    sim: SimServer, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    await fault(http, sim, "restco", mode="slow", delay_s=5.0)
    reader, writer = await asyncio.open_connection(*address(sim))
    many = lean_http.MAX_PIPELINED + 8  # past the point where reading pauses
    writer.write(
        create_request("req-slow") + NOWHERE * many + b"DELETE /insurers/restco/api/v1/applications HTTP/1.1\r\n\r\n"
    )
    await clock.advance(5.0)
    first = await read_response(reader)
    assert first.status == 201 and first.json()["status"] == "PROCESSING"  # the delayed one first
    rest = [await read_response(reader) for _ in range(many + 1)]
    assert [r.status for r in rest] == [404] * many + [405]
    writer.close()


@functional
async def test_what_cannot_be_taken_behind_a_delayed_request_is_refused_after_its_answer(
    sim: SimServer, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    await fault(http, sim, "restco", mode="slow", delay_s=5.0)
    reader, writer = await asyncio.open_connection(*address(sim))
    writer.write(create_request("req-before-garbage") + NOWHERE + b"NOT HTTP\r\n\r\n")
    await clock.advance(5.0)
    assert (await read_response(reader)).status == 201
    assert (await read_response(reader)).status == 404
    refused = await read_response(reader)
    assert (refused.status, refused.json()) == (400, {"error": "bad request"})
    assert await closed(reader)
    writer.close()


@functional
async def test_an_upgrade_is_ignored_as_by_aiohttp_and_one_with_a_body_refused_once(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    reader, writer = await asyncio.open_connection(*address(sim))
    upgrade = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
    writer.write(b"GET /insurers/restco/nowhere HTTP/1.1\r\nHost: x\r\n" + upgrade + b"\r\n" + NOWHERE)
    assert [(await read_response(reader)).status for _ in range(2)] == [404, 404]  # one answer each
    writer.close()
    reader, writer = await asyncio.open_connection(*address(sim))
    writer.write(create_request("req-upgrade", upgrade))
    refused = await read_response(reader)
    assert (refused.status, refused.json()) == (400, {"error": "bad request"})
    assert await closed(reader)  # and nothing after the one answer
    writer.close()
    async with http.get(f"{sim.url}/_sim/stats") as r:
        assert (await r.json())["insurers"]["restco"]["creates"] == 0


@functional
async def test_the_first_of_a_repeated_idempotency_key_counts(sim: SimServer, http: aiohttp.ClientSession) -> None:
    reader, writer = await asyncio.open_connection(*address(sim))
    writer.write(create_request("req-keys", b"Idempotency-Key: first\r\nIdempotency-Key: second\r\n"))
    created = (await read_response(reader)).json()
    writer.write(create_request("req-keys", b"Idempotency-Key: first\r\n"))
    again = await read_response(reader)
    writer.close()
    assert again.status in (200, 201) and again.json()["applicationId"] == created["applicationId"]


@functional
async def test_every_request_has_one_server_span_ended_once_however_it_ends(
    spans: InMemorySpanExporter, sim: SimServer, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    url = sim.insurer_url("restco") + "/api/v1/applications"
    async with http.post(url, json=rest_body("req-span")) as r:  # answered at once
        assert r.status == 201
    async with http.get(f"{url}/none") as r:
        assert r.status == 404
    await fault(http, sim, "restco", mode="slow", delay_s=60.0)
    with pytest.raises(TimeoutError):  # a delayed one whose client leaves
        await http.post(url, json=rest_body("req-gone"), timeout=aiohttp.ClientTimeout(total=0.2))
    await fault(http, sim, "restco", mode="blackhole")
    with pytest.raises(TimeoutError):  # a held one whose client leaves
        await http.post(url, json=rest_body("req-held"), timeout=aiohttp.ClientTimeout(total=0.2))
    for _ in range(500):
        ours = [s for s in spans.get_finished_spans() if s.name.split(" ")[-1].startswith("/insurers/")]
        if len(ours) >= 4:
            break
        await asyncio.sleep(0.01)
    assert [s.name for s in ours] == [
        "POST /insurers/{insurer_id}/api/v1/applications",
        "GET /insurers/{insurer_id}/api/v1/applications/{ref}",
        "POST /insurers/{insurer_id}/api/v1/applications",
        "POST /insurers/{insurer_id}/api/v1/applications",
    ]
    assert all(s.kind is trace.SpanKind.SERVER for s in ours)
    assert all(s.instrumentation_scope is not None and s.instrumentation_scope.name == lean_http.__name__ for s in ours)
    assert [s.attributes.get("http.status_code") if s.attributes else None for s in ours] == [201, 404, None, None]
    assert [s.status.status_code for s in ours[2:]] == [trace.StatusCode.ERROR] * 2
    assert len({s.context.span_id for s in ours}) == 4  # each ended once
    # The shared port's server (aiohttp's instrumentation) names the same route the same way.
    await heal(http, sim, "restco")
    async with http.post(f"{sim.url}/insurers/restco/api/v1/applications", json=rest_body("req-shared")) as r:
        assert r.status == 201
    shared = [s for s in spans.get_finished_spans() if s.name.startswith("POST /insurers/")][len(ours) - 1 :]
    assert [(s.name, s.kind, s.attributes and s.attributes.get("http.route")) for s in shared] == [
        (
            "POST /insurers/{insurer_id}/api/v1/applications",
            trace.SpanKind.SERVER,
            "/insurers/{insurer_id}/api/v1/applications",
        )
    ]
    assert shared[0].instrumentation_scope is not None
    assert shared[0].instrumentation_scope.name != lean_http.__name__


@functional
async def test_connection_close_and_http_1_0_end_the_connection_after_the_answer(sim: SimServer) -> None:
    for request in [
        b"GET /insurers/restco/nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /insurers/restco/nowhere HTTP/1.0\r\n\r\n",
    ]:
        reader, writer = await asyncio.open_connection(*address(sim))
        writer.write(request)
        response = await read_response(reader, version="1.1" if b"HTTP/1.1" in request else "1.0")
        assert response.status == 404 and response.headers["connection"] == "close"
        assert await closed(reader)
        writer.close()
    # HTTP/1.0 asking to keep the connection is told it is kept.
    reader, writer = await asyncio.open_connection(*address(sim))
    writer.write(b"GET /insurers/restco/nowhere HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert (await read_response(reader, version="1.0")).headers["connection"].lower() == "keep-alive"
    writer.write(b"GET /insurers/restco/nowhere HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert (await read_response(reader, version="1.0")).status == 404
    writer.close()


@functional
async def test_head_gets_the_headers_of_get_without_the_body(sim: SimServer) -> None:
    reader, writer = await asyncio.open_connection(*address(sim))
    writer.write(b"GET /insurers/restco/pay/none HTTP/1.1\r\nHost: x\r\n\r\n")
    got = await read_response(reader)
    writer.write(b"HEAD /insurers/restco/pay/none HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await read_response(reader, head=True)
    assert got.status == head.status == 404
    assert head.headers["content-length"] == str(len(got.body)) != "0"
    # Nothing followed the head: the next answer starts right after it.
    writer.write(b"GET /insurers/restco/nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(reader)).json() == {"error": "not found"}
    writer.close()


@functional
async def test_expect_100_continue_is_answered_before_the_body_is_sent(sim: SimServer) -> None:
    reader, writer = await asyncio.open_connection(*address(sim))
    body = json.dumps(rest_body("req-expect")).encode()
    writer.write(
        b"POST /insurers/restco/api/v1/applications HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    assert (await read_response(reader)).status == 201
    writer.close()


@functional
@pytest.mark.parametrize(
    ("request_bytes", "status", "error"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "bad request"),
        (b"GET /insurers/restco/x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400, "bad request"),
        (
            b"POST /insurers/restco/api/v1/applications HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % (lean_http.MAX_BODY_BYTES + 1)
            + b"x" * (lean_http.MAX_BODY_BYTES + 1),
            413,
            "request entity too large",
        ),
        (
            b"GET /insurers/restco/x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * lean_http.MAX_HEAD_BYTES + b"\r\n\r\n",
            431,
            "request header fields too large",
        ),
    ],
    ids=["not http", "bad length", "body too large", "head too large"],
)
async def test_what_cannot_be_taken_is_refused_in_json_and_the_connection_closed(
    sim: SimServer, request_bytes: bytes, status: int, error: str
) -> None:
    reader, writer = await asyncio.open_connection(*address(sim))
    writer.write(request_bytes)
    response = await read_response(reader)
    assert (response.status, response.json()) == (status, {"error": error})
    assert response.headers["connection"] == "close"
    assert await closed(reader)
    writer.close()
    # Nothing was created by what was refused, and the server serves on.
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sim.url}/_sim/stats") as r:
            assert (await r.json())["insurers"]["restco"]["creates"] == 0
        async with http.get(sim.insurer_url("restco") + "/api/v1/applications/none") as r:
            assert r.status == 404


@functional
async def test_payment_links_follow_a_well_formed_host_header_and_ignore_any_other(
    sim: SimServer, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    host, port = address(sim)
    own = f"http://{host}:{port}"
    async with http.post(sim.insurer_url("restco") + "/api/v1/applications", json=rest_body("req-host")) as r:
        application_id = (await r.json())["applicationId"]
    await clock.advance(3600)  # the offer is ready
    for header, origin in [
        ("insurer.example:8443", "http://insurer.example:8443"),
        ("Insurer.Example", "http://insurer.example"),
        ("[::1]:8080", "http://[::1]:8080"),
        ("insurer_sim:8080", "http://insurer_sim:8080"),
        ("insurer.example:80", "http://insurer.example"),
        ("evil.example/phish?", own),
        ("a b", own),
        ("", own),
        (None, own),
    ]:
        reader, writer = await asyncio.open_connection(host, port)
        head = f"Host: {header}\r\n" if header is not None else ""
        writer.write(f"GET /insurers/restco/api/v1/applications/{application_id} HTTP/1.1\r\n{head}\r\n".encode())
        offer = (await read_response(reader)).json()["offer"]
        writer.close()
        assert offer["paymentUrl"] == f"{origin}/insurers/restco/pay/{offer['offerId']}", header


@functional
async def test_an_idle_connection_is_closed_after_the_keepalive(
    sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lean_http, "KEEPALIVE_S", 0.05)
    reader, writer = await asyncio.open_connection(*address(sim))
    writer.write(b"GET /insurers/restco/nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(reader)).status == 404
    assert await closed(reader)  # within a few idle checks, bounded by the read's 10 s
    writer.close()


@functional
async def test_an_unexpected_error_is_a_json_500_without_internal_text_and_the_server_goes_on(
    sim: SimServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> api.Answer:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(api.InsurerApi, "_answer", broken)
    async with http.post(sim.insurer_url("restco") + "/api/v1/applications", json=rest_body()) as r:
        assert (r.status, await r.json()) == (500, {"error": "internal error"})
    monkeypatch.undo()
    async with http.post(sim.insurer_url("restco") + "/api/v1/applications", json=rest_body()) as r:
        assert r.status == 201


@functional
def test_the_server_runs_on_uvloop_as_every_simulator_process_does() -> None:
    """Every service process runs uvloop (osago_common/loop.py), whose transports are not
    asyncio's classes: a create, a poll, a held request let go by a client that leaves."""

    async def scenario() -> None:
        config = SimConfig(PROFILES, seed=7, insurer_ports=True, time_scale=0.0001)
        async with SimServer(config) as server, aiohttp.ClientSession() as http:
            url = server.insurer_url("restco") + "/api/v1/applications"
            async with http.post(url, json=rest_body("req-uv")) as r:
                assert r.status == 201
                application_id = (await r.json())["applicationId"]
            for _ in range(200):
                async with http.get(f"{url}/{application_id}") as r:
                    if (await r.json())["status"] == "QUOTED":
                        break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("never quoted")
            await fault(http, server, "restco", mode="blackhole")
            held = asyncio.ensure_future(http.post(url, json=rest_body("req-held")))
            await until_held(http, server, "restco", 1)
            held.cancel()  # the client leaves
            await until_held(http, server, "restco", 0)  # and the request it held ends with it

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
