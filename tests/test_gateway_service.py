"""The gateway as a real gRPC server on port 0 in front of the insurer simulator over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

import aiohttp
import grpc
import pytest
from aiohttp import web
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from osago.v1 import application_pb2, gateway_service_pb2, gateway_service_pb2_grpc, quote_pb2

from insurer_gateway.dialects import DIALECTS
from insurer_gateway.exchange import HttpResponse
from insurer_gateway.service import GatewayService, serve_forever
from insurer_gateway.settings import GatewaySettings
from insurer_sim.config import SimConfig
from insurer_sim.profiles import profile
from insurer_sim.server import SimServer
from osago_common.clock import SYSTEM_CLOCK, Clock, FakeClock
from tests.conftest import serve_app

# The dev mode (plaintext): these tests are about the other settings.
DEV_ENV = {"OSAGO_DEV_INSECURE": "true"}

pytestmark = pytest.mark.functional

SERVICE = "osago.v1.InsurerGatewayService"


def make_application(
    purpose: application_pb2.VehiclePurpose.ValueType = application_pb2.VEHICLE_PURPOSE_PERSONAL,
) -> application_pb2.Application:
    """A Moscow Lada with one class-3 driver."""
    name = application_pb2.PersonName(last_name="Petrov", first_name="Pyotr", middle_name="Petrovich")
    return application_pb2.Application(
        vehicle=application_pb2.Vehicle(
            vin="XTAGFL110NY612345",
            plate="М482КХ797",
            make="Lada",
            model="Vesta",
            year=2022,
            power_hp=106,
            category=application_pb2.VEHICLE_CATEGORY_B,
            purpose=purpose,
        ),
        owner=application_pb2.Owner(
            name=name,
            birth_date="1985-03-14",
            registration_city="Moscow",
            kbm_class=application_pb2.KBM_CLASS_3,
        ),
        drivers=[
            application_pb2.Driver(
                name=name,
                birth_date="1985-03-14",
                licence_number="7731456802",
                licence_issue_date="2005-04-02",
                kbm_class=application_pb2.KBM_CLASS_3,
            )
        ],
        usage_months=12,
    )


@dataclass
class Running:
    sim_url: str
    gateways: dict[str, GatewayService]
    stubs: dict[str, gateway_service_pb2_grpc.InsurerGatewayServiceStub]
    channels: dict[str, grpc.aio.Channel]
    http: aiohttp.ClientSession

    async def sim(self, path: str, **params: str) -> Any:
        async with self.http.get(f"{self.sim_url}{path}", params=params) as response:
            assert response.status == 200
            return await response.json()

    async def status(self, insurer_id: str) -> gateway_service_pb2.GetGatewayStatusResponse:
        return await self.stubs[insurer_id].GetGatewayStatus(gateway_service_pb2.GetGatewayStatusRequest())

    async def wait_idle(self, insurer_id: str) -> None:
        for _ in range(500):
            if (await self.status(insurer_id)).in_flight == 0:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the gateway still has calls in flight")


@contextlib.asynccontextmanager
async def running(
    *insurer_ids: str, time_scale: float = 0.01, clock: Clock = SYSTEM_CLOCK, **overrides: Any
) -> AsyncIterator[Running]:
    """The simulator and a gateway per insurer, all on `clock`."""
    async with contextlib.AsyncExitStack() as stack:
        sim = SimServer(
            SimConfig(insurers=tuple(profile(i) for i in insurer_ids), time_scale=time_scale, seed=11), clock
        )
        sim_url = await sim.start()
        stack.push_async_callback(sim.stop)
        gateways, stubs, channels = {}, {}, {}
        for insurer_id in insurer_ids:
            settings = GatewaySettings.from_env(
                DEV_ENV
                | {"OSAGO_GATEWAY_INSURER": insurer_id, "OSAGO_GATEWAY_BASE_URL": f"{sim_url}/insurers/{insurer_id}"},
                **overrides,
            )
            gateway = GatewayService(settings, clock)
            port = await gateway.start()
            stack.push_async_callback(gateway.stop)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            stack.push_async_callback(channel.close)
            gateways[insurer_id] = gateway
            channels[insurer_id] = channel
            stubs[insurer_id] = gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel)
        http = aiohttp.ClientSession()
        stack.push_async_callback(http.close)
        yield Running(sim_url, gateways, stubs, channels, http)


def request(
    request_id: str, application: application_pb2.Application | None = None
) -> gateway_service_pb2.RequestOfferRequest:
    """Fixed request ids: the simulator draws each application's fate from the seed and the id."""
    return gateway_service_pb2.RequestOfferRequest(request_id=request_id, application=application or make_application())


