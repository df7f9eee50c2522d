"""The gateway's side of insurers that call back, as pure code: the "push" dialect, signature
verification, the in-process inbox, and the callback flow (wait for the callback; the safety-net
poll) on a FakeClock with a scripted insurer, so every moment is exact. The endpoint over HTTP,
the Redis inbox and the whole mesh are in test_callbacks."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from insurer_gateway.callback_flow import CallbackFlow
from insurer_gateway.dialects import (
    Breakdown,
    Created,
    Declined,
    NotFound,
    NotReady,
    Offer,
    PushDialect,
    Pushed,
    Rejected,
)
from insurer_gateway.exchange import BadResponse, HttpCall, HttpResponse, HttpTimeout
from insurer_gateway.guard import InsurerGuard
from insurer_gateway.inbox import LocalInbox, seal, unseal
from insurer_gateway.offers import Accepted, Failed, Pending, Reason, Update
from insurer_gateway.polling import MIN_TIMES
from insurer_gateway.settings import GatewaySettings
from insurer_gateway.signatures import Verdict, verify
from osago_common.clock import FakeClock
from osago_common.env import SettingsError
from tests.test_gateway_dialects import make_application
from tests.test_gateway_offers import DEV_ENV

SECRET = "shared-with-the-insurer-0123456789"
HOOK = "https://callbacks.osago.example/callbacks/sovcom"
PUSH = PushDialect(HOOK)
START = date(2026, 2, 1)
SETTINGS = GatewaySettings(
    insurer_id="sovcom",
    insurer_name="Sovcombank Insurance",
    dialect="push",
    base_url="http://insurer",
    callback_secret=SECRET,
    callback_poll_default_s=10.0,  # shorter than the default: the tests' sessions are short
)
CREATE = HttpCall("POST", "/v3/quotations", {"Idempotency-Key": "req-1:sovcom"}, {"partner_ref": "req-1"})

QUOTATION: dict[str, Any] = {
    "number": "SC-1",
    "premium": {"amount_minor": 1234567, "currency": "RUB"},
    "base_rate": {"amount_minor": 500000, "currency": "RUB"},
    "factors": [
        {"code": "KT", "value": "1.8"},
        {"code": "KBM", "value": "1.17"},
        {"code": "KVS", "value": "1.04"},
        {"code": "KO", "value": "1"},
        {"code": "KM", "value": "1.1"},
        {"code": "KS", "value": "1"},
        {"code": "KN", "value": "1"},
        {"code": "KP", "value": "1"},
    ],
    "valid_till": "2026-01-20T09:00:00+00:00",
    "checkout_url": "http://insurer/pay/SC-1",
}
OFFER = Offer(
    offer_id="SC-1",
    premium_kopecks=1234567,
    currency="RUB",
    breakdown=Breakdown(
        base_rate_kopecks=500000,
        kt=Decimal("1.8"),
        kbm=Decimal("1.17"),
        kvs=Decimal("1.04"),
        ko=Decimal(1),
        km=Decimal("1.1"),
        ks=Decimal(1),
        kn=Decimal(1),
        kp=Decimal(1),
    ),
    valid_until=datetime(2026, 1, 20, 9, tzinfo=UTC),
    purchase_url="http://insurer/pay/SC-1",
)


def completed(quotation_id: str = "Q-1", **changes: Any) -> bytes:
    return json.dumps(
        {
            "event": "quotation.completed",
            "delivery_id": "d-1",
            "quotation_id": quotation_id,
            "partner_ref": "req-1",
            "quotation": {**QUOTATION, **changes},
        }
    ).encode()


def rejected(quotation_id: str = "Q-1", reason: str = "not this car") -> bytes:
    body = {"event": "quotation.rejected", "quotation_id": quotation_id, "rejection": {"reason": reason}}
    return json.dumps(body).encode()


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpResponse(status, headers or {}, raw)


CREATED = reply(202, {"quotation_id": "Q-1", "status": "pending"})
PENDING = reply(200, {"quotation_id": "Q-1", "status": "pending"})
COMPLETED = reply(200, {"quotation_id": "Q-1", "status": "completed", "quotation": QUOTATION})


# --- the dialect ----------------------------------------------------------------------------


def test_the_create_writes_nested_snake_case_with_the_callback_url_and_idempotency_key() -> None:
    call = PUSH.create_request("req-1", "req-1:sovcom", make_application(), START)
    assert (call.method, call.path, call.idempotent) == ("POST", "/v3/quotations", True)
    assert call.headers == {"Idempotency-Key": "req-1:sovcom"}
    assert call.json == {
        "partner_ref": "req-1",
        "webhook_url": HOOK,
        "car": {
            "vin": "XTAGFL110NY612345",
            "body_number": "",
            "reg_number": "М482КХ797",
            "brand": "Lada",
            "model": "Vesta",
            "production_year": 2022,
            "engine_power_hp": 106,
            "category": "B",
            "usage": "personal",
        },
        "policyholder": {
            "surname": "Smirnov",
            "name": "Artyom",
            "patronymic": "Igorevich",
            "birth_date": "1990-03-14",
            "registration_city": "Moscow",
            "kbm": "3",
        },
        "drivers": {
            "unlimited": False,
            "list": [
                {
                    "surname": "Smirnov",
                    "name": "Artyom",
                    "patronymic": "Igorevich",
                    "birth_date": "1990-03-14",
                    "licence": {"number": "7731456802", "issued_on": "2010-04-02"},
                    "kbm": "3",
                }
            ],
        },
        "period": {"starts_on": "2026-02-01", "months": 12},
    }


def test_without_a_callback_url_the_dialect_creates_nothing() -> None:
    with pytest.raises(RuntimeError, match="callback URL"):
        PushDialect().create_request("req-1", "req-1:sovcom", make_application(), START)
    assert PushDialect().with_callback_url(HOOK).callback_url == HOOK


def test_the_create_answer_is_the_quotation_id_without_a_hint_and_a_422_names_the_pointer() -> None:
    assert PUSH.parse_create(CREATED) == Created("Q-1", None)
    assert PUSH.parse_create(reply(200, {"quotation_id": "Q-1", "status": "pending"})) == Created("Q-1", None)
    refusal = {"error": {"code": "invalid_field", "pointer": "/drivers/list/0/kbm", "detail": "Smirnov's class"}}
    assert PUSH.parse_create(reply(422, refusal)) == Rejected("drivers.list.0.kbm")
    assert PUSH.parse_create(reply(422, b"<html>")) == Rejected("")


def test_the_status_endpoint_reads_pending_completed_rejected_and_404() -> None:
    assert PUSH.poll_request("Q/1") == HttpCall("GET", "/v3/quotations/Q%2F1", idempotent=True)
    assert PUSH.parse_poll(PENDING) == NotReady(None)
    assert PUSH.parse_poll(COMPLETED) == OFFER
    status = {"quotation_id": "Q-1", "status": "rejected", "rejection": {"reason": "no taxis"}}
    assert PUSH.parse_poll(reply(200, status)) == Declined("no taxis")
    assert PUSH.parse_poll(reply(404, {"error": {"code": "not_found"}})) == NotFound()


def test_a_callback_is_read_into_the_application_and_its_outcome() -> None:
    assert PUSH.read_callback(completed()) == Pushed("Q-1", OFFER)
    assert PUSH.read_callback(rejected(reason="no taxis")) == Pushed("Q-1", Declined("no taxis"))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "body is not JSON"),
        (json.dumps({"event": "quotation.deleted", "quotation_id": "Q-1"}).encode(), "unknown 'event'"),
        (json.dumps({"event": "quotation.completed"}).encode(), "'quotation_id'"),
        (completed(premium={"amount_minor": 100, "currency": "USD"}), "'premium' is not in RUB"),
        (completed(premium={"amount_minor": "12.00", "currency": "RUB"}), "'amount_minor' is not an integer"),
        (completed(factors=[{"code": "KT", "value": "1.8"}]), "'factors' lacks KBM, KVS, KO, KM, KS, KN, KP"),
        (completed(factors={"KT": "1.8"}), "'factors' is not a list of objects"),
        (completed(valid_till="2026-01-20T09:00:00"), "'valid_till'"),
    ],
)
def test_off_schema_callbacks_raise_bad_response(body: bytes, reason: str) -> None:
    with pytest.raises(BadResponse, match=reason):
        PUSH.read_callback(body)


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (reply(500, {"error": "x"}), "unexpected HTTP status 500"),
        (reply(200, {"quotation_id": "Q-1", "status": "queued"}), "unknown 'status'"),
        (reply(200, {"quotation_id": "Q-1", "status": "completed"}), "'quotation' is not an object"),
        (reply(200, {"quotation_id": "Q-1", "status": "rejected"}), "'rejection' is not an object"),
    ],
)
def test_off_schema_status_answers_raise_bad_response(response: HttpResponse, reason: str) -> None:
    with pytest.raises(BadResponse, match=reason):
        PUSH.parse_poll(response)


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (reply(201, {"quotation_id": "Q-1", "status": "pending"}), "unexpected HTTP status 201"),
        (reply(202, {"quotation_id": "Q-1", "status": "odd"}), "unknown 'status'"),
        (reply(202, {"status": "pending"}), "'quotation_id'"),
    ],
)
def test_off_schema_create_answers_raise_bad_response(response: HttpResponse, reason: str) -> None:
    with pytest.raises(BadResponse, match=reason):
        PUSH.parse_create(response)


# --- signatures -----------------------------------------------------------------------------

NOW = 1_768_467_600  # 2026-01-15 09:00:00 UTC
BODY = completed()


def signed(secret: str = SECRET, timestamp: int = NOW, body: bytes = BODY) -> tuple[str, str]:
    """(timestamp, signature) as the insurer's documentation says it signs, computed here anew."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return str(timestamp), f"sha256={digest}"


