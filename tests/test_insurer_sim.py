"""The insurer simulator over real HTTP: both dialects, the tariff, idempotency, declines, errors,
the ledger and the stats. Time is a FakeClock wherever a delay matters; nothing sleeps for real."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest

from insurer_sim.config import SimConfig
from insurer_sim.profiles import PROFILES as DEFAULT_PROFILES
from insurer_sim.profiles import InsurerProfile, profile
from insurer_sim.server import SimServer, serve_forever
from osago_common.clock import SYSTEM_CLOCK, FakeClock
from osago_common.env import SettingsError

functional = pytest.mark.functional

# (id, name, dialect, ТБ position in the corridor, latency median s, latency sigma, decline rate):
# the positions of restco and calcco enter the hand-computed premiums below.
PROFILES = (
    InsurerProfile("restco", "Rest Co", "rest", 0.5, 2.0, 0.35, 0.0),
    InsurerProfile("calcco", "Calc Co", "calc", 0.7, 3.5, 0.35, 0.0),
    InsurerProfile("restno", "Rest Declines All", "rest", 0.5, 2.0, 0.35, 1.0),
    InsurerProfile("calcnotaxi", "Calc No Taxis", "calc", 0.4, 2.0, 0.35, 0.0, declines_taxi=True),
    InsurerProfile("restvague", "Rest Vague", "rest", 0.5, 2.0, 0.35, 0.0),
    InsurerProfile("calcvague", "Calc Vague", "calc", 0.5, 2.0, 0.35, 0.0),
)
VAGUE = frozenset({"restvague", "calcvague"})
LONG_ENOUGH_S = 3600.0  # far beyond any draw of the test profiles' latency

# The premiums of rest_body() / calc_body(), computed by hand from the Bank of Russia formula
# (osago-tariff tables; the tariff module is not asked):
#   Premium = ТБ × КТ × КБМ × КВС × КО × КМ × КС × КН × КП, in kopecks, rounded half-up to a kopeck.
# The policy starts on 1 Mar 2026: the corridor in force since 9 Dec 2025 is 1 399 – 8 665 RUB, and
# an insurer's ТБ = 1 399 + position × (8 665 − 1 399), rounded half-up to whole roubles.
# Driver 1 (the owner): born 15.06.1985, licence 01.09.2005 → 40 years old, 20 years' experience,
#   class 5: КБМ 0.91 × КВС 0.91 (40–49 years, 15+) = 0.8281.
# Driver 2: born 10.01.2003, licence 01.05.2022 → 23 years old, 3 years' experience, class 3:
#   КБМ 1.17 × КВС 1.13 (22–24 years, 3–4) = 1.3221, the higher product: driver 2 prices the policy.
# КТ Moscow 1.8; КМ 140 hp (120–150) 1.4; КС 12 months 1.0; КО named drivers 1.0; КН 1.0; КП 1.0.
#
# restco (rest dialect, position 0.5): ТБ = 1 399 + 0.5 × 7 266 = 5 032 RUB;
#   503 200 × 1.8 × 1.17 × 1.13 × 1.0 × 1.4 × 1.0 × 1.0 × 1.0 = 1 676 507.4144 → 1 676 507 kopecks.
REST_PREMIUM_KOPECKS = 1_676_507
# calcco (calc dialect, position 0.7): ТБ = 1 399 + 0.7 × 7 266 = 6 485.2 → 6 485 RUB;
#   648 500 × 1.8 × 1.17 × 1.13 × 1.0 × 1.4 × 1.0 × 1.0 × 1.0 = 2 160 602.262 → 2 160 602 kopecks.
CALC_PREMIUM_KOPECKS = 2_160_602
# restco, unlimited drivers, 6 months of use: КБМ is the owner's (class 5: 0.91), КВС is not
# applied (1.0), КО 2.32, КС 6 months 0.7:
#   503 200 × 1.8 × 0.91 × 1.0 × 2.32 × 1.4 × 0.7 × 1.0 × 1.0 = 1 873 995.70176 → 1 873 996 kopecks.
UNLIMITED_PREMIUM_KOPECKS = 1_873_996

Json = dict[str, Any]


def rest_body(ref: str = "req-1") -> Json:
    person = {"lastName": "Ivanov", "firstName": "Ivan", "middleName": "Petrovich"}
    return {
        "externalRef": ref,
        "vehicle": {
            "vin": "XTA210990Y2765439",
            "bodyNumber": "",
            "plate": "А123ВС77",
            "make": "Lada",
            "model": "Vesta",
            "year": 2020,
            "powerHp": 140,
            "category": "B",
            "purpose": "personal",
        },
        "owner": {**person, "birthDate": "1985-06-15", "city": "Moscow"},
        "ownerKbmClass": "5",
        "drivers": [
            {
                **person,
                "birthDate": "1985-06-15",
                "licenceNumber": "7700123456",
                "licenceIssueDate": "2005-09-01",
                "kbmClass": "5",
            },
            {
                "lastName": "Ivanova",
                "firstName": "Anna",
                "middleName": "",
                "birthDate": "2003-01-10",
                "licenceNumber": "7700654321",
                "licenceIssueDate": "2022-05-01",
                "kbmClass": "3",
            },
        ],
        "unlimitedDrivers": False,
        "startDate": "2026-03-01",
        "usageMonths": 12,
    }


def calc_body(ref: str = "req-1") -> Json:
    return {
        "ref": ref,
        "ts": {
            "vin": "XTA210990Y2765439",
            "body_no": "",
            "reg_plate": "А123ВС77",
            "brand": "Lada",
            "model": "Vesta",
            "made_year": 2020,
            "hp": 140,
            "cat": "B",
            "use": "PERSONAL",
        },
        "insurant": {"fio": "Ivanov Ivan Petrovich", "dob": "15.06.1985", "city": "Moscow"},
        "kbm_owner": "5",
        "persons": [
            {
                "fio": "Ivanov Ivan Petrovich",
                "dob": "15.06.1985",
                "vu": "7700123456",
                "vu_date": "01.09.2005",
                "kbm": "5",
            },
            {"fio": "Ivanova Anna", "dob": "10.01.2003", "vu": "7700654321", "vu_date": "01.05.2022", "kbm": "3"},
        ],
        "multidrive": False,
        "date_from": "01.03.2026",
        "period_months": 12,
    }


@pytest.fixture(params=["shared port", "own ports"])
async def sim(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[SimServer]:
    """The simulator; the insurers' API tests run against both of its servers: aiohttp on the
    shared port and the lean server of each insurer's own port (`insurer_ports`)."""
    config = SimConfig(PROFILES, seed=7, vague_hints=VAGUE, insurer_ports=request.param == "own ports")
    async with SimServer(config, clock) as server:
        yield server