async def collect(
    stub: gateway_service_pb2_grpc.InsurerGatewayServiceStub,
    req: gateway_service_pb2.RequestOfferRequest,
    timeout: float | None = 10.0,
) -> list[gateway_service_pb2.RequestOfferResponse]:
    return [update async for update in stub.RequestOffer(req, timeout=timeout)]


@pytest.mark.parametrize("insurer_id", ["alfa", "ingos"], ids=["rest", "calc"])
async def test_the_offer_is_streamed_and_matches_the_insurers_ledger(insurer_id: str) -> None:
    async with running(insurer_id) as mesh:
        req = request("req-offer")
        updates = await collect(mesh.stubs[insurer_id], req)
        kinds = [u.WhichOneof("update") for u in updates]
        assert kinds[0] == "accepted" and kinds[-1] == "offer"
        assert set(kinds[1:-1]) <= {"pending"}
        offer = updates[-1].offer
        ledger = (await mesh.sim("/_sim/ledger", reference=req.request_id))["offers"]
        assert len(ledger) == 1
        assert offer.premium_kopecks == ledger[0]["premium_kopecks"] > 0
        assert offer.offer_id == ledger[0]["offer_id"]
        assert updates[0].accepted.insurer_application_id == ledger[0]["application_id"]
        assert (offer.insurer_id, offer.insurer_name, offer.currency) == (insurer_id, profile(insurer_id).name, "RUB")
        assert offer.breakdown.base_rate_kopecks > 0 and offer.breakdown.kt > 0
        assert offer.valid_until.seconds > 0 and offer.purchase_url.startswith(mesh.sim_url)
        # The gateway stamps when it got the offer: after the insurer had it ready and issued it.
        issued = datetime.fromisoformat(ledger[0]["issued_at"])
        assert datetime.fromisoformat(ledger[0]["ready_at"]) <= issued <= offer.obtained_at.ToDatetime(UTC)


async def test_a_decline_ends_the_stream_with_the_insurers_reason() -> None:
    async with running("reso") as mesh:  # RESO declines every taxi
        taxi = make_application(application_pb2.VEHICLE_PURPOSE_TAXI)
        updates = await collect(mesh.stubs["reso"], request("req-taxi", application=taxi))
        last = updates[-1]
        assert last.WhichOneof("update") == "failed"
        assert last.failed.reason == quote_pb2.FAILURE_REASON_DECLINED
        assert last.failed.message == "taxis are not insured"
        status = await mesh.status("reso")
        assert (status.requests_total, status.offers_total, status.failures_total) == (1, 0, 1)


async def test_asking_again_with_the_same_request_id_resumes_the_insurer_application() -> None:
    async with running("alfa", "ingos") as mesh:
        for insurer_id in ("alfa", "ingos"):
            req = request("req-resume")
            first = await collect(mesh.stubs[insurer_id], req)
            second = await collect(mesh.stubs[insurer_id], req)
            assert first[0].accepted.insurer_application_id == second[0].accepted.insurer_application_id
            # The same offer; only the moment this call obtained it differs.
            first[-1].offer.ClearField("obtained_at")
            second[-1].offer.ClearField("obtained_at")
            assert first[-1].offer == second[-1].offer
            stats = await mesh.sim("/_sim/stats")
            assert stats["insurers"][insurer_id]["creates"] == 1
            assert [a["reference"] for a in stats["applications"] if a["insurer_id"] == insurer_id] == [req.request_id]
            ledger = await mesh.sim("/_sim/ledger", reference=req.request_id, insurer_id=insurer_id)
            assert len(ledger["offers"]) == 1


async def test_cancelling_the_call_stops_polling_the_insurer(clock: FakeClock) -> None:
    # An offer takes the insurer seconds of the fake clock; the gateway polls every 20 ms of it.
    async with running("alfa", time_scale=1.0, clock=clock, max_poll_interval_s=0.02) as mesh:
        req = request("req-cancel")
        call = mesh.stubs["alfa"].RequestOffer(req, timeout=30)
        updates = call.__aiter__()
        assert (await anext(updates)).WhichOneof("update") == "accepted"
        pending = asyncio.ensure_future(anext(updates))  # anext gives an awaitable, not a coroutine
        while not pending.done():  # the clock moves on only while the gateway waits to poll
            if clock.sleepers:
                await clock.advance(0.02)
            else:
                await asyncio.sleep(0.001)
        assert pending.result().WhichOneof("update") == "pending"

        async def polls() -> int:
            stats = await mesh.sim("/_sim/stats", reference=req.request_id)
            return int(stats["applications"][0]["polls"])

        assert await polls() >= 1
        call.cancel()
        await mesh.wait_idle("alfa")
        assert clock.sleepers == 0  # no poll is waiting to be made
        before = await polls()
        await clock.advance(1.0)  # fifty poll intervals
        assert await polls() == before
        status = await mesh.status("alfa")
        assert (status.in_flight, status.requests_total, status.failures_total) == (0, 1, 1)