def test_a_callback_signed_with_the_shared_secret_just_now_is_valid() -> None:
    assert verify(SECRET.encode(), *signed(), BODY, NOW + 3, 300) is Verdict.VALID


@pytest.mark.parametrize(
    ("timestamp", "signature", "body", "now", "verdict"),
    [
        pytest.param(*signed(), BODY.replace(b"1234567", b"1"), NOW, Verdict.MISMATCH, id="tampered body"),
        pytest.param(*signed("another-secret-of-some-length"), BODY, NOW, Verdict.MISMATCH, id="wrong secret"),
        pytest.param(*signed(timestamp=NOW - 301), BODY, NOW, Verdict.STALE, id="stale"),
        pytest.param(*signed(timestamp=NOW + 301), BODY, NOW, Verdict.STALE, id="from the future"),
        pytest.param(str(NOW - 300), signed(timestamp=NOW - 300)[1], BODY, NOW, Verdict.VALID, id="window's edge"),
        pytest.param(str(NOW + 1), signed()[1], BODY, NOW, Verdict.MISMATCH, id="timestamp changed"),
        pytest.param(None, signed()[1], BODY, NOW, Verdict.UNSIGNED, id="no timestamp"),
        pytest.param(str(NOW), "", BODY, NOW, Verdict.UNSIGNED, id="no signature"),
        pytest.param(str(NOW), signed()[1].removeprefix("sha256="), BODY, NOW, Verdict.MALFORMED, id="no scheme"),
        pytest.param(str(NOW), "sha256=" + "0" * 63, BODY, NOW, Verdict.MALFORMED, id="short digest"),
        pytest.param("yesterday", signed()[1], BODY, NOW, Verdict.MALFORMED, id="timestamp not a number"),
    ],
)
def test_a_callback_that_is_not_validly_signed_just_now_is_refused(
    timestamp: str | None, signature: str, body: bytes, now: int, verdict: Verdict
) -> None:
    assert verify(SECRET.encode(), timestamp, signature, body, now, 300) is verdict


