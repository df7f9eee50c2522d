"""Personal data: a whole session's logs (every logger, DEBUG, as records and as the JSON lines
a log store receives), spans, operator-facing counters and every service's Prometheus metrics
hold none of the application's personal fields, nor do the errors a wrong application gets; and
the purge erases the personal data of old finished requests while their events and the
insurers' answers stay (both stores, one contract)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import psycopg
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import application_pb2, events_pb2

from aggregator.postgres import PostgresRequestStore
from aggregator.store import MemoryRequestStore, RequestRecord, RequestStore
from osago_common.clock import FakeClock
from osago_common.logs import JsonLineFormatter
from osago_common.metrics import MetricsEndpoint
from tests.conftest import EXAMPLES, start_mesh
from tests.metrics_kit import scrape
from web_bridge.service import BridgeService
from web_bridge.settings import BridgeSettings

# Distinctive values, so that finding one anywhere cannot be a coincidence.
PERSONAL = {
    "last_name": "Зельдович",
    "first_name": "Евлампий",
    "middle_name": "Аристархович",
    "birth_date": "1981-07-23",
    "licence_number": "6612904713",
    "vin": "XTAGFL110NY698731",
    "plate": "Т731УХ777",
    "document_number": "906142",
}


def application_json() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EXAMPLES / "moscow-young-driver.json").read_text(encoding="utf-8"))
    for person in (document["owner"], document["drivers"][0]):
        person["name"] = {
            "lastName": PERSONAL["last_name"],
            "firstName": PERSONAL["first_name"],
            "middleName": PERSONAL["middle_name"],
        }
        person["birthDate"] = PERSONAL["birth_date"]
    document["drivers"][0]["licenceNumber"] = PERSONAL["licence_number"]
    document["vehicle"]["vin"] = PERSONAL["vin"]
    document["vehicle"]["plate"] = PERSONAL["plate"]
    document["vehicle"]["registrationDocument"]["number"] = PERSONAL["document_number"]
    return document


def leaks(text: str) -> list[str]:
    return [name for name, value in PERSONAL.items() if value in text]


@pytest.mark.functional
async def test_a_whole_sessions_logs_spans_counters_metrics_and_errors_hold_no_personal_data(
    caplog: pytest.LogCaptureFixture, spans: InMemorySpanExporter
) -> None:
    caplog.set_level(logging.DEBUG)
    json_log = io.StringIO()
    json_handler = logging.StreamHandler(json_log)
    json_handler.setFormatter(JsonLineFormatter("osago-test"))
    logging.getLogger().addHandler(json_handler)
    document = application_json()
    answers: list[str] = []
    async with start_mesh(n=4, time_scale=0.02) as mesh:
        bridge = BridgeService(
            BridgeSettings(aggregator_target=mesh.target, port=0, metrics=MetricsEndpoint("127.0.0.1", 0))
        )
        await bridge.start()
        try:
            async with aiohttp.ClientSession() as http:
                headers = {"Content-Type": "application/json"}
                async with http.post(f"{bridge.url}/osago/quotes", json=document, headers=headers) as response:
                    created = await response.json()
                    assert response.status == 201, created
                protocols = ("osago.v1", f"access-token.{created['accessToken']}")
                ws_url = bridge.url.replace("http", "ws", 1) + f"/osago/quotes/{created['requestId']}/stream"
                async with http.ws_connect(ws_url, protocols=protocols) as ws:
                    events = [m.data async for m in ws]
                assert "sessionFinished" in events[-1]
                # The same person with mistakes: the errors name fields, never values.
                wrong = json.loads(json.dumps(document))
                wrong["vehicle"]["vin"] = PERSONAL["vin"][:-1] + "O"
                wrong["drivers"][0]["licenceNumber"] = PERSONAL["licence_number"] + "X"
                wrong["owner"]["name"]["lastName"] = PERSONAL["last_name"] + "\u202e"
                async with http.post(f"{bridge.url}/osago/quotes", json=wrong, headers=headers) as response:
                    answers.append(await response.text())
                    assert response.status == 400
            application = application_pb2.Application()
            json_format.ParseDict(wrong, application)
            try:
                await mesh.stub.CreateQuoteRequest(pb.CreateQuoteRequestRequest(application=application), timeout=5)
            except Exception as error:  # noqa: BLE001 - its text is what is checked
                answers.append(str(error))
            # What operators read: each gateway's counters, the health of every service.
            for insurer_id in mesh.gateway_targets:
                answers.append(json_format.MessageToJson(await mesh.gateway_status(insurer_id)))
            health = await health_pb2_grpc.HealthStub(mesh.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            answers.append(str(health))
            # What Prometheus scrapes from every service.
            assert bridge.metrics_server is not None
            endpoints = [*mesh.metrics.values(), bridge.metrics_server.url]
            assert len(endpoints) == 6
            async with aiohttp.ClientSession() as http:
                for url in endpoints:
                    scraped = await scrape(http, url)
                    assert any(name.startswith("osago_") for name in scraped.names())
                    assert created["requestId"] not in scraped.text
                    answers.append(scraped.text)
        finally:
            await bridge.stop()
            logging.getLogger().removeHandler(json_handler)
    assert len(answers) >= 6
    # The insurers' own systems (the simulator) are sent the application by design: their
    # records are theirs, not ours.
    ours = [r for r in caplog.records if not r.name.startswith("insurer_sim")]
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.__dict__}" for r in ours)
    assert len(ours) > 10 and leaks(logged) == []
    traced = "\n".join(s.to_json() for s in spans.get_finished_spans())
    assert spans.get_finished_spans() and leaks(traced) == []
    assert leaks("\n".join(answers)) == []

    # The JSON lines: each one object, none with personal data; the gateways' lines about the
    # session carry its trace id (the session span's, which continued web_bridge's request).
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    ours_json = [line for line in lines if not str(line["logger"]).startswith("insurer_sim")]
    assert len(ours_json) > 10 and leaks(json.dumps(ours_json, ensure_ascii=False)) == []
    [session] = [s for s in spans.get_finished_spans() if s.name == "quote_session"]
    session_trace = f"{session.context.trace_id:032x}"
    about = [
        line
        for line in ours_json
        if line.get("request_id") == created["requestId"] and str(line["logger"]).startswith("insurer_gateway")
    ]
    assert len(about) >= 4 and {line["trace_id"] for line in about} == {session_trace}
    assert {str(line["insurer"]) for line in about} <= set(mesh.gateway_targets)


# --- the purge ------------------------------------------------------------------------------------


def record(request_id: str, created_at: datetime) -> RequestRecord:
    return RequestRecord(
        request_id=request_id,
        created_at=created_at,
        deadline=created_at + timedelta(seconds=60),
        insurers=(("alfa", "Alfa"),),
        idempotency_key=f"key-{request_id}",
        fingerprint="f" * 64,
        customer_id="core-app:alice",
    )


def event(request_id: str, seq: int, at: datetime, payload: str) -> events_pb2.QuoteEvent:
    e = events_pb2.QuoteEvent(request_id=request_id, seq=seq)
    e.time.FromDatetime(at)
    if payload == "started":
        e.session_started.insurers.add(insurer_id="alfa", insurer_name="Alfa")
    elif payload == "quote":
        e.quote_received.quote.insurer_id = "alfa"
        e.quote_received.quote.premium_kopecks = 812_345
    else:
        e.session_finished.status = events_pb2.SESSION_STATUS_COMPLETED
    return e


@pytest.fixture(params=["memory", "postgres"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RequestStore, str]]:
    """A store, and its database's URL ("" for the embedded one)."""
    if request.param == "memory":
        yield MemoryRequestStore(), ""
        return
    url = request.getfixturevalue("postgres_db")
    async with PostgresRequestStore.open(url) as postgres:
        yield postgres, url


