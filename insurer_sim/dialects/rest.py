"""Dialect "rest": camelCase JSON; a poll answers 200 with status PROCESSING, QUOTED or DECLINED.

POST {base}/api/v1/applications       -> 201 {applicationId, status: PROCESSING, estimatedReadyInMs}
                                         (200, same applicationId: a replayed Idempotency-Key;
                                         400 {error, field}: bad input)
GET  {base}/api/v1/applications/{id}  -> 200 {applicationId, status: PROCESSING, estimatedReadyInMs}
                                         | {.., status: QUOTED, offer}
                                         | {.., status: DECLINED, declineReason}; 404
"""

from __future__ import annotations

from insurer_sim.dialects.base import (
    Dialect,
    Driver,
    Reply,
    decimal_text,
    hint_ms,
    roubles_text,
    tariff_input,
)
from insurer_sim.dialects.fields import FieldError, Fields, parse_body
from insurer_sim.insurer import Offer, Pending, Proposal, SimInsurer
from osago_common.tariff import KBM_CLASSES, parse_date

CATEGORIES = ("B", "BE")
PURPOSES = ("personal", "taxi")
MIN_YEAR = 1900
MAX_POWER_HP = 2000
ISO_DATE = "YYYY-MM-DD"

NOT_FOUND = Reply(404, {"error": "not found"})


def _item(path: str, index: int) -> str:
    return f"{path}[{index}]"


def parse(body: bytes) -> Proposal:
    """The proposal in a create request; FieldError names the first bad field."""
    root = parse_body(body, list_index=_item)
    reference = root.text("externalRef")
    vehicle = root.obj("vehicle")
    if not (vehicle.text("vin", optional=True) or vehicle.text("bodyNumber", optional=True)):
        raise FieldError("vehicle.vin", "a VIN or a body number is required")
    vehicle.text("plate", optional=True)
    vehicle.text("make")
    vehicle.text("model")
    year = vehicle.integer("year", MIN_YEAR, 9999)
    power_hp = vehicle.integer("powerHp", 1, MAX_POWER_HP)
    vehicle.choice("category", CATEGORIES)
    purpose = vehicle.choice("purpose", PURPOSES)
    owner = root.obj("owner")
    owner.text("lastName")
    owner.text("firstName")
    owner.text("middleName", optional=True)
    owner.day("birthDate", parse_date, ISO_DATE)
    city = owner.text("city")
    owner_kbm_class = root.choice("ownerKbmClass", KBM_CLASSES)
    drivers = [_driver(d) for d in root.objects("drivers")]
    unlimited = root.flag("unlimitedDrivers")
    if not unlimited and not drivers:
        raise FieldError("drivers", "at least one driver is required unless unlimitedDrivers")
    start = root.day("startDate", parse_date, ISO_DATE)
    if year > start.year + 1:
        raise FieldError("vehicle.year", "is in the future")
    months = root.integer("usageMonths", 3, 12)
    tariff = tariff_input(
        start_date=start,
        city=city,
        power_hp=power_hp,
        months=months,
        unlimited_drivers=unlimited,
        drivers=drivers,
        owner_kbm_class=owner_kbm_class,
    )
    return Proposal(reference=reference, tariff=tariff, taxi=purpose == "taxi")


def _driver(fields: Fields) -> Driver:
    fields.text("lastName")
    fields.text("firstName")
    fields.text("middleName", optional=True)
    born = fields.day("birthDate", parse_date, ISO_DATE)
    fields.text("licenceNumber")
    licensed = fields.day("licenceIssueDate", parse_date, ISO_DATE)
    return Driver(born, licensed, fields.choice("kbmClass", KBM_CLASSES))


def create(insurer: SimInsurer, body: bytes, idempotency_key: str | None, base_url: str) -> Reply:
    try:
        proposal = parse(body)
    except FieldError as exc:
        return Reply(400, {"error": str(exc), "field": exc.field or None})
    application, new = insurer.create(proposal, idempotency_key)
    return Reply(
        201 if new else 200,
        {
            "applicationId": application.application_id,
            "status": "PROCESSING",
            "estimatedReadyInMs": hint_ms(insurer.hint_s(application)),
        },
    )


def poll(insurer: SimInsurer, application_id: str, base_url: str) -> Reply:
    seen = insurer.poll(application_id)
    if seen is None:
        return NOT_FOUND
    if isinstance(seen, Pending):
        return Reply(
            200,
            {
                "applicationId": application_id,
                "status": "PROCESSING",
                "estimatedReadyInMs": hint_ms(seen.hint_s),
            },
        )
    if not isinstance(seen.outcome, Offer):
        return Reply(
            200,
            {
                "applicationId": application_id,
                "status": "DECLINED",
                "declineReason": seen.outcome.reason,
            },
        )
    offer = seen.outcome
    b = offer.breakdown
    return Reply(
        200,
        {
            "applicationId": application_id,
            "status": "QUOTED",
            "offer": {
                "offerId": offer.offer_id,
                "premium": {"amount": roubles_text(b.premium_kopecks), "currency": "RUB"},
                "coefficients": {
                    "TB": roubles_text(b.base_rate_kopecks),
                    "KT": decimal_text(b.kt),
                    "KBM": decimal_text(b.kbm),
                    "KVS": decimal_text(b.kvs),
                    "KO": decimal_text(b.ko),
                    "KM": decimal_text(b.km),
                    "KS": decimal_text(b.ks),
                    "KN": decimal_text(b.kn),
                    "KP": decimal_text(b.kp),
                },
                "validUntil": seen.valid_until.isoformat(),
                "paymentUrl": f"{base_url}/pay/{offer.offer_id}",
            },
        },
    )


DIALECT = Dialect(
    name="rest",
    create_path="/api/v1/applications",
    poll_path="/api/v1/applications/{ref}",
    create=create,
    poll=poll,
    not_found=NOT_FOUND,
)