# --- the in-process inbox -------------------------------------------------------------------


async def test_the_inbox_keeps_the_first_body_wakes_its_waiter_and_forgets_after_keep_s(clock: FakeClock) -> None:
    inbox = LocalInbox(clock, keep_s=600, window_s=300)
    with inbox.waiting("Q-1") as arrival:
        assert await inbox.deliver("Q-1", b"first") is True
        assert arrival.result() == b"first"
    assert await inbox.deliver("Q-1", b"again") is False
    assert await inbox.stored("Q-1") == b"first"
    assert await inbox.stored("Q-2") is None
    await clock.advance(599.9)
    assert await inbox.stored("Q-1") == b"first"
    await clock.advance(0.1)
    assert await inbox.stored("Q-1") is None and inbox.kept == 0


def test_a_sealed_body_keeps_the_moment_it_was_accepted() -> None:
    at = datetime(2026, 1, 15, 9, 0, 3, 250000, tzinfo=UTC)
    body = b'{"quotation_id": "Q-1"}'
    assert seal(body, at) == b"@2026-01-15T09:00:03.250000+00:00\n" + body
    assert unseal(seal(body, at)) == (body, at)
    assert unseal(body) == (body, None)  # stored by something other than the endpoint
    assert unseal(b"@not a time\n{}") == (b"@not a time\n{}", None)