async def test_a_short_deadline_ends_the_stream_in_time_with_a_deadline_failure() -> None:
    async with running("ingos", time_scale=1.0) as mesh:
        # The call returned OK (no DEADLINE_EXCEEDED raised): the stream ended before its 0.5 s
        # deadline, with an answer saying so.
        updates = await collect(mesh.stubs["ingos"], request("req-short"), timeout=0.5)
        assert updates[0].WhichOneof("update") == "accepted"
        assert updates[-1].failed.reason == quote_pb2.FAILURE_REASON_DEADLINE
        await mesh.wait_idle("ingos")


async def test_a_call_without_deadline_gets_the_configured_maximum() -> None:
    async with running("alfa", max_call_s=0.3, time_scale=1.0) as mesh:
        updates = await collect(mesh.stubs["alfa"], request("req-no-deadline"), timeout=None)
        assert updates[-1].failed.reason == quote_pb2.FAILURE_REASON_DEADLINE


async def test_an_insurer_that_is_down_is_reported_unavailable() -> None:
    async with running("alfa") as mesh:
        settings = GatewaySettings.from_env(
            DEV_ENV | {"OSAGO_GATEWAY_INSURER": "alfa", "OSAGO_GATEWAY_BASE_URL": "http://127.0.0.1:9/insurers/alfa"}
        )
        gateway = GatewayService(settings)
        port = await gateway.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel)
                updates = await collect(stub, request("req-down"))
        finally:
            await gateway.stop()
        assert [u.WhichOneof("update") for u in updates] == ["failed"]
        assert updates[0].failed.reason == quote_pb2.FAILURE_REASON_UNAVAILABLE
        assert "127.0.0.1" not in updates[0].failed.message
        assert mesh.gateways  # the simulator's gateway is unaffected


@pytest.mark.parametrize(
    ("req", "fields"),
    [
        (gateway_service_pb2.RequestOfferRequest(application=make_application()), ["request_id"]),
        (gateway_service_pb2.RequestOfferRequest(request_id="r-1"), ["application"]),
        (
            gateway_service_pb2.RequestOfferRequest(request_id="bad id\n", application=make_application()),
            ["request_id"],
        ),
    ],
)
async def test_invalid_requests_are_refused_with_field_violations(
    req: gateway_service_pb2.RequestOfferRequest, fields: list[str]
) -> None:
    async with running("alfa") as mesh:
        call = mesh.stubs["alfa"].RequestOffer(req, timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            [u async for u in call]
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = await rpc_status.aio.from_call(call)
        assert status is not None
        bad_request = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad_request)
        assert [v.field for v in bad_request.field_violations] == fields
        assert (await mesh.sim("/_sim/stats"))["insurers"]["alfa"]["creates"] == 0


