"""Faults on demand in the insurer simulator: the pure fault logic under a FakeClock, each mode
over real HTTP against a SimServer on port 0, the control API, the ledger under faults, and the
`osago sim fault|heal` CLI. Nothing sleeps for real beyond a client timeout of a fraction of a
second (blackhole, a slow answer's client giving up)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from insurer_sim.config import SimConfig
from insurer_sim.fault_state import Fail, FaultState, Garble, Proceed, Throttle
from insurer_sim.faults import MODES, Fault, FaultError, parse_fault
from insurer_sim.profiles import InsurerProfile
from insurer_sim.server import SimServer
from osago_cli import simctl
from osago_cli.main import FAULT_MODES, _parser
from osago_common.clock import FakeClock
from tests.test_insurer_sim import calc_body, rest_body

functional = pytest.mark.functional

PROFILES = (
    InsurerProfile("restco", "Rest Co", "rest", 0.5, 2.0, 0.35, 0.0),
    InsurerProfile("calcco", "Calc Co", "calc", 0.7, 3.5, 0.35, 0.0),
)
READY_S = 3600.0  # far beyond any latency the test profiles draw
GIVE_UP_S = 0.2  # a client timeout, real seconds
REST = "/api/v1/applications"
CALC = "/osago/calc"

Json = dict[str, Any]


# --- the fault logic, pure ------------------------------------------------------------------


def state(clock: FakeClock, time_scale: float = 1.0) -> FaultState:
    return FaultState(clock, random.Random(1), time_scale)


def test_fault_defaults_fill_in_only_the_modes_own_options() -> None:
    assert parse_fault({"mode": "slow"}).to_json() == {"mode": "slow", "delay_s": 8.0, "scaled": False}
    assert parse_fault({"mode": "error", "rate": 0}).to_json() == {
        "mode": "error",
        "status": 503,
        "rate": 0.0,
        "body": "json",
    }
    assert parse_fault({"mode": "down"}).to_json() == {"mode": "down"}
    assert parse_fault({"mode": "ratelimit", "limit_per_s": None}).limit_per_s is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], ""),
        ({}, "mode"),
        ({"mode": "explode"}, "mode"),
        ({"mode": "error", "rate": 1.5}, "rate"),
        ({"mode": "error", "rate": True}, "rate"),
        ({"mode": "error", "status": 404}, "status"),
        ({"mode": "error", "delay_s": 1}, "delay_s"),
        ({"mode": "down", "rate": 1}, "rate"),
        ({"mode": "slow", "delay_s": "8"}, "delay_s"),
        ({"mode": "slow", "scaled": "yes"}, "scaled"),
        ({"mode": "ratelimit", "limit_per_s": 0}, "limit_per_s"),
        ({"mode": "ratelimit", "retry_after_s": 1.5}, "retry_after_s"),
        ({"mode": "malformed", "variant": "xml"}, "variant"),
        ({"mode": "flapping", "period_s": 0}, "period_s"),
    ],
)
def test_bad_fault_names_the_field(body: object, field: str) -> None:
    # The message (the 400's text) starts with the field, or "body" for the whole of it.
    with pytest.raises(FaultError, match=f"^{field or 'body'}: (must |is not an option)") as caught:
        parse_fault(body)
    assert caught.value.field == field


def test_slow_delay_is_real_seconds_unless_scaled() -> None:
    faults = state(FakeClock(), time_scale=0.01)
    faults.set(Fault("slow"))
    assert faults.decide() == Proceed(8.0)
    faults.set(Fault("slow", delay_s=8.0, scaled=True))
    assert faults.decide() == Proceed(0.08)


async def test_flapping_fails_the_first_half_of_each_period() -> None:
    clock = FakeClock()
    faults = state(clock)
    faults.set(Fault("flapping", period_s=2.0))
    seen = []
    for _ in range(8):
        seen.append(isinstance(faults.decide(), Fail))
        await clock.advance(0.5)
    assert seen == [True, True, False, False, True, True, False, False]


async def test_quota_admits_limit_per_second_in_a_sliding_window() -> None:
    clock = FakeClock()
    faults = state(clock)
    faults.set(Fault("ratelimit", limit_per_s=3, retry_after_s=2))
    assert [faults.decide() for _ in range(4)] == [Proceed()] * 3 + [Throttle(2)]
    await clock.advance(0.999)
    assert faults.decide() == Throttle(2)
    await clock.advance(0.001)
    assert [faults.decide() for _ in range(4)] == [Proceed()] * 3 + [Throttle(2)]


def test_error_rate_fails_that_share_of_requests_and_random_garbage_takes_every_form() -> None:
    faults = state(FakeClock())
    faults.set(Fault("error", rate=0.25))
    failed = sum(isinstance(faults.decide(), Fail) for _ in range(4000))
    assert 800 < failed < 1200
    faults.set(Fault("malformed", variant="random"))
    assert {a.variant for a in (faults.decide() for _ in range(60)) if isinstance(a, Garble)} == {
        "json",
        "html",
        "schema",
    }
    assert faults.injected == 60


# --- over HTTP --------------------------------------------------------------------------------


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[SimServer]:
    async with SimServer(SimConfig(PROFILES, seed=7, insurer_ports=True), clock) as server:
        yield server


Api = Callable[[str], str]  # an insurer's id -> the base URL its API is called at


@pytest.fixture(params=["own port", "shared port"])
def api(request: pytest.FixtureRequest, sim: SimServer) -> Api:
    """Where a test calls an insurer's API: its own port (the lean server) or under the shared
    one (aiohttp); the faults are the same on both."""
    if request.param == "own port":
        return sim.insurer_url
    return lambda insurer_id: f"{sim.url}/insurers/{insurer_id}"


async def until(check: Callable[[], bool]) -> None:
    """Waits (in short real steps) until `check()` holds; fails after a few seconds."""
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: object = None, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, url, json=body, **kwargs) as r:
        assert r.content_type == "application/json"
        return r.status, await r.json()


async def fault(http: aiohttp.ClientSession, sim: SimServer, insurer_id: str, **body: object) -> Json:
    status, answer = await call(http, "PUT", f"{sim.url}/_sim/insurers/{insurer_id}/fault", body)
    assert status == 200, answer
    result: Json = answer
    return result


async def heal(http: aiohttp.ClientSession, sim: SimServer, insurer_id: str) -> Json:
    status, answer = await call(http, "DELETE", f"{sim.url}/_sim/insurers/{insurer_id}/fault")
    assert status == 200, answer
    result: Json = answer
    return result


async def fault_state(http: aiohttp.ClientSession, sim: SimServer, insurer_id: str) -> Json:
    status, answer = await call(http, "GET", f"{sim.url}/_sim/insurers/{insurer_id}/fault")
    assert status == 200
    result: Json = answer
    return result


async def create(http: aiohttp.ClientSession, base_url: str, ref: str = "req-1") -> tuple[int, Any]:
    return await call(http, "POST", base_url + REST, rest_body(ref))


async def ledger(http: aiohttp.ClientSession, sim: SimServer, **query: str) -> Json:
    status, answer = await call(http, "GET", f"{sim.url}/_sim/ledger", params=query)
    assert status == 200
    result: Json = answer
    return result


@functional
async def test_control_api_sets_shows_and_heals_one_insurers_fault(
    http: aiohttp.ClientSession, sim: SimServer, clock: FakeClock
) -> None:
    state = await fault(http, sim, "restco", mode="error", status=502)
    assert state == {
        "insurer_id": "restco",
        "fault": {"mode": "error", "status": 502, "rate": 1.0, "body": "json"},
        "since": clock.now().isoformat(),
        "injected": 0,
        "held": 0,
        "base_url": sim.insurer_url("restco"),
        "listening": True,
    }
    assert await fault_state(http, sim, "restco") == state
    _, everyone = await call(http, "GET", f"{sim.url}/_sim/faults")
    assert [(s["insurer_id"], s["fault"]) for s in everyone["insurers"]] == [
        ("restco", state["fault"]),
        ("calcco", None),
    ]
    healed = await heal(http, sim, "restco")
    assert (healed["fault"], healed["since"], healed["listening"]) == (None, None, True)
    await fault(http, sim, "restco", mode="blackhole")
    await fault(http, sim, "calcco", mode="down")
    status, reset = await call(http, "POST", f"{sim.url}/_sim/faults/reset")
    assert status == 200
    assert [(s["fault"], s["listening"]) for s in reset["insurers"]] == [(None, True), (None, True)]


@functional
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_control_api_answers_404_for_an_unknown_insurer(
    http: aiohttp.ClientSession, sim: SimServer, method: str
) -> None:
    status, error = await call(http, method, f"{sim.url}/_sim/insurers/nobody/fault", {"mode": "down"})
    assert status == 404
    assert error == {"error": "unknown insurer nobody", "field": "insurer_id"}


@functional
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mode": "explode"}, "mode"),
        ({"rate": 1}, "mode"),
        ({"mode": "error", "rate": 2}, "rate"),
        ({"mode": "error", "delay_s": 1}, "delay_s"),
        ([1, 2], None),
    ],
)
async def test_control_api_answers_400_naming_the_bad_field(
    http: aiohttp.ClientSession, sim: SimServer, body: object, field: str | None
) -> None:
    status, error = await call(http, "PUT", f"{sim.url}/_sim/insurers/restco/fault", body)
    assert status == 400
    assert error["field"] == field and error["error"]
    assert (await fault_state(http, sim, "restco"))["fault"] is None


@functional
async def test_control_api_answers_400_for_a_body_that_is_not_json(http: aiohttp.ClientSession, sim: SimServer) -> None:
    async with http.put(f"{sim.url}/_sim/insurers/restco/fault", data=b"down") as r:
        assert r.status == 400
        assert await r.json() == {"error": "the body is not valid JSON", "field": None}


@functional
async def test_each_insurer_is_also_served_on_its_own_port_listed_as_its_base_url(
    http: aiohttp.ClientSession, sim: SimServer
) -> None:
    _, insurers = await call(http, "GET", f"{sim.url}/_sim/insurers")
    urls = {i["insurer_id"]: i["base_url"] for i in insurers}
    assert urls == {"restco": sim.insurer_url("restco"), "calcco": sim.insurer_url("calcco")}
    assert all(u.endswith(f"/insurers/{i}") and not u.startswith(sim.url) for i, u in urls.items())
    status, created = await create(http, urls["restco"])
    assert status == 201
    status, _ = await call(http, "GET", f"{urls['restco']}{REST}/{created['applicationId']}")
    assert status == 200
    # The same application is there on the shared port; another insurer is not on restco's port.
    status, _ = await call(http, "GET", f"{sim.url}/insurers/restco{REST}/{created['applicationId']}")
    assert status == 200
    restco_origin = urls["restco"].removesuffix("/insurers/restco")
    status, _ = await call(http, "POST", f"{restco_origin}/insurers/calcco{CALC}", calc_body())
    assert status == 404


@functional
async def test_down_refuses_connections_on_the_insurers_port_until_heal_reopens_the_same_port(
    http: aiohttp.ClientSession, sim: SimServer
) -> None:
    url = sim.insurer_url("restco")
    status, created = await create(http, url)  # leaves a keep-alive connection open
    assert status == 201
    state = await fault(http, sim, "restco", mode="down")
    assert state["listening"] is False and state["base_url"] == url
    with pytest.raises(aiohttp.ClientConnectionError):  # the kept-alive connection was dropped
        await create(http, url, "req-2")
    with pytest.raises(aiohttp.ClientConnectorError) as refused:  # and a new one is refused
        await create(http, url, "req-2")
    assert isinstance(refused.value.os_error, ConnectionRefusedError)
    with pytest.raises(aiohttp.ServerDisconnectedError):  # the shared port answers nothing either
        await create(http, f"{sim.url}/insurers/restco", "req-3")
    status, _ = await create(http, sim.insurer_url("calcco").replace("calcco", "restco"))
    assert status == 404  # calcco's port is up, and serves calcco only
    status, _ = await call(http, "GET", f"{sim.url}/_sim/health")
    assert status == 200

    healed = await heal(http, sim, "restco")
    assert (healed["listening"], healed["base_url"]) == (True, url)
    status, seen = await call(http, "GET", f"{url}{REST}/{created['applicationId']}")
    assert (status, seen["applicationId"]) == (200, created["applicationId"])
    _, stats = await call(http, "GET", f"{sim.url}/_sim/stats")
    assert stats["insurers"]["restco"]["creates"] == 1


async def until_held(http: aiohttp.ClientSession, sim: SimServer, insurer_id: str, held: int) -> Json:
    """Waits until the insurer's blackhole holds `held` requests; its fault state then."""
    for _ in range(1000):
        state = await fault_state(http, sim, insurer_id)
        if state["held"] == held:
            return state
        await asyncio.sleep(0.005)
    raise AssertionError(f"{insurer_id} never held {held} requests")