async def test_the_inbox_remembers_what_it_saw_for_the_window(clock: FakeClock) -> None:
    inbox = LocalInbox(clock, keep_s=600, window_s=300)
    assert await inbox.first_sight("Q-1:sig-a") is True
    assert await inbox.first_sight("Q-1:sig-a") is False
    assert await inbox.first_sight("Q-1:sig-b") is True
    await clock.advance(300)
    assert await inbox.first_sight("Q-1:sig-a") is True


# --- the flow, on a FakeClock ---------------------------------------------------------------


@dataclass
class Insurer:
    """A scripted insurer: the create's answer, then the status answers in order (the last
    repeats)."""

    clock: FakeClock
    steps: list[HttpResponse]
    calls: list[tuple[float, HttpCall]] = field(default_factory=list)
    # Status polls never answer: each takes its whole timeout.
    hang_polls: bool = False

    async def __call__(self, call: HttpCall, timeout: float) -> HttpResponse:
        self.calls.append((self.clock.monotonic(), call))
        if self.hang_polls and call.method == "GET":
            await self.clock.sleep(timeout)
            raise HttpTimeout("timed out")
        return self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]

    @property
    def polls(self) -> list[float]:
        return [round(at, 6) for at, call in self.calls if call.method == "GET"]


@dataclass
class Run:
    clock: FakeClock
    inbox: LocalInbox
    flow: CallbackFlow
    insurer: Insurer
    # When the gateway obtained each offer of the last run (Offer.obtained_at), in seconds after
    # the run's start; the offers in the updates are compared without it.
    obtained: list[float] = field(default_factory=list)

    async def __call__(
        self,
        steps: list[HttpResponse],
        callbacks: Sequence[tuple[float, bytes]] = (),
        deadline: float = 60.0,
        meanwhile: Sequence[tuple[float, Callable[[], None]]] = (),
    ) -> list[tuple[float, Update]]:
        """Runs one application from now: `callbacks` are (seconds after now, body) delivered
        as the endpoint delivers them (sealed with the moment), `meanwhile` (seconds after now,
        what happens then)."""
        self.insurer.steps = steps
        self.insurer.calls.clear()
        self.obtained.clear()
        start = self.clock.monotonic()
        started_at = self.clock.now()
        updates: list[tuple[float, Update]] = []

        async def consume() -> None:
            async for update in self.flow.run(CREATE, start + deadline):
                seen = update
                if isinstance(update, Offer):
                    assert update.obtained_at is not None, "an offer without obtained_at"
                    self.obtained.append(round((update.obtained_at - started_at).total_seconds(), 6))
                    seen = dataclasses.replace(update, obtained_at=None)
                updates.append((round(self.clock.monotonic() - start, 6), seen))

        async def call_back(after: float, body: bytes) -> None:
            await self.clock.sleep(after)
            await self.inbox.deliver(json.loads(body)["quotation_id"], seal(body, self.clock.now()))

        async def later(after: float, happen: Callable[[], None]) -> None:
            await self.clock.sleep(after)
            happen()

        tasks = [asyncio.create_task(call_back(after, body)) for after, body in callbacks]
        tasks += [asyncio.create_task(later(after, happen)) for after, happen in meanwhile]
        task = asyncio.create_task(consume())
        await self.clock.advance(deadline + 10)
        assert task.done(), "the flow outlived its deadline"
        await task
        for t in tasks:
            t.cancel()
        self.insurer.calls[:] = [(round(at - start, 6), call) for at, call in self.insurer.calls]
        return updates


