"""The simulator's "push" dialect and its callbacks: the create and status endpoints over real
HTTP, and the deliveries (signature, retries with backoff, every callback fault) under a
FakeClock with a scripted partner, so every moment is exact and nothing sleeps for real."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from insurer_sim.config import SimConfig
from insurer_sim.dialects import push
from insurer_sim.faults import Fault
from insurer_sim.insurer import Application, SimInsurer, Simulation
from insurer_sim.profiles import InsurerProfile
from insurer_sim.server import SimServer
from insurer_sim.webhooks import Deliveries, DeliveryError
from osago_common.clock import FakeClock
from tests.conftest import serve_app
from tests.test_insurer_sim import REST_PREMIUM_KOPECKS

functional = pytest.mark.functional

# Position 0.5 in the corridor, as the simulator tests' "restco": the same premium for the same
# application (REST_PREMIUM_KOPECKS, computed by hand there).
PUSHCO = InsurerProfile("pushco", "Push Co", "push", 0.5, 2.0, 0.35, 0.0)
RESTCO = InsurerProfile("restco", "Rest Co", "rest", 0.5, 2.0, 0.35, 0.0)
SECRET = "a-partner-secret-of-some-length"
BASE = "http://sim.test/insurers/pushco"
HOOK_URL = "http://partner.test/callbacks/pushco"
LONG_ENOUGH_S = 3600.0

Json = dict[str, Any]


def push_body(ref: str = "req-1", webhook_url: str = HOOK_URL) -> Json:
    """The simulator tests' application (two drivers, Moscow, 140 hp) in the push dialect."""
    return {
        "partner_ref": ref,
        "webhook_url": webhook_url,
        "car": {
            "vin": "XTA210990Y2765439",
            "body_number": "",
            "reg_number": "А123ВС77",
            "brand": "Lada",
            "model": "Vesta",
            "production_year": 2020,
            "engine_power_hp": 140,
            "category": "B",
            "usage": "personal",
        },
        "policyholder": {
            "surname": "Ivanov",
            "name": "Ivan",
            "patronymic": "Petrovich",
            "birth_date": "1985-06-15",
            "registration_city": "Moscow",
            "kbm": "5",
        },
        "drivers": {
            "unlimited": False,
            "list": [
                {
                    "surname": "Ivanov",
                    "name": "Ivan",
                    "patronymic": "Petrovich",
                    "birth_date": "1985-06-15",
                    "licence": {"number": "7700123456", "issued_on": "2005-09-01"},
                    "kbm": "5",
                },
                {
                    "surname": "Ivanova",
                    "name": "Anna",
                    "birth_date": "2003-01-10",
                    "licence": {"number": "7700654321", "issued_on": "2022-05-01"},
                    "kbm": "3",
                },
            ],
        },
        "period": {"starts_on": "2026-03-01", "months": 12},
    }


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """What the push dialect's documentation says the signature is, computed here anew."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass
class Received:
    at: float
    url: str
    body: bytes
    headers: Mapping[str, str]

    @property
    def json(self) -> Json:
        value: Json = json.loads(self.body)
        return value

    @property
    def signed_by(self) -> str | None:
        """Which secret the callback verifies with: SECRET or None."""
        expected = signature(SECRET, self.headers["X-Webhook-Timestamp"], self.body)
        return SECRET if hmac.compare_digest(expected, self.headers["X-Webhook-Signature"]) else None


@dataclass
class Partner:
    """A scripted partner endpoint: answers each POST with the next status (or raises the next
    error), repeating the last."""

    clock: FakeClock
    answers: list[int | Exception] = field(default_factory=lambda: [200])
    received: list[Received] = field(default_factory=list)

    async def __call__(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        self.received.append(Received(self.clock.monotonic(), url, body, dict(headers)))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass
class World:
    clock: FakeClock
    simulation: Simulation
    insurer: SimInsurer
    deliveries: Deliveries
    partner: Partner

    def create(self, ref: str = "req-1", key: str | None = None) -> Application:
        reply = push.create(self.insurer, json.dumps(push_body(ref)).encode(), key, BASE)
        assert reply.status in (200, 202), reply.body
        return self.insurer.applications[str(reply.body["quotation_id"])]

    def fault(self, mode: str, **options: Any) -> None:
        self.insurer.faults.set(Fault(mode, **options))

    async def until_ready(self, application: Application) -> None:
        await self.clock.advance(application.ready_at - self.clock.monotonic())

    def ledger(self) -> list[str]:
        return [e.offer_id for e in self.simulation.ledger.offers] + [e.reason for e in self.simulation.ledger.declines]


@pytest.fixture
async def world(clock: FakeClock) -> AsyncIterator[World]:
    simulation = Simulation(SimConfig((PUSHCO,), seed=3, callback_secret=SECRET), clock)
    partner = Partner(clock)
    deliveries = Deliveries(clock, partner, simulation.callback_secrets, time_scale=1.0)
    insurer = simulation.insurers["pushco"]
    insurer.on_hook = deliveries.schedule
    yield World(clock, simulation, insurer, deliveries, partner)
    await deliveries.close()


# --- deliveries, on a FakeClock -------------------------------------------------------------


async def test_the_outcome_is_posted_signed_the_moment_it_is_ready_and_issued_once_accepted(world: World) -> None:
    application = world.create()
    await world.clock.advance(application.ready_at - world.clock.monotonic() - 0.001)
    assert world.partner.received == []
    assert world.ledger() == []
    await world.clock.advance(0.001)
    [callback] = world.partner.received
    assert callback.at == application.ready_at
    assert callback.url == HOOK_URL
    assert callback.headers["Content-Type"] == "application/json"
    assert callback.headers["X-Webhook-Timestamp"] == str(int(world.clock.now().timestamp()))
    assert callback.signed_by == SECRET
    body = callback.json
    assert (body["event"], body["quotation_id"], body["partner_ref"]) == (
        "quotation.completed",
        application.application_id,
        "req-1",
    )
    quotation = body["quotation"]
    assert quotation["premium"] == {"amount_minor": REST_PREMIUM_KOPECKS, "currency": "RUB"}
    assert quotation["base_rate"] == {"amount_minor": 503200, "currency": "RUB"}
    assert quotation["factors"] == [
        {"code": code, "value": value}
        for code, value in [
            ("KT", "1.8"),
            ("KBM", "1.17"),
            ("KVS", "1.13"),
            ("KO", "1.0"),
            ("KM", "1.4"),
            ("KS", "1.0"),
            ("KN", "1.0"),
            ("KP", "1.0"),
        ]
    ]
    assert quotation["checkout_url"] == f"{BASE}/pay/{quotation['number']}"
    assert world.ledger() == [quotation["number"]]
    assert [(a.attempt, a.result, a.status) for a in world.deliveries.attempts] == [(1, "accepted", 200)]
    assert (world.insurer.callbacks, application.callbacks, world.deliveries.pending) == (1, 1, 0)


async def test_a_callback_not_accepted_is_tried_again_with_exponential_backoff(world: World) -> None:
    world.partner.answers = [DeliveryError("ClientConnectorError"), 503, 401, 200]
    application = world.create()
    await world.until_ready(application)
    await world.clock.advance(LONG_ENOUGH_S)
    times = [round(r.at - application.ready_at, 6) for r in world.partner.received]
    assert times == [0.0, 1.0, 3.0, 7.0]  # pauses of 1, 2, 4 s
    assert [(a.attempt, a.result, a.status) for a in world.deliveries.attempts] == [
        (1, "failed", None),
        (2, "refused", 503),
        (3, "refused", 401),
        (4, "accepted", 200),
    ]
    assert len({a.delivery_id for a in world.deliveries.attempts}) == 1  # one delivery, four attempts
    # Each attempt is signed anew, at its own time.
    assert [r.headers["X-Webhook-Timestamp"] for r in world.partner.received] == [
        str(int(world.clock.now().timestamp() - LONG_ENOUGH_S + t)) for t in times
    ]
    assert len(world.ledger()) == 1


async def test_a_delivery_gives_up_after_its_attempts_and_the_outcome_waits_for_a_poll(world: World) -> None:
    world.partner.answers = [500]
    application = world.create()
    await world.until_ready(application)
    await world.clock.advance(LONG_ENOUGH_S)
    assert len(world.partner.received) == 8
    gaps = [round(b.at - a.at, 6) for a, b in zip(world.partner.received, world.partner.received[1:], strict=False)]
    assert gaps == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0]  # capped at 60 s
    assert world.ledger() == []  # nobody accepted it: not issued
    seen = world.insurer.poll(application.application_id)
    assert seen is not None and world.ledger() == [application.outcome.offer_id]  # type: ignore[union-attr]


async def test_the_time_scale_shortens_the_backoff() -> None:
    clock = FakeClock()
    simulation = Simulation(SimConfig((PUSHCO,), seed=3, callback_secret=SECRET, time_scale=0.01), clock)
    partner = Partner(clock, [500, 500, 200])
    deliveries = Deliveries(clock, partner, simulation.callback_secrets, time_scale=0.01)
    insurer = simulation.insurers["pushco"]
    insurer.on_hook = deliveries.schedule
    reply = push.create(insurer, json.dumps(push_body()).encode(), None, BASE)
    application = insurer.applications[str(reply.body["quotation_id"])]
    await clock.advance(LONG_ENOUGH_S)
    assert [round(r.at - application.ready_at, 6) for r in partner.received] == [0.0, 0.01, 0.03]
    await deliveries.close()


async def test_callback_never_sends_nothing_and_the_status_endpoint_still_has_the_offer(world: World) -> None:
    world.fault("callback_never")
    application = world.create()
    await world.clock.advance(LONG_ENOUGH_S)
    assert world.partner.received == []
    assert [(a.result, a.attempt) for a in world.deliveries.attempts] == [("withheld", 0)]
    reply = push.poll(world.insurer, application.application_id, BASE)
    assert (reply.status, reply.body["status"]) == (200, "completed")
    assert world.ledger() == [reply.body["quotation"]["number"]]  # type: ignore[index]
    assert world.insurer.faults.injected == 1


async def test_callback_twice_sends_two_deliveries_at_once_and_issues_once(world: World) -> None:
    world.fault("callback_twice")
    application = world.create()
    await world.until_ready(application)
    first, second = world.partner.received
    assert first.at == second.at == application.ready_at
    assert first.json["delivery_id"] != second.json["delivery_id"]
    assert {k: v for k, v in first.json.items() if k != "delivery_id"} == {
        k: v for k, v in second.json.items() if k != "delivery_id"
    }
    assert first.signed_by == second.signed_by == SECRET
    assert len(world.ledger()) == 1


async def test_callback_late_sends_after_the_delay(world: World) -> None:
    world.fault("callback_late", delay_s=5.0)
    application = world.create()
    await world.until_ready(application)
    await world.clock.advance(4.999)
    assert world.partner.received == []
    await world.clock.advance(0.001)
    assert [round(r.at - application.ready_at, 6) for r in world.partner.received] == [5.0]


async def test_callback_bad_signature_signs_with_another_secret_until_healed(world: World) -> None:
    world.fault("callback_bad_signature")
    world.partner.answers = [401]
    application = world.create()
    await world.until_ready(application)
    await world.clock.advance(1.0 + 2.0)
    assert [r.signed_by for r in world.partner.received] == [None, None, None]
    assert all(a.forged for a in world.deliveries.attempts)
    world.insurer.faults.heal()
    world.partner.answers = [200]
    await world.clock.advance(4.0)
    assert [r.signed_by for r in world.partner.received] == [None, None, None, SECRET]
    assert world.deliveries.attempts[-1].result == "accepted"


async def test_callback_target_down_fails_every_attempt_without_sending_until_healed(world: World) -> None:
    world.fault("callback_target_down")
    application = world.create()
    await world.until_ready(application)
    await world.clock.advance(1.0)
    assert world.partner.received == []
    assert [(a.result, a.detail) for a in world.deliveries.attempts] == [("failed", "connection refused")] * 2
    world.insurer.faults.heal()
    await world.clock.advance(2.0)
    [callback] = world.partner.received
    assert round(callback.at - application.ready_at, 6) == 3.0
    assert len(world.ledger()) == 1


async def test_the_decline_fault_turns_the_callback_into_a_rejection(world: World) -> None:
    world.fault("decline")
    application = world.create()
    await world.until_ready(application)
    [callback] = world.partner.received
    assert (callback.json["event"], callback.json["rejection"]) == (
        "quotation.rejected",
        {"reason": "declined by underwriting"},
    )
    assert "quotation" not in callback.json
    assert world.ledger() == ["declined by underwriting"]
    # The status endpoint says the same, and issues nothing more.
    reply = push.poll(world.insurer, application.application_id, BASE)
    assert reply.body["status"] == "rejected" and len(world.ledger()) == 1


async def test_a_replayed_create_keeps_its_application_and_sends_one_callback(world: World) -> None:
    first = world.create(key="req-1:pushco")
    again = world.create(key="req-1:pushco")
    assert again is first
    await world.clock.advance(LONG_ENOUGH_S)
    assert len(world.partner.received) == 1
    assert world.insurer.replays == 1


async def test_closing_cancels_callbacks_not_yet_sent(world: World) -> None:
    world.create()
    world.create(ref="req-2")
    assert world.deliveries.pending == 2
    await world.deliveries.close()
    await world.clock.advance(LONG_ENOUGH_S)
    assert world.partner.received == [] and world.deliveries.pending == 0


# --- the dialect's parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        (lambda b: b.pop("webhook_url"), "/webhook_url"),
        (lambda b: b.update(webhook_url="ftp://partner"), "/webhook_url"),
        (lambda b: b["car"].update(vin="", body_number=""), "/car/vin"),
        (lambda b: b["car"].update(engine_power_hp=0), "/car/engine_power_hp"),
        (lambda b: b["car"].update(usage="rally"), "/car/usage"),
        (lambda b: b["policyholder"].update(birth_date="15.06.1985"), "/policyholder/birth_date"),
        (lambda b: b["drivers"]["list"][1]["licence"].pop("number"), "/drivers/list/1/licence/number"),
        (lambda b: b["drivers"].update(list=[]), "/drivers/list"),
        (lambda b: b["period"].update(months=13), "/period/months"),
    ],
)
def test_bad_input_is_422_with_a_json_pointer_and_creates_nothing(change: Any, pointer: str, clock: FakeClock) -> None:
    insurer = Simulation(SimConfig((PUSHCO,), seed=3), clock).insurers["pushco"]
    body = push_body()
    change(body)
    reply = push.create(insurer, json.dumps(body).encode(), None, BASE)
    assert reply.status == 422
    assert reply.body["error"]["code"] == "invalid_field"  # type: ignore[index]
    assert reply.body["error"]["pointer"] == pointer  # type: ignore[index]
    assert insurer.applications == {}


def test_the_secret_of_an_insurer_is_its_own_else_the_common_one_else_random(clock: FakeClock) -> None:
    other = InsurerProfile("otherco", "Other Co", "push", 0.5, 2.0, 0.35, 0.0)
    own = Simulation(SimConfig((PUSHCO, other), callback_secret="common", callback_secrets={"otherco": "own"}), clock)
    assert own.callback_secrets == {"pushco": "common", "otherco": "own"}
    drawn = [Simulation(SimConfig((PUSHCO,)), clock).callback_secrets["pushco"] for _ in range(2)]
    assert drawn[0] != drawn[1] and len(drawn[0]) >= 32


# --- over HTTP ------------------------------------------------------------------------------


@functional
async def test_push_over_http_creates_answers_status_and_calls_a_real_partner_back(http: aiohttp.ClientSession) -> None:
    arrived: list[tuple[bytes, dict[str, str]]] = []
    got = asyncio.Event()

    async def partner(request: web.Request) -> web.Response:
        arrived.append((await request.read(), dict(request.headers)))
        got.set()
        return web.json_response({"status": "accepted"})

    app = web.Application()
    app.router.add_post("/callbacks/pushco", partner)
    config = SimConfig((PUSHCO, RESTCO), seed=3, time_scale=0.001, callback_secret=SECRET)
    async with serve_app(app) as partner_url, SimServer(config) as sim:
        base = f"{sim.url}/insurers/pushco/v3/quotations"
        body = push_body(webhook_url=f"{partner_url}/callbacks/pushco")
        async with http.post(base, json=body, headers={"Idempotency-Key": "k-1"}) as r:
            assert r.status == 202
            created = await r.json()
        async with http.post(base, json=body, headers={"Idempotency-Key": "k-1"}) as r:
            assert (r.status, await r.json()) == (200, created)
        await asyncio.wait_for(got.wait(), 10)
        raw, headers = arrived[0]
        assert headers["X-Webhook-Signature"] == signature(SECRET, headers["X-Webhook-Timestamp"], raw)
        callback = json.loads(raw)
        assert callback["quotation_id"] == created["quotation_id"]
        async with http.get(f"{base}/{created['quotation_id']}") as r:
            status = await r.json()
        assert status == {
            "quotation_id": created["quotation_id"],
            "status": "completed",
            "quotation": callback["quotation"],
        }
        async with http.get(f"{sim.url}/_sim/callbacks", params={"reference": "req-1"}) as r:
            attempts = (await r.json())["attempts"]
        assert [(a["insurer_id"], a["result"], a["status"]) for a in attempts] == [("pushco", "accepted", 200)]
        async with http.get(f"{sim.url}/_sim/stats", params={"reference": "req-1"}) as r:
            stats = await r.json()
        assert stats["insurers"]["pushco"] == {"creates": 1, "replays": 1, "polls": 1, "callbacks": 1}
        async with http.get(f"{sim.url}/_sim/ledger", params={"reference": "req-1"}) as r:
            offers = (await r.json())["offers"]
        assert [o["offer_id"] for o in offers] == [callback["quotation"]["number"]]
        # The other dialects' paths are not this insurer's, and callback faults are not the rest insurer's.
        async with http.post(f"{sim.url}/insurers/pushco/api/v1/applications", json={}) as r:
            assert r.status == 404
        async with http.put(f"{sim.url}/_sim/insurers/restco/fault", json={"mode": "callback_never"}) as r:
            assert r.status == 400
            assert (await r.json())["field"] == "mode"
        async with http.put(f"{sim.url}/_sim/insurers/pushco/fault", json={"mode": "callback_late", "delay_s": 2}) as r:
            assert r.status == 200
            assert (await r.json())["fault"] == {"mode": "callback_late", "delay_s": 2.0, "scaled": False}


@functional
async def test_an_unreachable_partner_is_recorded_as_failed_attempts(http: aiohttp.ClientSession) -> None:
    config = SimConfig((PUSHCO,), seed=3, time_scale=0.0001, callback_secret=SECRET)
    async with SimServer(config) as sim:
        # A port nothing listens on any more.
        async with serve_app(web.Application()) as gone:
            pass
        body = push_body(webhook_url=f"{gone}/callbacks/pushco")
        async with http.post(f"{sim.url}/insurers/pushco/v3/quotations", json=body) as r:
            assert r.status == 202
        for _ in range(500):
            async with http.get(f"{sim.url}/_sim/callbacks") as r:
                answer = await r.json()
            if answer["pending"] == 0:
                break
            await asyncio.sleep(0.01)
        assert [a["result"] for a in answer["attempts"]] == ["failed"] * 8
        assert all(a["detail"] for a in answer["attempts"])