@functional
async def test_blackhole_holds_each_request_until_the_client_gives_up_leaking_nothing(
    api: Api, http: aiohttp.ClientSession, sim: SimServer
) -> None:
    await fault(http, sim, "restco", mode="blackhole")
    request = asyncio.create_task(create(http, api("restco"), "req-bh"))
    await until_held(http, sim, "restco", 1)
    request.cancel()  # the client gives up
    with pytest.raises(asyncio.CancelledError):
        await request
    assert (await until_held(http, sim, "restco", 0))["injected"] == 1
    with pytest.raises(asyncio.TimeoutError):  # a client timeout, on the shared port: the same
        await call(
            http,
            "POST",
            f"{sim.url}/insurers/restco{REST}",
            rest_body("req-bh"),
            timeout=aiohttp.ClientTimeout(total=GIVE_UP_S),
        )
    assert (await until_held(http, sim, "restco", 0))["injected"] == 2
    _, stats = await call(http, "GET", f"{sim.url}/_sim/stats")
    assert stats["insurers"]["restco"]["creates"] == 0


@functional
async def test_healing_a_blackhole_drops_the_requests_it_held(
    api: Api, http: aiohttp.ClientSession, sim: SimServer
) -> None:
    await fault(http, sim, "restco", mode="blackhole")
    request = asyncio.create_task(create(http, api("restco")))
    await until_held(http, sim, "restco", 1)
    assert (await heal(http, sim, "restco"))["held"] == 0
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await request