def make_run(
    settings: GatewaySettings = SETTINGS, inbox_type: Callable[[FakeClock, float, float], LocalInbox] = LocalInbox
) -> Run:
    clock = FakeClock()
    inbox = inbox_type(clock, settings.callback_keep_s, settings.callback_window_s)
    insurer = Insurer(clock, [CREATED])
    guard = InsurerGuard(settings, clock, rng=random.Random(0))
    flow = CallbackFlow(settings, PUSH, insurer, clock, inbox, guard)
    return Run(clock, inbox, flow, insurer)


def kinds(updates: list[tuple[float, Update]]) -> list[str]:
    return [type(u).__name__ for _, u in updates]


async def test_the_offer_arrives_with_the_callback_and_no_poll_is_made() -> None:
    run = make_run()
    updates = await run([CREATED], callbacks=[(2.5, completed())])
    assert updates == [(0.0, Accepted("Q-1")), (2.5, OFFER)]
    assert run.obtained == [2.5]  # obtained when the callback was accepted
    assert [call.method for _, call in run.insurer.calls] == ["POST"]
    assert (run.flow.callbacks_total, run.flow.safety_polls_total) == (1, 0)


async def test_a_callback_that_came_before_the_create_was_answered_is_found_at_once() -> None:
    run = make_run()
    await run.inbox.deliver("Q-1", completed())
    updates = await run([CREATED])
    assert updates == [(0.0, Accepted("Q-1")), (0.0, OFFER)]
    assert run.insurer.polls == []


async def test_a_declined_callback_ends_the_stream_declined_in_the_insurers_words() -> None:
    updates = await make_run()([CREATED], callbacks=[(1.0, rejected(reason="no taxis"))])
    at, last = updates[-1]
    assert at == 1.0 and isinstance(last, Failed)
    assert (last.reason, last.message) == (Reason.DECLINED, "no taxis")


async def test_while_waiting_pending_is_sent_every_heartbeat() -> None:
    quiet = dataclasses.replace(SETTINGS, callback_poll_default_s=60.0)
    updates = await make_run(quiet)([CREATED], callbacks=[(12.0, completed())])
    assert updates == [(0.0, Accepted("Q-1")), (5.0, Pending(0)), (10.0, Pending(0)), (12.0, OFFER)]


async def test_without_a_callback_the_safety_net_polls_late_backs_off_and_polls_once_before_the_deadline() -> None:
    run = make_run()
    updates = await run([CREATED, PENDING], deadline=40.0)
    # The default 10 s (nothing learned yet), then ×1.5: 25 s; the next (47.5 s) would be too
    # late: one last poll 0.25 s before the deadline instead.
    assert run.insurer.polls == [10.0, 25.0, 39.75]
    at, last = updates[-1]
    assert at == 40.0 and isinstance(last, Failed) and last.reason is Reason.DEADLINE
    assert last.detail == "no callback, still pending after 3 safety-net polls"


async def test_the_safety_net_poll_gets_an_offer_whose_callback_never_came() -> None:
    run = make_run()
    updates = await run([CREATED, COMPLETED])
    assert updates == [(0.0, Accepted("Q-1")), (5.0, Pending(0)), (10.0, Pending(0)), (10.0, OFFER)]
    assert run.obtained == [10.0]  # the poll's answer
    assert run.flow.safety_polls_total == 1


async def learn(run: Run, times: list[float]) -> None:
    """Sessions whose callbacks came `times` seconds after their creates were answered."""
    for n, after in enumerate(times):
        created = reply(202, {"quotation_id": f"Q-{n}", "status": "pending"})
        await run([created], callbacks=[(after, completed(f"Q-{n}"))])


