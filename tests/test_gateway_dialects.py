"""The insurer API dialects as pure code: the requests they write and how they read answers,
well-formed and broken."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from osago.v1 import application_pb2

from insurer_gateway.dialects import (
    CALLBACK_DIALECTS,
    DIALECTS,
    Breakdown,
    CalcDialect,
    Created,
    Declined,
    Dialect,
    InvalidApplication,
    NotFound,
    NotReady,
    Offer,
    Rejected,
    RestDialect,
)
from insurer_gateway.exchange import BadResponse, HttpResponse

START = date(2026, 2, 1)
REST = RestDialect()
CALC = CalcDialect()


def make_application(**changes: Any) -> application_pb2.Application:
    """A Moscow Lada with one class-3 driver."""
    app = application_pb2.Application(
        vehicle=application_pb2.Vehicle(
            vin="XTAGFL110NY612345",
            plate="М482КХ797",
            make="Lada",
            model="Vesta",
            year=2022,
            power_hp=106,
            category=application_pb2.VEHICLE_CATEGORY_B,
            purpose=application_pb2.VEHICLE_PURPOSE_PERSONAL,
        ),
        owner=application_pb2.Owner(
            name=application_pb2.PersonName(last_name="Smirnov", first_name="Artyom", middle_name="Igorevich"),
            birth_date="1990-03-14",
            registration_city="Moscow",
            kbm_class=application_pb2.KBM_CLASS_3,
        ),
        drivers=[
            application_pb2.Driver(
                name=application_pb2.PersonName(last_name="Smirnov", first_name="Artyom", middle_name="Igorevich"),
                birth_date="1990-03-14",
                licence_number="7731456802",
                licence_issue_date="2010-04-02",
                kbm_class=application_pb2.KBM_CLASS_3,
            )
        ],
        usage_months=12,
    )
    for name, value in changes.items():
        setattr(app, name, value)
    return app


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpResponse(status, headers or {}, raw)


REST_OFFER: dict[str, Any] = {
    "offerId": "ALFA-1",
    "premium": {"amount": "12345.67", "currency": "RUB"},
    "coefficients": {
        "TB": "5000.00",
        "KT": "1.8",
        "KBM": "1.17",
        "KVS": "1.04",
        "KO": "1",
        "KM": "1.1",
        "KS": "1",
        "KN": "1",
        "KP": "1",
    },
    "validUntil": "2026-01-20T09:00:00+00:00",
    "paymentUrl": "http://sim/insurers/alfa/pay/ALFA-1",
}

CALC_RESULT: dict[str, Any] = {
    "quote_no": "Q-77",
    "premium_kop": 1234567,
    "k": {
        "tb_kop": 500000,
        "kt": "1.8",
        "kbm": "1.17",
        "kvs": "1.04",
        "ko": "1",
        "km": "1.1",
        "ks": "1",
        "kn": "1",
        "kp": "1",
    },
    "expires": "2026-01-20T09:00:00Z",
    "buy_url": "http://sim/insurers/ingos/pay/Q-77",
}

BREAKDOWN = Breakdown(
    base_rate_kopecks=500000,
    kt=Decimal("1.8"),
    kbm=Decimal("1.17"),
    kvs=Decimal("1.04"),
    ko=Decimal(1),
    km=Decimal("1.1"),
    ks=Decimal(1),
    kn=Decimal(1),
    kp=Decimal(1),
)


def test_registry_holds_every_dialect_under_its_name_and_knows_which_call_back() -> None:
    assert {name: d.name for name, d in DIALECTS.items()} == {"rest": "rest", "calc": "calc", "push": "push"}
    assert set(CALLBACK_DIALECTS) == {"push"}


# --- requests -------------------------------------------------------------------------------


def test_rest_create_request_writes_camel_case_application_with_idempotency_key() -> None:
    call = REST.create_request("req-1", "req-1:alfa", make_application(), START)
    assert (call.method, call.path) == ("POST", "/api/v1/applications")
    assert call.headers == {"Idempotency-Key": "req-1:alfa"}
    assert call.idempotent  # the key makes a repeat safe, so the guard may retry it
    assert call.json == {
        "externalRef": "req-1",
        "vehicle": {
            "vin": "XTAGFL110NY612345",
            "bodyNumber": "",
            "plate": "М482КХ797",
            "make": "Lada",
            "model": "Vesta",
            "year": 2022,
            "powerHp": 106,
            "category": "B",
            "purpose": "personal",
        },
        "owner": {
            "lastName": "Smirnov",
            "firstName": "Artyom",
            "middleName": "Igorevich",
            "birthDate": "1990-03-14",
            "city": "Moscow",
        },
        "ownerKbmClass": "3",
        "drivers": [
            {
                "lastName": "Smirnov",
                "firstName": "Artyom",
                "middleName": "Igorevich",
                "birthDate": "1990-03-14",
                "licenceNumber": "7731456802",
                "licenceIssueDate": "2010-04-02",
                "kbmClass": "3",
            }
        ],
        "unlimitedDrivers": False,
        "startDate": "2026-02-01",
        "usageMonths": 12,
    }
    json.dumps(call.json)  # serialisable as is


def test_calc_create_request_writes_snake_case_with_russian_dates_and_fio() -> None:
    app = make_application()
    app.vehicle.category = application_pb2.VEHICLE_CATEGORY_BE
    app.vehicle.purpose = application_pb2.VEHICLE_PURPOSE_TAXI
    app.drivers[0].kbm_class = application_pb2.KBM_CLASS_M
    call = CALC.create_request("req-2", "req-2:ingos", app, START)
    assert (call.method, call.path) == ("POST", "/osago/calc")
    assert call.headers == {"Idempotency-Key": "req-2:ingos"}
    assert call.idempotent
    assert call.json == {
        "ref": "req-2",
        "ts": {
            "vin": "XTAGFL110NY612345",
            "body_no": "",
            "reg_plate": "М482КХ797",
            "brand": "Lada",
            "model": "Vesta",
            "made_year": 2022,
            "hp": 106,
            "cat": "BE",
            "use": "TAXI",
        },
        "insurant": {"fio": "Smirnov Artyom Igorevich", "dob": "14.03.1990", "city": "Moscow"},
        "kbm_owner": "3",
        "persons": [
            {
                "fio": "Smirnov Artyom Igorevich",
                "dob": "14.03.1990",
                "vu": "7731456802",
                "vu_date": "02.04.2010",
                "kbm": "M",
            }
        ],
        "multidrive": False,
        "date_from": "01.02.2026",
        "period_months": 12,
    }


@pytest.mark.parametrize(
    ("kbm_class", "code"),
    [
        (application_pb2.KBM_CLASS_M, "M"),
        (application_pb2.KBM_CLASS_0, "0"),
        (application_pb2.KBM_CLASS_3, "3"),
        (application_pb2.KBM_CLASS_13, "13"),
    ],
)
def test_bonus_malus_classes_are_written_as_codes(kbm_class: application_pb2.KbmClass.ValueType, code: str) -> None:
    app = make_application()
    app.drivers[0].kbm_class = kbm_class
    app.owner.kbm_class = kbm_class
    body = REST.create_request("r", "r:alfa", app, START).json
    assert body is not None
    assert body["drivers"][0]["kbmClass"] == code
    assert body["ownerKbmClass"] == code


def test_unlimited_drivers_without_owner_class_or_usage_months_get_the_defaults() -> None:
    app = make_application(unlimited_drivers=True, usage_months=0)
    del app.drivers[:]
    app.owner.kbm_class = application_pb2.KBM_CLASS_UNSPECIFIED
    app.owner.name.middle_name = ""
    rest = REST.create_request("r", "r:alfa", app, START).json
    calc = CALC.create_request("r", "r:ingos", app, START).json
    assert rest is not None and calc is not None
    assert (rest["ownerKbmClass"], rest["usageMonths"], rest["drivers"], rest["unlimitedDrivers"]) == (
        "3",
        12,
        [],
        True,
    )
    assert (calc["kbm_owner"], calc["period_months"], calc["persons"], calc["multidrive"]) == ("3", 12, [], True)
    assert calc["insurant"]["fio"] == "Smirnov Artyom"


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            lambda a: setattr(a.drivers[0], "kbm_class", application_pb2.KBM_CLASS_UNSPECIFIED),
            "drivers[0].kbm_class",
            "bonus-malus class is required",
        ),
        (
            lambda a: setattr(a.vehicle, "category", application_pb2.VEHICLE_CATEGORY_C),
            "vehicle.category",
            "only categories B and BE are insured",
        ),
        (lambda a: setattr(a.owner, "birth_date", "14.03.1990"), "owner.birth_date", "not a YYYY-MM-DD date"),
        (
            lambda a: setattr(a.drivers[0], "licence_issue_date", ""),
            "drivers[0].licence_issue_date",
            "not a YYYY-MM-DD date",
        ),
    ],
)
@pytest.mark.parametrize("dialect", [REST, CALC], ids=["rest", "calc"])
def test_applications_the_dialect_cannot_write_name_the_field(
    dialect: Dialect, change: Callable[[application_pb2.Application], None], field: str, message: str
) -> None:
    app = make_application()
    change(app)
    # The message becomes the field violation's description the caller sees.
    with pytest.raises(InvalidApplication, match=f"^{re.escape(field)}: {message}$") as caught:
        dialect.create_request("r", "r:x", app, START)
    assert (caught.value.field, caught.value.message) == (field, message)
    assert "Smirnov" not in str(caught.value)


def test_poll_requests_quote_the_insurer_id_into_one_path_segment() -> None:
    assert REST.poll_request("a/b c").path == "/api/v1/applications/a%2Fb%20c"
    assert CALC.poll_request("../x").path == "/osago/calc/..%2Fx"
    assert REST.poll_request("APP-1").method == "GET"


def test_polls_of_both_dialects_are_marked_safe_to_repeat() -> None:
    assert REST.poll_request("APP-1").idempotent and CALC.poll_request("C-1").idempotent


# --- rest answers ---------------------------------------------------------------------------


def test_rest_create_reads_the_application_id_and_hint() -> None:
    body = {"applicationId": "APP-1", "status": "PROCESSING", "estimatedReadyInMs": 1500}
    assert REST.parse_create(reply(201, body)) == Created("APP-1", 1.5)
    assert REST.parse_create(reply(200, body)) == Created("APP-1", 1.5)  # idempotent replay


def test_rest_create_without_hint_falls_back_to_retry_after() -> None:
    body = {"applicationId": "APP-1", "status": "PROCESSING"}
    assert REST.parse_create(reply(201, body, {"retry-after": "2"})) == Created("APP-1", 2.0)
    assert REST.parse_create(reply(201, body, {"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"})) == Created(
        "APP-1", None
    )


def test_rest_create_400_is_a_rejection_naming_only_the_field() -> None:
    assert REST.parse_create(reply(400, {"error": "bad VIN XTAGFL110NY612345", "field": "vehicle.vin"})) == Rejected(
        "vehicle.vin"
    )
    assert REST.parse_create(reply(400, b"<html>oops</html>")) == Rejected("")


def test_rest_poll_reads_processing_quoted_declined_and_404() -> None:
    assert REST.parse_poll(reply(200, {"status": "PROCESSING", "estimatedReadyInMs": 250})) == NotReady(0.25)
    assert REST.parse_poll(reply(200, {"status": "QUOTED", "offer": REST_OFFER})) == Offer(
        offer_id="ALFA-1",
        premium_kopecks=1234567,
        currency="RUB",
        breakdown=BREAKDOWN,
        valid_until=datetime(2026, 1, 20, 9, tzinfo=UTC),
        purchase_url="http://sim/insurers/alfa/pay/ALFA-1",
    )
    assert REST.parse_poll(reply(200, {"status": "DECLINED", "declineReason": "taxis are not insured"})) == Declined(
        "taxis are not insured"
    )
    assert REST.parse_poll(reply(404, {"error": "not found"})) == NotFound()


def test_premiums_are_converted_to_kopecks_exactly_never_through_float() -> None:
    # 1234567.89 * 100 in binary floating point is 123456788.99999999.
    offer = dict(REST_OFFER, premium={"amount": "1234567.89", "currency": "RUB"})
    parsed = REST.parse_poll(reply(200, {"status": "QUOTED", "offer": offer}))
    assert isinstance(parsed, Offer)
    assert parsed.premium_kopecks == 123456789
    # A JSON number is read as a decimal too.
    text = json.dumps({"status": "QUOTED", "offer": dict(REST_OFFER, premium={"amount": 0, "currency": "RUB"})})
    text = text.replace('"amount": 0', '"amount": 1234567.89')
    parsed = REST.parse_poll(HttpResponse(200, {}, text.encode()))
    assert isinstance(parsed, Offer) and parsed.premium_kopecks == 123456789


def _rest_offer(**changes: Any) -> dict[str, Any]:
    offer = json.loads(json.dumps(REST_OFFER))
    for key, value in changes.items():
        if value is None:
            offer.pop(key)
        else:
            offer[key] = value
    return {"status": "QUOTED", "offer": offer}


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (reply(200, b"{broken"), "body is not JSON"),
        (reply(200, b"<html><body>Bad Gateway</body></html>"), "body is not JSON"),
        (reply(200, b""), "body is not JSON"),
        (reply(200, b"\xff\xfe\x00"), "body is not JSON"),
        (reply(200, [1, 2]), "body is not a JSON object"),
        (reply(200, {"status": "WHATEVER"}), "unknown 'status'"),
        (reply(200, {"state": "done"}), "'status' is not a non-empty string"),
        (reply(200, {"status": "PROCESSING", "estimatedReadyInMs": "soon"}), "'estimatedReadyInMs' is not an integer"),
        (reply(200, {"status": "PROCESSING", "estimatedReadyInMs": -5}), "'estimatedReadyInMs' is negative"),
        (reply(200, {"status": "QUOTED"}), "'offer' is not an object"),
        (
            reply(200, _rest_offer(premium={"amount": "12345.678", "currency": "RUB"})),
            "'amount' has fractions of a kopeck",
        ),
        (reply(200, _rest_offer(premium={"amount": "-1.00", "currency": "RUB"})), "'amount' is not a positive number"),
        (reply(200, _rest_offer(premium={"amount": "abc", "currency": "RUB"})), "'amount' is not a decimal"),
        (reply(200, _rest_offer(premium={"amount": "12345.67", "currency": "USD"})), "'currency' is not RUB"),
        (reply(200, _rest_offer(premium={"amount": True, "currency": "RUB"})), "'amount' is not a decimal"),
        (reply(200, _rest_offer(validUntil="2026-01-20T09:00:00")), "'validUntil' has no time zone"),
        (reply(200, _rest_offer(validUntil="tomorrow")), "'validUntil' is not an ISO 8601 date-time"),
        (reply(200, _rest_offer(validUntil="9999-12-31T23:00:00-05:00")), "'validUntil' is out of range"),
        (reply(200, _rest_offer(offerId="")), "'offerId' is not a non-empty string"),
        (reply(200, _rest_offer(paymentUrl=None)), "'paymentUrl' is not a non-empty string"),
        (reply(200, _rest_offer(coefficients={"TB": "5000.00"})), "'KT' is not a decimal"),
        (
            reply(200, _rest_offer(coefficients=dict(REST_OFFER["coefficients"], KT="NaN"))),
            "'KT' is not a positive number",
        ),
        (reply(200, b'{"status": "QUOTED", "offer": {"premium": {"amount": NaN}}}'), "body is not JSON"),
        (reply(201, {"status": "PROCESSING", "estimatedReadyInMs": 10}), "unexpected HTTP status 201"),
        (reply(302, {"status": "PROCESSING"}), "unexpected HTTP status 302"),
        (reply(202, {"status": "PROCESSING"}), "unexpected HTTP status 202"),
    ],
)
def test_rest_off_schema_answers_raise_bad_response(response: HttpResponse, reason: str) -> None:
    with pytest.raises(BadResponse, match=re.escape(reason)):
        REST.parse_poll(response)


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (reply(201, b"not json"), "body is not JSON"),
        (reply(201, {"status": "PROCESSING"}), "'applicationId' is not a non-empty string"),
        (reply(201, {"applicationId": 17, "status": "PROCESSING"}), "'applicationId' is not a non-empty string"),
        (
            reply(201, {"applicationId": "x" * 201, "status": "PROCESSING"}),
            "'applicationId' is longer than 200 characters",
        ),
        (reply(201, {"applicationId": "APP-1", "status": "NEW"}), "unknown 'status'"),
        (reply(404, {"error": "not found"}), "unexpected HTTP status 404"),
        (reply(202, {"applicationId": "APP-1", "status": "PROCESSING"}), "unexpected HTTP status 202"),
    ],
)
def test_rest_off_schema_create_answers_raise_bad_response(response: HttpResponse, reason: str) -> None:
    with pytest.raises(BadResponse, match=re.escape(reason)):
        REST.parse_create(response)


def test_bad_response_messages_never_repeat_the_body() -> None:
    with pytest.raises(BadResponse) as caught:
        REST.parse_poll(reply(200, {"status": "Smirnov Artyom"}))
    assert "Smirnov" not in str(caught.value)
    with pytest.raises(BadResponse) as caught:
        REST.parse_poll(reply(200, b"<html>Smirnov</html>"))
    assert "Smirnov" not in str(caught.value)


def test_decline_reasons_are_bounded() -> None:
    parsed = REST.parse_poll(reply(200, {"status": "DECLINED", "declineReason": "x" * 10_000}))
    assert isinstance(parsed, Declined) and len(parsed.reason) == 500


# --- calc answers ---------------------------------------------------------------------------


def test_calc_create_reads_the_calc_id_and_prefers_the_exact_hint_to_retry_after() -> None:
    body = {"calc_id": "C-1", "state": "queued", "poll_after_ms": 20}
    assert CALC.parse_create(reply(202, body, {"retry-after": "1"})) == Created("C-1", 0.02)
    body = {"calc_id": "C-1", "state": "queued"}
    assert CALC.parse_create(reply(202, body, {"retry-after": "3"})) == Created("C-1", 3.0)
    assert CALC.parse_create(reply(202, body)) == Created("C-1", None)


def test_calc_create_422_is_a_rejection_naming_only_the_location() -> None:
    body: dict[str, Any] = {"errors": [{"loc": "insurant.dob", "msg": "14.13.1990 is not a date"}]}
    assert CALC.parse_create(reply(422, body)) == Rejected("insurant.dob")
    body = {"errors": [{"loc": ["body", "ts", "hp"], "msg": "too big"}]}
    assert CALC.parse_create(reply(422, body)) == Rejected("body.ts.hp")
    assert CALC.parse_create(reply(422, b"garbage")) == Rejected("")


def test_calc_poll_reads_pending_done_refused_and_404() -> None:
    pending = reply(202, {"state": "in_progress", "poll_after_ms": 700}, {"retry-after": "1"})
    assert CALC.parse_poll(pending) == NotReady(0.7)
    assert CALC.parse_poll(reply(202, {"state": "in_progress"}, {"retry-after": "2"})) == NotReady(2.0)
    assert CALC.parse_poll(reply(200, {"state": "done", "result": CALC_RESULT})) == Offer(
        offer_id="Q-77",
        premium_kopecks=1234567,
        currency="RUB",
        breakdown=BREAKDOWN,
        valid_until=datetime(2026, 1, 20, 9, tzinfo=UTC),
        purchase_url="http://sim/insurers/ingos/pay/Q-77",
    )
    refused = {"state": "refused", "refusal": {"code": "UW", "text": "declined by underwriting"}}
    assert CALC.parse_poll(reply(200, refused)) == Declined("declined by underwriting")
    assert CALC.parse_poll(reply(200, {"state": "refused", "refusal": {"code": "UW"}})) == Declined("UW")
    assert CALC.parse_poll(reply(404, {"error": "not found"})) == NotFound()


def test_calc_coefficients_may_be_json_numbers() -> None:
    k = dict(CALC_RESULT["k"])
    raw = json.dumps({"state": "done", "result": dict(CALC_RESULT, k=dict(k, kt=0))}).replace('"kt": 0', '"kt": 1.8')
    parsed = CALC.parse_poll(HttpResponse(200, {}, raw.encode()))
    assert isinstance(parsed, Offer) and parsed.breakdown.kt == Decimal("1.8")
    expires = datetime.fromisoformat("2026-01-20T12:00:00+03:00")
    assert expires - parsed.valid_until == timedelta(0)


def _calc_result(**changes: Any) -> dict[str, Any]:
    return {"state": "done", "result": dict(CALC_RESULT, **changes)}


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (reply(200, b"<html>500</html>"), "body is not JSON"),
        (reply(200, {"state": "in_progress"}), "'state' is not final with HTTP 200"),
        (reply(202, {"state": "done", "result": CALC_RESULT}), "'state' is not a pending one with HTTP 202"),
        (reply(200, {"state": "done"}), "'result' is not an object"),
        (reply(200, _calc_result(premium_kop="1234567")), "'premium_kop' is not an integer"),
        (reply(200, _calc_result(premium_kop=12345.67)), "'premium_kop' is not an integer"),
        (reply(200, _calc_result(premium_kop=0)), "'premium_kop' is not positive"),
        (reply(200, _calc_result(k=dict(CALC_RESULT["k"], tb_kop=True))), "'tb_kop' is not an integer"),
        (reply(200, _calc_result(k=dict(CALC_RESULT["k"], kbm="-1"))), "'kbm' is not a positive number"),
        (reply(200, _calc_result(expires="20.01.2026")), "'expires' is not an ISO 8601 date-time"),
        (reply(200, _calc_result(quote_no=None)), "'quote_no' is not a non-empty string"),
        (reply(200, {"state": "refused"}), "'refusal' is not an object"),
        (reply(200, {"state": "refused", "refusal": "no"}), "'refusal' is not an object"),
        (reply(200, {"state": "cancelled"}), "'state' is not final with HTTP 200"),
        (reply(201, {"state": "in_progress"}), "unexpected HTTP status 201"),
        (reply(202, {"state": "in_progress", "poll_after_ms": 1.5}), "'poll_after_ms' is not an integer"),
    ],
)
def test_calc_off_schema_answers_raise_bad_response(response: HttpResponse, reason: str) -> None:
    with pytest.raises(BadResponse, match=re.escape(reason)):
        CALC.parse_poll(response)


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (reply(202, {"state": "queued"}), "'calc_id' is not a non-empty string"),
        (reply(202, {"calc_id": "C-1", "state": "lost"}), "unknown 'state'"),
        (reply(202, {"calc_id": "C-1"}), "'state' is not a non-empty string"),
        (reply(400, {"error": "bad"}), "unexpected HTTP status 400"),
        (reply(202, b"[]"), "body is not a JSON object"),
    ],
)
def test_calc_off_schema_create_answers_raise_bad_response(response: HttpResponse, reason: str) -> None:
    with pytest.raises(BadResponse, match=re.escape(reason)):
        CALC.parse_create(response)