class Client:
    """Requests to one simulator, answering (status, JSON body, headers). With a `server` whose
    insurers have ports of their own, a path under `/insurers/X` goes to X's own port (an
    unknown X to the first insurer's port), anything else to the shared port."""

    def __init__(self, http: aiohttp.ClientSession, url: str, server: SimServer | None = None) -> None:
        self.http = http
        self.url = url
        self.server = server

    def url_for(self, path: str) -> str:
        if self.server is None or not path.startswith("/insurers/"):
            return self.url + path
        insurer_id = path.split("/")[2]
        known = insurer_id if insurer_id in {p.insurer_id for p in PROFILES} else PROFILES[0].insurer_id
        base = self.server.insurer_url(known)
        return base.removesuffix(f"/insurers/{known}") + path

    async def post(self, path: str, body: Json | bytes, key: str | None = None) -> tuple[int, Any, Any]:
        headers = {"Idempotency-Key": key} if key else {}
        data = body if isinstance(body, bytes) else None
        payload = None if isinstance(body, bytes) else body
        async with self.http.post(self.url_for(path), json=payload, data=data, headers=headers) as r:
            assert r.content_type == "application/json"
            return r.status, await r.json(), r.headers

    async def get(self, path: str) -> tuple[int, Any, Any]:
        async with self.http.get(self.url_for(path)) as r:
            assert r.content_type == "application/json"
            return r.status, await r.json(), r.headers


