"""The "push" dialect: snake_case JSON in nested blocks, ISO dates, sums in minor units, the
coefficients as a list of codes; the create carries a `webhook_url`, and the insurer POSTs the
outcome there, signed (X-Webhook-Timestamp, X-Webhook-Signature). Its status endpoint answers
the safety-net poll: 200 with status pending, completed or rejected."""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import quote

from osago.v1 import application_pb2

from insurer_gateway.dialects import mapping as m
from insurer_gateway.dialects import parsing as p
from insurer_gateway.dialects.base import (
    Breakdown,
    Created,
    CreateOutcome,
    Declined,
    NotFound,
    NotReady,
    Offer,
    PollOutcome,
    Pushed,
    Rejected,
)
from insurer_gateway.exchange import BadResponse, HttpCall, HttpResponse

PATH = "/v3/quotations"
EVENTS = {"quotation.completed": "completed", "quotation.rejected": "rejected"}
FACTORS = ("KT", "KBM", "KVS", "KO", "KM", "KS", "KN", "KP")


class PushDialect:
    name = "push"
    timestamp_header = "X-Webhook-Timestamp"
    signature_header = "X-Webhook-Signature"

    def __init__(self, callback_url: str = "") -> None:
        self.callback_url = callback_url

    def with_callback_url(self, url: str) -> PushDialect:
        return PushDialect(url)

    def create_request(
        self, ref: str, idempotency_key: str, application: application_pb2.Application, start_date: date
    ) -> HttpCall:
        if not self.callback_url:
            raise RuntimeError("the push dialect needs the callback URL (with_callback_url) before creating")
        vehicle, owner = application.vehicle, application.owner
        drivers = [
            {
                "surname": d.name.last_name,
                "name": d.name.first_name,
                "patronymic": d.name.middle_name,
                "birth_date": m.iso_date(d.birth_date, f"drivers[{i}].birth_date").isoformat(),
                "licence": {
                    "number": d.licence_number,
                    "issued_on": m.iso_date(d.licence_issue_date, f"drivers[{i}].licence_issue_date").isoformat(),
                },
                "kbm": m.kbm_code(d.kbm_class, f"drivers[{i}].kbm_class"),
            }
            for i, d in enumerate(application.drivers)
        ]
        body = {
            "partner_ref": ref,
            "webhook_url": self.callback_url,
            "car": {
                "vin": vehicle.vin,
                "body_number": vehicle.body_number,
                "reg_number": vehicle.plate,
                "brand": vehicle.make,
                "model": vehicle.model,
                "production_year": vehicle.year,
                "engine_power_hp": vehicle.power_hp,
                "category": m.category_code(vehicle.category),
                "usage": "taxi" if m.is_taxi(vehicle.purpose) else "personal",
            },
            "policyholder": {
                "surname": owner.name.last_name,
                "name": owner.name.first_name,
                "patronymic": owner.name.middle_name,
                "birth_date": m.iso_date(owner.birth_date, "owner.birth_date").isoformat(),
                "registration_city": owner.registration_city,
                "kbm": m.kbm_code(owner.kbm_class, "owner.kbm_class", default=m.DEFAULT_KBM),
            },
            "drivers": {"unlimited": application.unlimited_drivers, "list": drivers},
            "period": {"starts_on": start_date.isoformat(), "months": m.usage_months(application)},
        }
        # The key makes a repeated create answer with the application already made: safe to retry.
        return HttpCall("POST", PATH, {"Idempotency-Key": idempotency_key}, body, idempotent=True)

    def parse_create(self, response: HttpResponse) -> CreateOutcome:
        if response.status == 422:
            return Rejected(_pointer(response.body))
        if response.status not in (200, 202):
            raise BadResponse(f"unexpected HTTP status {response.status}")
        obj = p.load_object(response.body)
        if p.get_str(obj, "status") not in ("pending", "completed", "rejected"):
            raise BadResponse("unknown 'status'")
        # No hint: the insurer calls back; the safety-net poll is paced by the learned times.
        return Created(p.get_str(obj, "quotation_id"), None)

    def poll_request(self, application_id: str) -> HttpCall:
        return HttpCall("GET", f"{PATH}/{quote(application_id, safe='')}", idempotent=True)

    def parse_poll(self, response: HttpResponse) -> PollOutcome:
        if response.status == 404:
            return NotFound()
        if response.status != 200:
            raise BadResponse(f"unexpected HTTP status {response.status}")
        obj = p.load_object(response.body)
        status = p.get_str(obj, "status")
        if status == "pending":
            return NotReady(None)
        if status in ("completed", "rejected"):
            return _outcome(obj, status)
        raise BadResponse("unknown 'status'")

    def read_callback(self, body: bytes) -> Pushed:
        obj = p.load_object(body)
        status = EVENTS.get(p.get_str(obj, "event"))
        if status is None:
            raise BadResponse("unknown 'event'")
        return Pushed(p.get_str(obj, "quotation_id"), _outcome(obj, status))


def _outcome(obj: dict[str, Any], status: str) -> Offer | Declined:
    if status == "rejected":
        return Declined(p.opt_str(p.get_obj(obj, "rejection"), "reason"))
    quotation = p.get_obj(obj, "quotation")
    premium = _money(quotation, "premium")
    factors = quotation.get("factors")
    if not isinstance(factors, list) or not all(isinstance(f, dict) for f in factors):
        raise BadResponse("'factors' is not a list of objects")
    by_code = {p.get_str(f, "code"): f.get("value") for f in factors}
    missing = [code for code in FACTORS if code not in by_code]
    if missing:
        raise BadResponse(f"'factors' lacks {', '.join(missing)}")
    values = {code.lower(): p.get_decimal(by_code, code) for code in FACTORS}
    return Offer(
        offer_id=p.get_str(quotation, "number"),
        premium_kopecks=premium,
        currency="RUB",
        breakdown=Breakdown(base_rate_kopecks=_money(quotation, "base_rate"), **values),
        valid_until=p.get_datetime(quotation, "valid_till"),
        purchase_url=p.get_str(quotation, "checkout_url", limit=2000),
    )


def _money(obj: dict[str, Any], key: str) -> int:
    """A sum in minor units (kopecks) of roubles."""
    money = p.get_obj(obj, key)
    if p.get_str(money, "currency") != "RUB":
        raise BadResponse(f"'{key}' is not in RUB")
    return p.positive_int(money, "amount_minor")


def _pointer(body: bytes) -> str:
    """The JSON pointer a 422 names, as a field path ("/car/vin" -> "car.vin"); a 422 without a
    readable body still means "rejected". The error's detail is not kept: it may quote the data."""
    try:
        error = p.get_obj(p.load_object(body), "error")
    except BadResponse:
        return ""
    pointer = p.opt_str(error, "pointer", limit=p.MAX_ID_CHARS) if isinstance(error.get("pointer"), str) else ""
    return pointer.lstrip("/").replace("/", ".")
