"""The "rest" dialect: camelCase JSON, ISO dates; a pending application answers 200 PROCESSING."""

from __future__ import annotations

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

PATH = "/api/v1/applications"
CREATED_STATES = ("PROCESSING", "QUOTED", "DECLINED")


class RestDialect:
    name = "rest"

    def create_request(
        self, ref: str, idempotency_key: str, application: application_pb2.Application, start_date: date
    ) -> HttpCall:
        vehicle, owner = application.vehicle, application.owner
        drivers = [
            {
                "lastName": d.name.last_name,
                "firstName": d.name.first_name,
                "middleName": d.name.middle_name,
                "birthDate": m.iso_date(d.birth_date, f"drivers[{i}].birth_date").isoformat(),
                "licenceNumber": d.licence_number,
                "licenceIssueDate": m.iso_date(d.licence_issue_date, f"drivers[{i}].licence_issue_date").isoformat(),
                "kbmClass": m.kbm_code(d.kbm_class, f"drivers[{i}].kbm_class"),
            }
            for i, d in enumerate(application.drivers)
        ]
        body = {
            "externalRef": ref,
            "vehicle": {
                "vin": vehicle.vin,
                "bodyNumber": vehicle.body_number,
                "plate": vehicle.plate,
                "make": vehicle.make,
                "model": vehicle.model,
                "year": vehicle.year,
                "powerHp": vehicle.power_hp,
                "category": m.category_code(vehicle.category),
                "purpose": "taxi" if m.is_taxi(vehicle.purpose) else "personal",
            },
            "owner": {
                "lastName": owner.name.last_name,
                "firstName": owner.name.first_name,
                "middleName": owner.name.middle_name,
                "birthDate": m.iso_date(owner.birth_date, "owner.birth_date").isoformat(),
                "city": owner.registration_city,
            },
            "ownerKbmClass": m.kbm_code(owner.kbm_class, "owner.kbm_class", default=m.DEFAULT_KBM),
            "drivers": drivers,
            "unlimitedDrivers": application.unlimited_drivers,
            "startDate": start_date.isoformat(),
            "usageMonths": m.usage_months(application),
        }
        # The key makes a repeated create answer with the application already made: safe to retry.
        return HttpCall("POST", PATH, {"Idempotency-Key": idempotency_key}, body, idempotent=True)

    def parse_create(self, response: HttpResponse) -> CreateOutcome:
        if response.status == 400:
            return Rejected(_error_field(response.body))
        if response.status not in (200, 201):
            raise BadResponse(f"unexpected HTTP status {response.status}")
        obj = p.load_object(response.body)
        status = p.get_str(obj, "status")
        if status not in CREATED_STATES:
            raise BadResponse("unknown 'status'")
        hint = p.ms_hint(obj, "estimatedReadyInMs")
        return Created(p.get_str(obj, "applicationId"), _hint(hint, response))

    def poll_request(self, application_id: str) -> HttpCall:
        return HttpCall("GET", f"{PATH}/{quote(application_id, safe='')}", idempotent=True)

    def parse_poll(self, response: HttpResponse) -> PollOutcome:
        if response.status == 404:
            return NotFound()
        if response.status != 200:
            raise BadResponse(f"unexpected HTTP status {response.status}")
        obj = p.load_object(response.body)
        status = p.get_str(obj, "status")
        if status == "PROCESSING":
            return NotReady(_hint(p.ms_hint(obj, "estimatedReadyInMs"), response))
        if status == "QUOTED":
            return _offer(p.get_obj(obj, "offer"))
        if status == "DECLINED":
            return Declined(p.opt_str(obj, "declineReason"))
        raise BadResponse("unknown 'status'")


def _hint(body_hint: float | None, response: HttpResponse) -> float | None:
    return body_hint if body_hint is not None else retry_after(response.headers)


def _error_field(body: bytes) -> str:
    """The field a 400 names; a 400 without a readable body still means "rejected"."""
    try:
        return p.opt_str(p.load_object(body), "field", limit=p.MAX_ID_CHARS)
    except BadResponse:
        return ""


def _offer(offer: dict[str, Any]) -> Offer:
    premium = p.get_obj(offer, "premium")
    currency = p.get_str(premium, "currency")
    if currency != "RUB":
        raise BadResponse("'currency' is not RUB")
    k = p.get_obj(offer, "coefficients")
    breakdown = p.breakdown(k, p.roubles_to_kopecks(p.get_decimal(k, "TB"), "TB"), upper_keys=True)
    return Offer(
        offer_id=p.get_str(offer, "offerId"),
        premium_kopecks=p.roubles_to_kopecks(p.get_decimal(premium, "amount"), "amount"),
        currency=currency,
        breakdown=breakdown,
        valid_until=p.get_datetime(offer, "validUntil"),
        purchase_url=p.get_str(offer, "paymentUrl", limit=2000),
    )