@pytest.fixture
def client(http: aiohttp.ClientSession, sim: SimServer) -> Client:
    return Client(http, sim.url, sim)


def rest_path(insurer_id: str, application_id: str = "") -> str:
    return f"/insurers/{insurer_id}/api/v1/applications" + (f"/{application_id}" if application_id else "")


def calc_path(insurer_id: str, calc_id: str = "") -> str:
    return f"/insurers/{insurer_id}/osago/calc" + (f"/{calc_id}" if calc_id else "")


@functional
async def test_health_and_insurer_list_show_every_insurer_with_absolute_base_urls(
    http: aiohttp.ClientSession,
) -> None:
    async with SimServer(SimConfig(time_scale=0.01)) as server:
        c = Client(http, server.url)
        status, health, _ = await c.get("/_sim/health")
        assert status == 200
        assert health == {"status": "ok", "insurers": [p.insurer_id for p in DEFAULT_PROFILES]}
        status, insurers, _ = await c.get("/_sim/insurers")
        assert status == 200
        assert insurers[0] == {
            "insurer_id": "alfa",
            "name": "AlfaStrakhovanie",
            "dialect": "rest",
            "base_url": f"{server.url}/insurers/alfa",
        }
        assert [i["dialect"] for i in insurers] == [p.dialect for p in DEFAULT_PROFILES]


@functional
async def test_rest_application_is_processing_then_quoted_at_the_tariff_premium(
    client: Client, clock: FakeClock
) -> None:
    status, created, _ = await client.post(rest_path("restco"), rest_body())
    assert status == 201
    assert created["status"] == "PROCESSING"
    assert created["estimatedReadyInMs"] >= 10
    application_id = created["applicationId"]

    status, pending, _ = await client.get(rest_path("restco", application_id))
    assert (status, pending["status"]) == (200, "PROCESSING")
    assert pending["applicationId"] == application_id

    await clock.advance(LONG_ENOUGH_S)
    issued_at = clock.now()
    status, quoted, _ = await client.get(rest_path("restco", application_id))
    assert (status, quoted["status"], quoted["applicationId"]) == (200, "QUOTED", application_id)
    offer = quoted["offer"]
    assert offer["premium"] == {"amount": "16765.07", "currency": "RUB"}  # REST_PREMIUM_KOPECKS
    assert offer["coefficients"] == {
        "TB": "5032.00",
        "KT": "1.8",
        "KBM": "1.17",
        "KVS": "1.13",
        "KO": "1.0",
        "KM": "1.4",
        "KS": "1.0",
        "KN": "1.0",
        "KP": "1.0",
    }
    valid_until = datetime.fromisoformat(offer["validUntil"])
    assert valid_until.utcoffset() is not None and valid_until > issued_at
    assert offer["paymentUrl"] == client.url_for(f"/insurers/restco/pay/{offer['offerId']}")
    status, paid, _ = await client.get(f"/insurers/restco/pay/{offer['offerId']}")
    assert (status, paid["premium_kopecks"]) == (200, REST_PREMIUM_KOPECKS)


@functional
async def test_calc_calculation_is_queued_then_done_at_the_tariff_premium(client: Client, clock: FakeClock) -> None:
    status, created, headers = await client.post(calc_path("calcco"), calc_body())
    assert status == 202
    assert created["state"] == "queued"
    assert created["poll_after_ms"] >= 10
    assert headers["Retry-After"] == str(max(1, math.ceil(created["poll_after_ms"] / 1000)))
    calc_id = created["calc_id"]

    status, pending, headers = await client.get(calc_path("calcco", calc_id))
    assert (status, pending["state"]) == (202, "in_progress")
    assert int(headers["Retry-After"]) >= 1

    await clock.advance(LONG_ENOUGH_S)
    status, done, headers = await client.get(calc_path("calcco", calc_id))
    assert (status, done["state"]) == (200, "done")
    assert "Retry-After" not in headers
    result = done["result"]
    assert result["premium_kop"] == CALC_PREMIUM_KOPECKS
    assert result["k"] == {
        "tb_kop": 648_500,
        "kt": "1.8",
        "kbm": "1.17",
        "kvs": "1.13",
        "ko": "1.0",
        "km": "1.4",
        "ks": "1.0",
        "kn": "1.0",
        "kp": "1.0",
    }
    assert datetime.fromisoformat(result["expires"]) > clock.now()
    assert result["buy_url"].startswith(client.url_for("/insurers/calcco/"))
    assert result["quote_no"]