async def test_the_first_safety_poll_follows_the_tail_of_the_times_the_callbacks_took() -> None:
    run = make_run()
    times = [2.0 + 0.1 * n for n in range(MIN_TIMES)]  # 2.0 s … 3.9 s
    await learn(run, times)
    # Nearest-rank p95 of twenty times is the 19th smallest, 3.8 s; twice that is 7.6 s.
    assert run.flow.first_safety_poll_s() == pytest.approx(7.6)
    await run([reply(202, {"quotation_id": "Q-99", "status": "pending"}), PENDING], deadline=15.0)
    # The next would come 1.5 × 7.6 s later, past the last poll's moment, 0.25 s before the end.
    assert run.insurer.polls == [pytest.approx(7.6), 14.75]


async def test_until_enough_times_are_known_the_safety_net_waits_the_default() -> None:
    run = make_run()
    # The first callbacks of a cold start are the fast ones: a tail drawn from them would poll
    # applications whose callbacks are merely slower than these.
    await learn(run, [1.0] * (MIN_TIMES - 1))
    assert run.flow.first_safety_poll_s() == SETTINGS.callback_poll_default_s
    await learn(run, [1.0])
    assert run.flow.first_safety_poll_s() == 2.0  # twice the 1 s every callback took


async def test_the_safety_net_poll_is_never_sooner_than_its_minimum() -> None:
    run = make_run()
    await learn(run, [0.1] * MIN_TIMES)
    assert run.flow.first_safety_poll_s() == 1.0  # 2 × 0.1 s, raised to callback_poll_min_s


async def test_a_stored_callback_whose_wake_up_was_missed_is_found_before_polling() -> None:
    class Deaf(LocalInbox):
        """Stores, but wakes nobody (a pub/sub message lost on the way)."""

        async def deliver(self, application_id: str, body: bytes) -> bool:
            self._results.add(application_id, body)
            return True

    run = make_run(inbox_type=Deaf)
    updates = await run([CREATED, PENDING], callbacks=[(3.0, completed())])
    assert updates[-1] == (10.0, OFFER)
    assert run.insurer.polls == []
    # Obtained when the endpoint accepted the callback (3 s), not when the stream found it.
    assert run.obtained == [3.0]


async def test_a_failed_safety_poll_ends_nothing_and_the_callback_still_ends_the_wait() -> None:
    no_retries = dataclasses.replace(SETTINGS, retry_max_attempts=1)
    run = make_run(no_retries)
    updates = await run([CREATED, reply(503, {"error": "maintenance"})], callbacks=[(12.0, completed())])
    assert run.insurer.polls == [10.0]
    assert updates[-1] == (12.0, OFFER)


async def test_a_callback_arriving_during_a_hanging_safety_poll_ends_the_wait_at_once() -> None:
    run = make_run()
    run.insurer.hang_polls = True
    updates = await run([CREATED], callbacks=[(11.0, completed())])
    assert run.insurer.polls == [10.0]
    assert updates[-1] == (11.0, OFFER)  # not at 15 s, when the poll would have timed out


async def test_at_the_deadline_the_last_failed_safety_poll_says_why() -> None:
    no_retries = dataclasses.replace(SETTINGS, retry_max_attempts=1)
    updates = await make_run(no_retries)([CREATED, reply(503, {"error": "maintenance"})], deadline=12.0)
    at, last = updates[-1]
    assert at == 12.0 and isinstance(last, Failed) and last.reason is Reason.INSURER_ERROR
    assert last.detail.startswith("no callback; last safety-net poll: poll: HTTP 503")


async def test_an_open_breaker_skips_the_safety_poll_but_the_callback_still_comes() -> None:
    run = make_run(dataclasses.replace(SETTINGS, breaker_open_s=60.0))

    def fail_elsewhere() -> None:  # the insurer failed for other streams meanwhile
        for _ in range(SETTINGS.breaker_min_calls):
            permit = run.flow.guard.breaker.try_acquire()
            assert permit is not None
            permit.failure(0.1)

    updates = await run([CREATED, COMPLETED], callbacks=[(11.0, completed())], meanwhile=[(1.0, fail_elsewhere)])
    assert run.insurer.polls == []
    assert updates[-1] == (11.0, OFFER)


