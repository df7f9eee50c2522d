"""The "calc" dialect: snake_case JSON, DD.MM.YYYY dates, sums in kopecks; a pending
calculation answers HTTP 202 with Retry-After."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any
from urllib.parse import quote

from osago.v1 import application_pb2

from insurer_gateway.dialects import mapping as m
from insurer_gateway.dialects import parsing as p
from insurer_gateway.dialects.base import (
    Created,
    CreateOutcome,
    Declined,
    NotFound,
    NotReady,
    Offer,
    PollOutcome,
    Rejected,
)
from insurer_gateway.exchange import BadResponse, HttpCall, HttpResponse, retry_after

PATH = "/osago/calc"
PENDING_STATES = ("queued", "in_progress")
KNOWN_STATES = (*PENDING_STATES, "done", "refused")


def _ru(value: str, field: str) -> str:
    return m.iso_date(value, field).strftime("%d.%m.%Y")


class CalcDialect:
    name = "calc"

    def create_request(
        self, ref: str, idempotency_key: str, application: application_pb2.Application, start_date: date
    ) -> HttpCall:
        vehicle, owner = application.vehicle, application.owner
        persons = [
            {
                "fio": m.full_name(d.name),
                "dob": _ru(d.birth_date, f"drivers[{i}].birth_date"),
                "vu": d.licence_number,
                "vu_date": _ru(d.licence_issue_date, f"drivers[{i}].licence_issue_date"),
                "kbm": m.kbm_code(d.kbm_class, f"drivers[{i}].kbm_class"),
            }
            for i, d in enumerate(application.drivers)
        ]
        body = {
            "ref": ref,
            "ts": {
                "vin": vehicle.vin,
                "body_no": vehicle.body_number,
                "reg_plate": vehicle.plate,
                "brand": vehicle.make,
                "model": vehicle.model,
                "made_year": vehicle.year,
                "hp": vehicle.power_hp,
                "cat": m.category_code(vehicle.category),
                "use": "TAXI" if m.is_taxi(vehicle.purpose) else "PERSONAL",
            },
            "insurant": {
                "fio": m.full_name(owner.name),
                "dob": _ru(owner.birth_date, "owner.birth_date"),
                "city": owner.registration_city,
            },
            "kbm_owner": m.kbm_code(owner.kbm_class, "owner.kbm_class", default=m.DEFAULT_KBM),
            "persons": persons,
            "multidrive": application.unlimited_drivers,
            "date_from": start_date.strftime("%d.%m.%Y"),
            "period_months": m.usage_months(application),
        }
        # The key makes a repeated create answer with the application already made: safe to retry.
        return HttpCall("POST", PATH, {"Idempotency-Key": idempotency_key}, body, idempotent=True)

    def parse_create(self, response: HttpResponse) -> CreateOutcome:
        if response.status == 422:
            return Rejected(_error_loc(response.body))
        if response.status not in (200, 201, 202):
            raise BadResponse(f"unexpected HTTP status {response.status}")
        obj = p.load_object(response.body)
        state = p.get_str(obj, "state")
        if state not in KNOWN_STATES:
            raise BadResponse("unknown 'state'")
        return Created(p.get_str(obj, "calc_id"), _hint(obj, response))

    def poll_request(self, application_id: str) -> HttpCall:
        return HttpCall("GET", f"{PATH}/{quote(application_id, safe='')}", idempotent=True)

    def parse_poll(self, response: HttpResponse) -> PollOutcome:
        if response.status == 404:
            return NotFound()
        if response.status not in (200, 202):
            raise BadResponse(f"unexpected HTTP status {response.status}")
        obj = p.load_object(response.body)
        state = p.get_str(obj, "state")
        if response.status == 202:
            if state not in PENDING_STATES:
                raise BadResponse("'state' is not a pending one with HTTP 202")
            return NotReady(_hint(obj, response))
        if state == "done":
            return _offer(p.get_obj(obj, "result"))
        if state == "refused":
            refusal = p.get_obj(obj, "refusal")
            return Declined(p.opt_str(refusal, "text") or p.opt_str(refusal, "code"))
        raise BadResponse("'state' is not final with HTTP 200")


def _hint(obj: Mapping[str, Any], response: HttpResponse) -> float | None:
    hint = p.ms_hint(obj, "poll_after_ms")
    return hint if hint is not None else retry_after(response.headers)


def _error_loc(body: bytes) -> str:
    """The location of the first error of a 422; a 422 without a readable body still means
    "rejected". The error's text is not kept: it may quote the personal data sent."""
    try:
        errors = p.load_object(body).get("errors")
    except BadResponse:
        return ""
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return ""
    loc = errors[0].get("loc")
    if isinstance(loc, list):
        return ".".join(str(part) for part in loc)[: p.MAX_ID_CHARS]
    return loc[: p.MAX_ID_CHARS] if isinstance(loc, str) else ""


def _offer(result: dict[str, Any]) -> Offer:
    k = p.get_obj(result, "k")
    breakdown = p.breakdown(k, p.positive_int(k, "tb_kop"))
    return Offer(
        offer_id=p.get_str(result, "quote_no"),
        premium_kopecks=p.positive_int(result, "premium_kop"),
        currency="RUB",
        breakdown=breakdown,
        valid_until=p.get_datetime(result, "expires"),
        purchase_url=p.get_str(result, "buy_url", limit=2000),
    )