@functional
async def test_unlimited_drivers_are_priced_with_the_owner_class_and_ko(client: Client, clock: FakeClock) -> None:
    body = rest_body()
    body["unlimitedDrivers"], body["drivers"], body["usageMonths"] = True, [], 6
    _, created, _ = await client.post(rest_path("restco"), body)
    await clock.advance(LONG_ENOUGH_S)
    _, quoted, _ = await client.get(rest_path("restco", created["applicationId"]))
    assert quoted["offer"]["coefficients"] == {
        "TB": "5032.00",
        "KT": "1.8",
        "KBM": "0.91",
        "KVS": "1.0",
        "KO": "2.32",
        "KM": "1.4",
        "KS": "0.7",
        "KN": "1.0",
        "KP": "1.0",
    }
    assert quoted["offer"]["premium"]["amount"] == "18739.96"  # UNLIMITED_PREMIUM_KOPECKS


@functional
async def test_same_idempotency_key_returns_the_same_rest_application(client: Client) -> None:
    first_status, first, _ = await client.post(rest_path("restco"), rest_body("req-idem"), key="k-1")
    again_status, again, _ = await client.post(rest_path("restco"), rest_body("req-idem"), key="k-1")
    assert (first_status, again_status) == (201, 200)
    assert again["applicationId"] == first["applicationId"]
    assert again["status"] == "PROCESSING"

    _, stats, _ = await client.get("/_sim/stats?reference=req-idem")
    assert [a["application_id"] for a in stats["applications"]] == [first["applicationId"]]
    assert stats["applications"][0]["creates"] == 2  # the application cost its insurer two creates
    assert stats["insurers"]["restco"]["creates"] == 1
    assert stats["insurers"]["restco"]["replays"] == 1


@functional
async def test_same_idempotency_key_returns_the_same_calculation(client: Client) -> None:
    first_status, first, _ = await client.post(calc_path("calcco"), calc_body("req-idem"), key="k-1")
    again_status, again, headers = await client.post(calc_path("calcco"), calc_body("req-idem"), key="k-1")
    assert (first_status, again_status) == (202, 202)
    assert again["calc_id"] == first["calc_id"]
    assert "Retry-After" in headers
    _, stats, _ = await client.get("/_sim/stats?reference=req-idem")
    assert len(stats["applications"]) == 1


@functional
async def test_without_a_key_each_create_is_a_new_application(client: Client) -> None:
    _, first, _ = await client.post(rest_path("restco"), rest_body("req-twice"))
    _, second, _ = await client.post(rest_path("restco"), rest_body("req-twice"))
    assert first["applicationId"] != second["applicationId"]
    _, stats, _ = await client.get("/_sim/stats?reference=req-twice")
    assert len(stats["applications"]) == 2


@functional
async def test_underwriting_decline_is_returned_and_recorded_once(client: Client, clock: FakeClock) -> None:
    _, created, _ = await client.post(rest_path("restno"), rest_body("req-decline"))
    await clock.advance(LONG_ENOUGH_S)
    for _ in range(3):
        status, declined, _ = await client.get(rest_path("restno", created["applicationId"]))
        assert (status, declined["status"]) == (200, "DECLINED")
        assert declined["declineReason"]
        assert "offer" not in declined
    _, ledger, _ = await client.get("/_sim/ledger?reference=req-decline")
    assert ledger["offers"] == []
    assert [(d["insurer_id"], d["application_id"]) for d in ledger["declines"]] == [
        ("restno", created["applicationId"])
    ]