async def test_a_status_404_or_decline_ends_the_stream() -> None:
    updates = await make_run()([CREATED, reply(404, {"error": {"code": "not_found"}})])
    last = updates[-1][1]
    assert isinstance(last, Failed) and last.reason is Reason.INSURER_ERROR
    status = {"quotation_id": "Q-1", "status": "rejected", "rejection": {"reason": "no taxis"}}
    updates = await make_run()([CREATED, reply(200, status)])
    last = updates[-1][1]
    assert isinstance(last, Failed) and (last.reason, last.message) == (Reason.DECLINED, "no taxis")


async def test_a_refused_create_fails_declined_without_waiting() -> None:
    refusal = reply(422, {"error": {"code": "invalid_field", "pointer": "/car/vin"}})
    updates = await make_run()([refusal])
    assert kinds(updates) == ["Failed"] and updates[0][0] == 0.0
    last = updates[0][1]
    assert isinstance(last, Failed) and last.reason is Reason.DECLINED and "car.vin" in last.detail


# --- settings -------------------------------------------------------------------------------


def test_callback_settings_are_read_from_the_environment_and_the_secret_never_shown() -> None:
    s = GatewaySettings.from_env(
        DEV_ENV
        | {
            "OSAGO_GATEWAY_INSURER": "sovcom",
            "OSAGO_GATEWAY_BASE_URL": "http://sim/insurers/sovcom",
            "OSAGO_GATEWAY_CALLBACK_BIND": "0.0.0.0:8090",
            "OSAGO_GATEWAY_CALLBACK_BASE_URL": "https://callbacks.osago.example/",
            "OSAGO_GATEWAY_CALLBACK_SECRET": SECRET,
            "OSAGO_GATEWAY_CALLBACK_WINDOW_S": "120",
            "OSAGO_GATEWAY_CALLBACK_KEEP_S": "900",
            "OSAGO_GATEWAY_CALLBACK_POLL_FACTOR": "3",
            "OSAGO_GATEWAY_CALLBACK_POLL_MIN_S": "2",
            "OSAGO_GATEWAY_CALLBACK_POLL_DEFAULT_S": "20",
        }
    )
    assert (s.dialect, s.callbacks, s.callback_bind, s.callback_base_url, s.callback_secret) == (
        "push",
        True,
        "0.0.0.0:8090",
        "https://callbacks.osago.example",
        SECRET,
    )
    assert (s.callback_window_s, s.callback_keep_s) == (120.0, 900.0)
    assert (s.callback_poll_factor, s.callback_poll_min_s, s.callback_poll_default_s) == (3.0, 2.0, 20.0)
    assert SECRET not in repr(s)
    rest = GatewaySettings.from_env(DEV_ENV | {"OSAGO_GATEWAY_INSURER": "alfa", "OSAGO_GATEWAY_BASE_URL": "http://x"})
    assert rest.callbacks is False  # and needs no secret


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"callback_secret": None}, "OSAGO_GATEWAY_CALLBACK_SECRET of at least 16 characters is required"),
        ({"callback_secret": "short"}, "OSAGO_GATEWAY_CALLBACK_SECRET of at least 16 characters is required"),
        ({"callback_bind": "0.0.0.0:8090"}, "OSAGO_GATEWAY_CALLBACK_BASE_URL is required"),
        ({"callback_bind": "[::]:8090"}, "OSAGO_GATEWAY_CALLBACK_BASE_URL is required"),
        ({"callback_base_url": "callbacks.example"}, "callback_base_url must be an http"),
        ({"callback_window_s": 0}, "callback_window_s must be positive"),
        ({"callback_poll_factor": 0.5}, "callback_poll_factor must be at least 1.0"),
    ],
)
def test_callback_settings_refuse_what_would_not_work(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        dataclasses.replace(SETTINGS, **changes)