async def test_an_application_the_dialect_cannot_write_names_the_field_and_no_personal_data() -> None:
    async with running("ingos") as mesh:
        app = make_application()
        app.drivers[0].kbm_class = application_pb2.KBM_CLASS_UNSPECIFIED
        call = mesh.stubs["ingos"].RequestOffer(request("req-no-class", application=app), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            [u async for u in call]
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Petrov" not in (caught.value.details() or "")
        status = await rpc_status.aio.from_call(call)
        bad_request = error_details_pb2.BadRequest()
        status.details[0].Unpack(bad_request)
        assert bad_request.field_violations[0].field == "application.drivers[0].kbm_class"


PERSONAL_DATA = ("Petrov", "Pyotr", "7731456802", "XTAGFL110NY612345")


async def test_an_unexpected_error_is_unknown_internal_error_logged_without_personal_data(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(response: HttpResponse) -> NoReturn:
        raise RuntimeError("cannot handle " + " ".join(PERSONAL_DATA))

    monkeypatch.setattr(DIALECTS["rest"], "parse_create", broken)
    caplog.set_level(logging.DEBUG)
    async with running("alfa") as mesh:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(mesh.stubs["alfa"], request("req-broken"))
        assert caught.value.code() == grpc.StatusCode.UNKNOWN
        assert caught.value.details() == "internal error"
        status = await mesh.status("alfa")
        assert (status.in_flight, status.failures_total) == (0, 1)
    assert "trace_id=" in caplog.text and "RuntimeError" in caplog.text
    assert not [word for word in PERSONAL_DATA if word in caplog.text]


async def test_offers_and_declines_log_no_personal_data(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running("alfa", "reso") as mesh:
        await collect(mesh.stubs["alfa"], request("req-log"))
        await collect(mesh.stubs["reso"], request("req-log", make_application(application_pb2.VEHICLE_PURPOSE_TAXI)))
    # The request id travels as the records' `extra` (the log formats show it), never the person.
    assert [r for r in caplog.records if getattr(r, "request_id", None) == "req-log"]
    logged = caplog.text + "\n".join(str(r.__dict__) for r in caplog.records)
    assert not [word for word in PERSONAL_DATA if word in logged]


async def test_health_is_serving_and_status_reports_the_gateway() -> None:
    async with running("ingos") as mesh:
        health = health_pb2_grpc.HealthStub(mesh.channels["ingos"])
        for service in ("", SERVICE):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        await collect(mesh.stubs["ingos"], request("req-status"))
        status = await mesh.status("ingos")
        assert (status.insurer.insurer_id, status.insurer.insurer_name) == ("ingos", "Ingosstrakh")
        assert (status.dialect, status.base_url) == ("calc", f"{mesh.sim_url}/insurers/ingos")
        assert status.breaker_state == gateway_service_pb2.BREAKER_STATE_CLOSED
        assert (status.in_flight, status.requests_total, status.offers_total, status.failures_total) == (0, 1, 1, 0)


async def test_status_says_when_the_gateway_started(clock: FakeClock) -> None:
    await clock.advance(90.0)
    settings = GatewaySettings.from_env(
        DEV_ENV | {"OSAGO_GATEWAY_INSURER": "alfa", "OSAGO_GATEWAY_BASE_URL": "http://127.0.0.1:9"}
    )
    gateway = GatewayService(settings, clock)
    port = await gateway.start()
    try:
        await clock.advance(30.0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel)
            status = await stub.GetGatewayStatus(gateway_service_pb2.GetGatewayStatusRequest())
    finally:
        await gateway.stop(0)
    assert status.started_at.ToDatetime(tzinfo=UTC) == datetime(2026, 1, 15, 9, 1, 30, tzinfo=UTC)


async def test_stopping_twice_is_safe_and_ends_serving() -> None:
    async with running("alfa") as mesh:
        gateway = mesh.gateways["alfa"]
        await gateway.stop(0)
        await gateway.stop(0)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mesh.status("alfa")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_serve_forever_prints_one_listening_line_and_stops_when_cancelled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = GatewaySettings.from_env(
        DEV_ENV | {"OSAGO_GATEWAY_INSURER": "alfa", "OSAGO_GATEWAY_BASE_URL": "http://127.0.0.1:9"}
    )
    task = asyncio.create_task(serve_forever(settings))
    for _ in range(500):
        out = capsys.readouterr().out
        if out:
            break
        await asyncio.sleep(0.01)
    assert out.startswith("listening 127.0.0.1:") and out.count("\n") == 1
    port = int(out.strip().rsplit(":", 1)[1])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def broken_insurer(behaviour: str) -> AsyncIterator[str]:
    """A "rest" insurer whose create call misbehaves in one way; yields its base URL."""

    async def create(request: web.Request) -> web.StreamResponse:
        if behaviour == "hang":
            await asyncio.Event().wait()
        if behaviour == "reset":
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(0.05)
        if behaviour == "huge":
            return web.Response(body=b"x" * (2 << 20), content_type="application/json")
        if behaviour == "html":
            return web.Response(text="<html>Bad Gateway</html>", content_type="text/html", status=200)
        if behaviour == "429":
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "1"})
        return web.json_response({"error": "maintenance"}, status=503)

    app = web.Application()
    app.router.add_post("/insurers/alfa/api/v1/applications", create)
    async with serve_app(app) as url:
        yield f"{url}/insurers/alfa"


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("hang", quote_pb2.FAILURE_REASON_TIMEOUT),
        ("reset", quote_pb2.FAILURE_REASON_UNAVAILABLE),
        ("503", quote_pb2.FAILURE_REASON_INSURER_ERROR),
        ("429", quote_pb2.FAILURE_REASON_RATE_LIMITED),
        ("html", quote_pb2.FAILURE_REASON_BAD_RESPONSE),
        ("huge", quote_pb2.FAILURE_REASON_BAD_RESPONSE),
    ],
)
async def test_insurer_failures_over_real_http_become_failure_reasons(behaviour: str, reason: int) -> None:
    async with broken_insurer(behaviour) as base_url:
        settings = GatewaySettings.from_env(
            DEV_ENV | {"OSAGO_GATEWAY_INSURER": "alfa", "OSAGO_GATEWAY_BASE_URL": base_url},
            http_timeout_s=0.2,
            retry_max_attempts=1,  # the mapping of one answer; retries: test_gateway_resilience
        )
        gateway = GatewayService(settings)
        port = await gateway.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel)
                updates = await collect(stub, request("req-broken-insurer"))
        finally:
            await gateway.stop()
    # Each its own reason at once: nothing waited for the call's 10 s deadline (that would end
    # DEADLINE_EXCEEDED, or with a DEADLINE failure).
    assert [u.WhichOneof("update") for u in updates] == ["failed"]
    assert updates[0].failed.reason == reason
    assert updates[0].failed.message