@functional
async def test_calc_insurer_that_declines_taxis_refuses_a_taxi(client: Client, clock: FakeClock) -> None:
    body = calc_body("req-taxi")
    body["ts"]["use"] = "TAXI"
    _, created, _ = await client.post(calc_path("calcnotaxi"), body)
    await clock.advance(LONG_ENOUGH_S)
    status, refused, _ = await client.get(calc_path("calcnotaxi", created["calc_id"]))
    assert (status, refused["state"], refused["refusal"]["code"]) == (200, "refused", "UW")
    assert "taxi" in refused["refusal"]["text"]
    _, ledger, _ = await client.get("/_sim/ledger?insurer_id=calcnotaxi")
    assert len(ledger["declines"]) == 1


@functional
async def test_application_the_tariff_cannot_price_is_declined_not_an_error(client: Client, clock: FakeClock) -> None:
    body = rest_body("req-nowhere")
    body["owner"]["city"] = "Atlantis"
    status, created, _ = await client.post(rest_path("restco"), body)
    assert status == 201
    await clock.advance(LONG_ENOUGH_S)
    status, declined, _ = await client.get(rest_path("restco", created["applicationId"]))
    assert (status, declined["status"]) == (200, "DECLINED")
    assert "territory" in declined["declineReason"]


@functional
async def test_ledger_records_each_offer_once_however_often_it_is_polled(client: Client, clock: FakeClock) -> None:
    created_at = clock.now()
    _, created, _ = await client.post(rest_path("restco"), rest_body("req-ledger"))
    # restco's hints are honest: the offer is ready this long after the create.
    ready_at = created_at + timedelta(milliseconds=created["estimatedReadyInMs"])
    application_id = created["applicationId"]
    await client.get(rest_path("restco", application_id))
    _, ledger, _ = await client.get("/_sim/ledger?reference=req-ledger")
    assert ledger == {"offers": [], "declines": []}  # not issued while pending

    await clock.advance(LONG_ENOUGH_S)
    issued_at = clock.now()
    offer_ids = set()
    for _ in range(3):
        _, quoted, _ = await client.get(rest_path("restco", application_id))
        offer_ids.add(quoted["offer"]["offerId"])
        await clock.advance(1.0)
    assert len(offer_ids) == 1

    _, ledger, _ = await client.get("/_sim/ledger?reference=req-ledger")
    # When it became ready, to the hint's millisecond; issued by the first poll that saw it.
    recorded_ready = datetime.fromisoformat(ledger["offers"][0].pop("ready_at"))
    assert abs((recorded_ready - ready_at).total_seconds()) <= 0.001
    assert ledger["offers"] == [
        {
            "insurer_id": "restco",
            "application_id": application_id,
            "offer_id": offer_ids.pop(),
            "reference": "req-ledger",
            "premium_kopecks": REST_PREMIUM_KOPECKS,
            "issued_at": issued_at.isoformat(),
        }
    ]
    _, other, _ = await client.get("/_sim/ledger?reference=req-ledger&insurer_id=calcco")
    assert other == {"offers": [], "declines": []}


@functional
async def test_stats_count_creates_and_polls_per_insurer_and_application(client: Client, clock: FakeClock) -> None:
    _, created, _ = await client.post(calc_path("calcco"), calc_body("req-stats"))
    for _ in range(4):
        await client.get(calc_path("calcco", created["calc_id"]))
    _, stats, _ = await client.get("/_sim/stats")
    assert stats["insurers"]["calcco"] == {"creates": 1, "replays": 0, "polls": 4, "callbacks": 0}
    assert stats["insurers"]["restco"] == {"creates": 0, "replays": 0, "polls": 0, "callbacks": 0}
    [application] = [a for a in stats["applications"] if a["reference"] == "req-stats"]
    assert application == {
        "application_id": created["calc_id"],
        "insurer_id": "calcco",
        "reference": "req-stats",
        "creates": 1,
        "polls": 4,
        "callbacks": 0,
        "last_poll_at": clock.now().isoformat(),
    }