@functional
async def test_stopping_the_simulator_does_not_wait_for_blackholed_requests(
    http: aiohttp.ClientSession, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A shutdown grace of an hour: a stop that waited for the held request would never end.
    monkeypatch.setattr("insurer_sim.server.SHUTDOWN_GRACE_S", 3600.0)
    monkeypatch.setattr("insurer_sim.listeners.SHUTDOWN_GRACE_S", 3600.0)
    server = SimServer(SimConfig(PROFILES, insurer_ports=True), clock)
    await server.start()
    try:
        await fault(http, server, "calcco", mode="blackhole")
        url = server.insurer_url("calcco") + CALC
        request = asyncio.create_task(call(http, "POST", url, calc_body()))
        await until_held(http, server, "calcco", 1)
    finally:
        await asyncio.wait_for(server.stop(), 60)  # far inside the grace
    with pytest.raises(aiohttp.ClientConnectionError):
        await request


@functional
async def test_slow_answers_correctly_but_only_after_the_delay(
    api: Api, http: aiohttp.ClientSession, sim: SimServer, clock: FakeClock
) -> None:
    await fault(http, sim, "restco", mode="slow")
    request = asyncio.create_task(create(http, api("restco")))
    await until(lambda: clock.sleepers == 1)
    await clock.advance(7.9)
    assert not request.done()
    await clock.advance(0.1)
    status, created = await request
    assert (status, created["status"]) == (201, "PROCESSING")
    await fault(http, sim, "restco", mode="slow", delay_s=0.5)
    request = asyncio.create_task(create(http, api("restco"), "req-2"))
    await until(lambda: clock.sleepers == 1)
    await clock.advance(0.5)
    assert (await request)[0] == 201


@functional
async def test_slow_answer_whose_client_gave_up_issues_nothing(
    api: Api, http: aiohttp.ClientSession, sim: SimServer, clock: FakeClock
) -> None:
    url = api("restco")
    _, created = await create(http, url)
    poll = f"{url}{REST}/{created['applicationId']}"
    await clock.advance(READY_S)
    await fault(http, sim, "restco", mode="slow")
    with pytest.raises(asyncio.TimeoutError):
        await call(http, "GET", poll, timeout=aiohttp.ClientTimeout(total=GIVE_UP_S))
    await until(lambda: clock.sleepers == 0)  # the handler was cancelled with the connection
    await clock.advance(60)
    assert (await ledger(http, sim))["offers"] == []
    await heal(http, sim, "restco")
    status, quoted = await call(http, "GET", poll)
    assert (status, quoted["status"]) == (200, "QUOTED")
    assert [o["offer_id"] for o in (await ledger(http, sim))["offers"]] == [quoted["offer"]["offerId"]]


@functional
async def test_error_at_rate_one_is_always_5xx_and_at_rate_zero_never(
    api: Api, http: aiohttp.ClientSession, sim: SimServer
) -> None:
    url = api("restco")
    await fault(http, sim, "restco", mode="error")
    for _ in range(3):
        assert await create(http, url) == (503, {"error": "service unavailable"})
    await fault(http, sim, "restco", mode="error", status=500, body="text")
    async with http.post(url + REST, json=rest_body()) as r:
        assert (r.status, r.content_type, await r.text()) == (500, "text/plain", "Internal Server Error")
    await fault(http, sim, "restco", mode="error", rate=0.0)
    assert [(await create(http, url, f"r{i}"))[0] for i in range(3)] == [201] * 3
    assert (await fault_state(http, sim, "restco"))["injected"] == 0


@functional
async def test_ratelimit_answers_429_with_retry_after(api: Api, http: aiohttp.ClientSession, sim: SimServer) -> None:
    url = api("restco")
    await fault(http, sim, "restco", mode="ratelimit")
    async with http.post(url + REST, json=rest_body()) as r:
        assert (r.status, r.headers["Retry-After"]) == (429, "1")
        assert await r.json() == {"error": "too many requests"}
    await fault(http, sim, "restco", mode="ratelimit", retry_after_s=7)
    async with http.post(url + REST, json=rest_body()) as r:
        assert (r.status, r.headers["Retry-After"]) == (429, "7")


@functional
async def test_ratelimit_with_a_quota_admits_limit_per_s_requests_a_second(
    api: Api, http: aiohttp.ClientSession, sim: SimServer, clock: FakeClock
) -> None:
    url = api("restco")
    await fault(http, sim, "restco", mode="ratelimit", limit_per_s=2)
    assert [(await create(http, url, f"r{i}"))[0] for i in range(3)] == [201, 201, 429]
    await clock.advance(1.0)
    assert [(await create(http, url, f"s{i}"))[0] for i in range(3)] == [201, 201, 429]


@functional
async def test_malformed_json_is_broken_json_labelled_json(
    api: Api, http: aiohttp.ClientSession, sim: SimServer
) -> None:
    await fault(http, sim, "restco", mode="malformed", variant="json")
    async with http.post(api("restco") + REST, json=rest_body()) as r:
        assert (r.status, r.content_type) == (200, "application/json")
        with pytest.raises(json.JSONDecodeError):
            json.loads(await r.text())


@functional
async def test_malformed_html_is_an_error_page_with_status_200(
    api: Api, http: aiohttp.ClientSession, sim: SimServer
) -> None:
    await fault(http, sim, "calcco", mode="malformed", variant="html")
    async with http.post(api("calcco") + CALC, json=calc_body()) as r:
        assert (r.status, r.content_type) == (200, "text/html")
        assert (await r.text()).startswith("<!DOCTYPE html>")


@functional
async def test_malformed_schema_is_valid_json_of_another_shape(
    api: Api, http: aiohttp.ClientSession, sim: SimServer
) -> None:
    await fault(http, sim, "restco", mode="malformed", variant="schema")
    status, body = await create(http, api("restco"))
    assert status == 200 and isinstance(body, dict)
    assert not {"applicationId", "status", "calc_id", "state"} & set(body)


@functional
async def test_malformed_random_sends_each_kind_of_garbage(
    api: Api, http: aiohttp.ClientSession, sim: SimServer
) -> None:
    await fault(http, sim, "restco", mode="malformed", variant="random")
    kinds = set()
    for i in range(30):
        async with http.post(api("restco") + REST, json=rest_body(f"r{i}")) as r:
            assert r.status == 200
            text = await r.text()
            kinds.add("html" if r.content_type == "text/html" else "schema" if text.endswith("}") else "json")
    assert kinds == {"json", "html", "schema"}


@functional
async def test_flapping_alternates_failing_and_healthy_as_the_clock_moves(
    api: Api, http: aiohttp.ClientSession, sim: SimServer, clock: FakeClock
) -> None:
    url = api("restco")
    await fault(http, sim, "restco", mode="flapping", period_s=2.0)
    seen = []
    for i in range(5):
        seen.append((await create(http, url, f"r{i}"))[0])
        await clock.advance(1.0)
    assert seen == [503, 201, 503, 201, 503]


@functional
async def test_decline_declines_every_application_through_the_dialect(
    api: Api, http: aiohttp.ClientSession, sim: SimServer, clock: FakeClock
) -> None:
    rest_url, calc_url = api("restco"), api("calcco")
    _, rest = await create(http, rest_url, "req-d")
    _, calc = await call(http, "POST", calc_url + CALC, calc_body("req-d"))
    await fault(http, sim, "restco", mode="decline")
    await fault(http, sim, "calcco", mode="decline")
    await clock.advance(READY_S)
    _, declined = await call(http, "GET", f"{rest_url}{REST}/{rest['applicationId']}")
    assert (declined["status"], declined["declineReason"]) == ("DECLINED", "declined by underwriting")
    status, refused = await call(http, "GET", f"{calc_url}{CALC}/{calc['calc_id']}")
    assert (status, refused["state"]) == (200, "refused")
    issued = await ledger(http, sim, reference="req-d")
    assert issued["offers"] == [] and len(issued["declines"]) == 2
    assert (await fault_state(http, sim, "restco"))["injected"] == 1
    await heal(http, sim, "restco")
    _, again = await call(http, "GET", f"{rest_url}{REST}/{rest['applicationId']}")
    assert again["status"] == "DECLINED"  # an issued outcome never changes


@functional
async def test_ledger_records_only_offers_actually_returned(
    api: Api, http: aiohttp.ClientSession, sim: SimServer, clock: FakeClock
) -> None:
    url = api("restco")
    _, created = await create(http, url, "req-l")
    poll = f"{url}{REST}/{created['applicationId']}"
    await clock.advance(READY_S)
    for mode in ({"mode": "error"}, {"mode": "malformed", "variant": "schema"}, {"mode": "ratelimit"}):
        await fault(http, sim, "restco", **mode)
        async with http.get(poll) as r:
            assert r.status in (200, 429, 503)
    assert await ledger(http, sim, reference="req-l") == {"offers": [], "declines": []}
    await heal(http, sim, "restco")
    _, quoted = await call(http, "GET", poll)
    await call(http, "GET", poll)
    offers = (await ledger(http, sim, reference="req-l"))["offers"]
    assert [o["offer_id"] for o in offers] == [quoted["offer"]["offerId"]]


@functional
async def test_a_fault_touches_only_its_insurers_api(http: aiohttp.ClientSession, sim: SimServer) -> None:
    await fault(http, sim, "restco", mode="error")
    status, _ = await create(http, f"{sim.url}/insurers/restco")
    assert status == 503
    status, _ = await call(http, "POST", f"{sim.url}/insurers/calcco{CALC}", calc_body())
    assert status == 202
    for path in ("/_sim/health", "/_sim/insurers", "/_sim/ledger", "/_sim/stats", "/_sim/faults"):
        assert (await call(http, "GET", sim.url + path))[0] == 200


@functional
async def test_without_own_ports_down_drops_connections_on_the_shared_port(
    http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async with SimServer(SimConfig(PROFILES), clock) as server:
        url = server.insurer_url("restco")
        assert url == f"{server.url}/insurers/restco"
        state = await fault(http, server, "restco", mode="down")
        assert (state["listening"], state["base_url"]) == (False, url)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await create(http, url)
        await heal(http, server, "restco")
        assert (await create(http, url))[0] == 201


# --- the CLI --------------------------------------------------------------------------------


@functional
async def test_simctl_sets_and_heals_faults_of_a_running_simulator(http: aiohttp.ClientSession, sim: SimServer) -> None:
    state = await simctl.set_fault(sim.url, "restco", "error", {"rate": 1.0, "status": 502})
    assert state["fault"] == {"mode": "error", "status": 502, "rate": 1.0, "body": "json"}
    assert (await create(http, sim.insurer_url("restco")))[0] == 502
    assert (await simctl.heal(sim.url, "restco"))["fault"] is None
    await simctl.set_fault(sim.url + "/", "calcco", "down")
    everyone = await simctl.faults(sim.url)
    assert [s["fault"] for s in everyone["insurers"]] == [None, {"mode": "down"}]
    healed = await simctl.heal_all(sim.url)
    assert [(s["fault"], s["listening"]) for s in healed["insurers"]] == [(None, True)] * 2


@functional
async def test_simctl_says_why_the_simulator_refused(sim: SimServer) -> None:
    with pytest.raises(simctl.SimControlError, match=r"400.*mode: must be one of"):
        await simctl.set_fault(sim.url, "restco", "explode")
    with pytest.raises(simctl.SimControlError, match=r"404.*unknown insurer nobody"):
        await simctl.heal(sim.url, "nobody")
    with pytest.raises(simctl.SimControlError, match=r"400.*delay_s: is not an option of mode error"):
        await simctl.set_fault(sim.url, "restco", "error", {"delay_s": 1.0})


@functional
async def test_simctl_says_when_the_simulator_cannot_be_reached() -> None:
    async with SimServer(SimConfig(PROFILES)) as server:
        url = server.url
    with pytest.raises(simctl.SimControlError, match=f"cannot reach the simulator at {url}"):
        await simctl.heal_all(url)


def test_sim_parser_keeps_serving_and_takes_fault_and_heal(capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    served = parser.parse_args(["sim", "--port", "8480", "--insurer-ports"])
    assert (served.sim_command, served.port, served.insurer_ports) == (None, 8480, True)
    args = parser.parse_args(
        [
            "sim",
            "fault",
            "alfa",
            "flapping",
            "--period",
            "4",
            "--status",
            "500",
            "--scaled",
            "--sim",
            "http://sim:1",
        ]
    )
    assert (args.sim_command, args.insurer, args.mode, args.sim) == ("fault", "alfa", "flapping", "http://sim:1")
    assert simctl.options_from(args) == {"period_s": 4.0, "status": 500, "scaled": True}
    args = parser.parse_args(["sim", "fault", "alfa", "error", "--rate", "0"])
    assert simctl.options_from(args) == {"rate": 0.0}
    assert parser.parse_args(["sim", "heal", "--all"]).all is True
    assert parser.parse_args(["sim", "heal", "alfa"]).insurer == "alfa"
    with pytest.raises(SystemExit, match=r"^2$"):
        parser.parse_args(["sim", "heal"])
    assert "one of the arguments insurer --all is required" in capsys.readouterr().err


def test_the_command_names_every_fault_mode_and_takes_a_late_callbacks_delay() -> None:
    assert [mode for mode in MODES if mode not in FAULT_MODES] == []
    args = _parser().parse_args(["sim", "fault", "sovcom", "callback_late", "--delay", "2.5"])
    assert simctl.options_from(args) == {"delay_s": 2.5}


async def osago(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "osago_cli.main",
        *argv,
        env={**os.environ, "OSAGO_SIM_URL": "http://127.0.0.1:1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@functional
async def test_osago_sim_fault_and_heal_print_the_state_as_one_json_line(
    http: aiohttp.ClientSession, sim: SimServer
) -> None:
    code, out, err = await osago("sim", "fault", "restco", "ratelimit", "--retry-after", "3", "--sim", sim.url)
    assert code == 0, err
    assert out.count("\n") == 1
    assert json.loads(out)["fault"] == {"mode": "ratelimit", "retry_after_s": 3, "limit_per_s": None}
    async with http.post(sim.insurer_url("restco") + REST, json=rest_body()) as r:
        assert (r.status, r.headers["Retry-After"]) == (429, "3")
    code, out, err = await osago("sim", "heal", "--all", "--sim", sim.url)
    assert code == 0, err
    assert [s["fault"] for s in json.loads(out)["insurers"]] == [None, None]


@functional
async def test_osago_sim_fault_exits_non_zero_with_the_reason(sim: SimServer) -> None:
    code, out, err = await osago("sim", "fault", "restco", "slow", "--variant", "html", "--sim", sim.url)
    assert (code, out) == (1, "")
    assert "variant: is not an option of mode slow" in err
    code, out, err = await osago("sim", "heal", "restco")  # OSAGO_SIM_URL: nobody listens there
    assert (code, out) == (1, "")
    assert "cannot reach the simulator at http://127.0.0.1:1/" in err