@pytest.mark.functional
async def test_the_purge_erases_old_finished_requests_personal_data_and_keeps_their_answers(
    store: tuple[RequestStore, str],
) -> None:
    requests, url = store
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    now = clock.now()
    old, recent, running = now - timedelta(days=4), now - timedelta(hours=1), now - timedelta(days=5)
    application = b"\x0a\x02personal"
    for request_id, created, finished in (("old", old, True), ("recent", recent, True), ("running", running, False)):
        _, lease = await requests.create(
            record(request_id, created), application, {"make": "Lada"}, event(request_id, 1, created, "started"), "me"
        )
        assert lease is not None
        more = [event(request_id, 2, created, "quote")]
        if finished:
            more.append(event(request_id, 3, created, "finished"))
        await requests.append(lease, more)

    purged = await requests.purge_personal(now - timedelta(days=3), now, limit=10)
    assert purged == 1
    assert await requests.purge_personal(now - timedelta(days=3), now, limit=10) == 0  # once only

    kept = await requests.get("old")
    assert kept is not None and kept.customer_id == "" and kept.idempotency_key == "" and kept.fingerprint == ""
    assert [e.seq for e in await requests.events("old")] == [1, 2, 3]  # the audit trail stays
    for untouched in ("recent", "running"):
        found = await requests.get(untouched)
        assert found is not None and found.customer_id == "core-app:alice"
    if isinstance(requests, MemoryRequestStore):
        assert requests.application("old") == b"" and requests.application("recent") == application
    else:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            rows = await (
                await conn.execute(
                    "SELECT id, application IS NULL, purged_at IS NOT NULL FROM osago_requests ORDER BY id"
                )
            ).fetchall()
            quotes = await (
                await conn.execute("SELECT request_id, company_id, status FROM osago_quotes ORDER BY request_id")
            ).fetchall()
        assert rows == [("old", True, True), ("recent", False, False), ("running", False, False)]
        assert ("old", "alfa", "offered") in quotes  # the offer's audit row remains