@functional
async def test_honest_hints_count_down_and_vague_hints_stay_fixed(client: Client, clock: FakeClock) -> None:
    _, honest, _ = await client.post(rest_path("restco"), rest_body("req-hint"))
    _, vague, _ = await client.post(rest_path("restvague"), rest_body("req-hint"))
    _, vague_calc, headers = await client.post(calc_path("calcvague"), calc_body("req-hint"))
    await clock.advance(0.5)
    _, honest_later, _ = await client.get(rest_path("restco", honest["applicationId"]))
    _, vague_later, _ = await client.get(rest_path("restvague", vague["applicationId"]))
    assert abs(honest_later["estimatedReadyInMs"] - (honest["estimatedReadyInMs"] - 500)) <= 1
    assert vague["estimatedReadyInMs"] == vague_later["estimatedReadyInMs"] == 1000
    assert (vague_calc["poll_after_ms"], headers["Retry-After"]) == (1000, "1")


@functional
@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda b: b["vehicle"].update(powerHp="140"), "vehicle.powerHp"),
        (lambda b: b["vehicle"].pop("powerHp"), "vehicle.powerHp"),
        (lambda b: b["vehicle"].update(powerHp=True), "vehicle.powerHp"),
        (lambda b: b["vehicle"].update(category="A"), "vehicle.category"),
        (lambda b: b["vehicle"].update(vin="", bodyNumber=""), "vehicle.vin"),
        (lambda b: b["owner"].update(city=""), "owner.city"),
        (lambda b: b["drivers"][1].update(birthDate="10.01.2003"), "drivers[1].birthDate"),
        (lambda b: b["drivers"][0].update(kbmClass="14"), "drivers[0].kbmClass"),
        (lambda b: b.update(drivers=[]), "drivers"),
        (lambda b: b.update(usageMonths=2), "usageMonths"),
        (lambda b: b.update(startDate="2026-02-30"), "startDate"),
        (lambda b: b.pop("externalRef"), "externalRef"),
        (lambda b: b.update(vehicle=[]), "vehicle"),
    ],
)
async def test_bad_rest_input_is_400_naming_the_field(
    client: Client, change: Callable[[Json], object], field: str
) -> None:
    body = copy.deepcopy(rest_body())
    change(body)
    status, error, _ = await client.post(rest_path("restco"), body)
    assert status == 400
    assert error["field"] == field
    assert error["error"]


@functional
@pytest.mark.parametrize("raw", [b"{", b"[1, 2]", b"\xff\xfe", b"", b"[" * 100_000])
async def test_rest_body_that_is_not_a_json_object_is_400(client: Client, raw: bytes) -> None:
    status, error, _ = await client.post(rest_path("restco"), raw)
    assert status == 400
    assert error["field"] is None


@functional
@pytest.mark.parametrize(
    ("change", "loc"),
    [
        (lambda b: b["ts"].update(hp="abc"), "ts.hp"),
        (lambda b: b["ts"].update(use="personal"), "ts.use"),
        (lambda b: b.update(date_from="2026-03-01"), "date_from"),
        (lambda b: b["insurant"].update(fio="Ivanov"), "insurant.fio"),
        (lambda b: b["persons"][1].update(kbm="99"), "persons.1.kbm"),
        (lambda b: b.update(multidrive="no"), "multidrive"),
        (lambda b: b.update(period_months=13), "period_months"),
    ],
)
async def test_bad_calc_input_is_422_naming_the_field(
    client: Client, change: Callable[[Json], object], loc: str
) -> None:
    body = copy.deepcopy(calc_body())
    change(body)
    status, error, _ = await client.post(calc_path("calcco"), body)
    assert status == 422
    assert [e["loc"] for e in error["errors"]] == [loc]
    assert error["errors"][0]["msg"]


@functional
async def test_calc_body_that_is_not_json_is_422(client: Client) -> None:
    status, error, _ = await client.post(calc_path("calcco"), b"not json")
    assert status == 422
    assert error["errors"][0]["loc"] == "body"


@functional
@pytest.mark.parametrize(
    "path",
    [
        rest_path("restco", "no-such-application"),
        calc_path("calcco", "no-such-calculation"),
        rest_path("nobody", "x"),
        rest_path("calcco", "x"),  # a calc insurer has no rest API
        calc_path("restco", "x"),
        "/no/such/path",
    ],
)
async def test_unknown_things_are_json_404s(client: Client, path: str) -> None:
    status, error, _ = await client.get(path)
    assert status == 404
    assert error == {"error": "not found"}


@functional
async def test_create_in_the_wrong_dialect_is_404_and_creates_nothing(client: Client) -> None:
    status, _, _ = await client.post(rest_path("calcco"), rest_body("req-wrong"))
    assert status == 404
    status, _, _ = await client.post(calc_path("restco"), calc_body("req-wrong"))
    assert status == 404
    _, stats, _ = await client.get("/_sim/stats?reference=req-wrong")
    assert stats["applications"] == []


@functional
async def test_wrong_method_is_a_json_405(client: Client) -> None:
    async with client.http.delete(client.url + "/_sim/health") as r:
        assert r.status == 405
        assert await r.json() == {"error": "method not allowed"}
    # An insurer's API, on whichever server serves it: the methods its route takes in Allow.
    for method, path, allowed in [
        ("DELETE", rest_path("restco"), {"POST"}),
        ("PUT", rest_path("restco", "some-id"), {"GET", "HEAD"}),
        ("POST", "/insurers/restco/pay/some-offer", {"GET", "HEAD"}),
    ]:
        async with client.http.request(method, client.url_for(path), json={}) as r:
            assert r.status == 405, (method, path)
            assert await r.json() == {"error": "method not allowed"}
            assert set(r.headers["Allow"].split(",")) == allowed


@functional
async def test_time_scale_makes_a_two_second_insurer_answer_in_milliseconds(
    http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    alfa = dataclasses.replace(profile("alfa"), decline_rate=0.0)
    assert alfa.latency_median_s == 2.0
    states = {}
    for time_scale in (0.001, 1.0):
        async with SimServer(SimConfig((alfa,), time_scale=time_scale, seed=1), clock) as server:
            c = Client(http, server.url)
            _, created, _ = await c.post(rest_path("alfa"), rest_body())
            await clock.advance(0.05)
            _, seen, _ = await c.get(rest_path("alfa", created["applicationId"]))
            states[time_scale] = seen["status"]
    assert states == {0.001: "QUOTED", 1.0: "PROCESSING"}


@functional
async def test_time_scale_on_the_real_clock_answers_within_a_short_poll_loop(
    http: aiohttp.ClientSession,
) -> None:
    alfa = dataclasses.replace(profile("alfa"), decline_rate=0.0)
    async with SimServer(SimConfig((alfa,), time_scale=0.001), SYSTEM_CLOCK) as server:
        c = Client(http, server.url)
        _, created, _ = await c.post(rest_path("alfa"), rest_body())
        for _ in range(500):
            _, seen, _ = await c.get(rest_path("alfa", created["applicationId"]))
            if seen["status"] != "PROCESSING":
                break
            await asyncio.sleep(seen["estimatedReadyInMs"] / 1000)
        assert seen["status"] == "QUOTED"


@functional
async def test_same_seed_gives_the_same_draws_for_the_same_reference(
    http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    answers = []
    for seed in (42, 42, 43):
        async with SimServer(SimConfig(PROFILES[:1], seed=seed), clock) as server:
            _, created, _ = await Client(http, server.url).post(rest_path("restco"), rest_body("r"))
            answers.append((created["applicationId"], created["estimatedReadyInMs"]))
    assert answers[0] == answers[1]
    assert answers[0] != answers[2]


@functional
async def test_server_stops_and_frees_its_port(http: aiohttp.ClientSession) -> None:
    server = SimServer(SimConfig(PROFILES[:1]))
    url = await server.start()
    assert server.url == url and url.startswith("http://127.0.0.1:")
    await server.stop()
    with pytest.raises(RuntimeError, match="the simulator is not started"):
        _ = server.url
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(url + "/_sim/health"):
            pass


@functional
async def test_serve_forever_prints_its_address_and_stops_when_cancelled(
    http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    task = asyncio.create_task(serve_forever(SimConfig(PROFILES[:1])))
    out = ""
    for _ in range(500):
        out += capsys.readouterr().out
        if out:
            break
        await asyncio.sleep(0.01)
    assert out.startswith("listening http://127.0.0.1:") and out.count("\n") == 1
    url = out.split()[1]
    async with http.get(url + "/_sim/health") as r:
        assert r.status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(url + "/_sim/health"):
            pass


@functional
async def test_module_runs_as_a_process_until_sigterm(http: aiohttp.ClientSession) -> None:
    env = {**os.environ, "OSAGO_SIM_INSURERS": "2", "OSAGO_SIM_PORT": "0", "OSAGO_SIM_TIME_SCALE": "0.01"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "insurer_sim",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("listening http://127.0.0.1:")
        async with http.get(line.split()[1] + "/_sim/health") as r:
            assert (await r.json())["insurers"] == ["alfa", "ingos"]
        proc.send_signal(signal.SIGTERM)
        rest, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert rest == b""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_config_from_env_defaults_to_the_whole_catalogue_in_real_time() -> None:
    config = SimConfig.from_env({})
    assert config.insurers == DEFAULT_PROFILES
    assert (config.time_scale, config.seed, config.host, config.port) == (1.0, None, "127.0.0.1", 0)


def test_config_from_env_reads_every_variable() -> None:
    config = SimConfig.from_env(
        {
            "OSAGO_SIM_INSURERS": "3",
            "OSAGO_SIM_TIME_SCALE": "0.01",
            "OSAGO_SIM_SEED": "5",
            "OSAGO_SIM_HOST": "0.0.0.0",
            "OSAGO_SIM_PORT": "9100",
        }
    )
    assert [p.insurer_id for p in config.insurers] == ["alfa", "ingos", "reso"]
    assert (config.time_scale, config.seed, config.host, config.port) == (0.01, 5, "0.0.0.0", 9100)
    named = SimConfig.from_env({"OSAGO_SIM_INSURERS": "zetta, alfa"})
    assert [p.insurer_id for p in named.insurers] == ["zetta", "alfa"]
    secrets = SimConfig.from_env(
        {
            "OSAGO_SIM_INSURERS": "sovcom,energo",
            "OSAGO_SIM_CALLBACK_SECRET": "common-secret",
            "OSAGO_SIM_CALLBACK_SECRET_ENERGO": "energo-secret",
        }
    )
    assert (secrets.callback_secret, dict(secrets.callback_secrets)) == ("common-secret", {"energo": "energo-secret"})
    assert "secret" not in repr(secrets)


def test_config_overrides_win_over_the_environment() -> None:
    config = SimConfig.from_env({"OSAGO_SIM_PORT": "not a port", "OSAGO_SIM_SEED": "1"}, port=0, seed=None)
    assert (config.port, config.seed) == (0, None)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OSAGO_SIM_INSURERS", "0"),
        ("OSAGO_SIM_INSURERS", str(len(DEFAULT_PROFILES) + 1)),
        ("OSAGO_SIM_INSURERS", "alfa,nobody"),
        ("OSAGO_SIM_INSURERS", ","),
        ("OSAGO_SIM_TIME_SCALE", "fast"),
        ("OSAGO_SIM_TIME_SCALE", "0"),
        ("OSAGO_SIM_SEED", "x"),
        ("OSAGO_SIM_PORT", "70000"),
    ],
)
def test_config_from_env_names_the_bad_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        SimConfig.from_env({name: value})
