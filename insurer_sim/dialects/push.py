"""Dialect "push": snake_case JSON in nested blocks, errors as JSON pointers, sums in minor units,
the coefficients as a list; the outcome is POSTed to the partner's webhook, signed.

POST {base}/v3/quotations       -> 202 {quotation_id, status: pending}
     (Idempotency-Key header)      (200, same quotation_id: a replayed key; the first webhook stays)
                                   (422 {error: {code: invalid_field, pointer: "/car/vin", detail}})
GET  {base}/v3/quotations/{id}  -> 200 {quotation_id, status: pending}
                                   | {.., status: completed, quotation}
                                   | {.., status: rejected, rejection: {reason}}; 404
POST {webhook_url}              <- {event: quotation.completed, delivery_id, quotation_id, partner_ref,
                                   quotation} | {event: quotation.rejected, .., rejection: {reason}}
                                   with X-Webhook-Timestamp (Unix seconds) and X-Webhook-Signature
                                   "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body)

The status endpoint is there for a partner whose callback went missing; it sees (and issues) the
outcome as a poll of the other dialects does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping

from insurer_sim.dialects.base import Dialect, Driver, JsonObject, Reply, decimal_text, tariff_input
from insurer_sim.dialects.fields import FieldError, Fields, parse_body
from insurer_sim.insurer import Hook, Offer, Pending, Proposal, Ready, SimInsurer
from osago_common.tariff import KBM_CLASSES, parse_date

CATEGORIES = ("B", "BE")
USAGES = ("personal", "taxi")
MIN_YEAR = 1900
MAX_POWER_HP = 2000
MAX_URL_CHARS = 2000
ISO_DATE = "YYYY-MM-DD"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Webhook-Signature"

NOT_FOUND = Reply(404, {"error": {"code": "not_found", "detail": "no such quotation"}})


def _item(path: str, index: int) -> str:
    return f"{path}.{index}"


def pointer(field: str) -> str:
    """A field's dotted path as a JSON pointer: "drivers.list.0.kbm" -> "/drivers/list/0/kbm"."""
    return "/" + field.replace(".", "/") if field else ""


def parse(body: bytes) -> tuple[Proposal, str]:
    """The proposal and the webhook URL in a create request; FieldError names the first bad field."""
    root = parse_body(body, list_index=_item)
    reference = root.text("partner_ref")
    webhook_url = root.text("webhook_url")
    if not webhook_url.startswith(("http://", "https://")) or len(webhook_url) > MAX_URL_CHARS:
        raise FieldError("webhook_url", f"must be an http(s) URL of at most {MAX_URL_CHARS} characters")
    car = root.obj("car")
    if not (car.text("vin", optional=True) or car.text("body_number", optional=True)):
        raise FieldError("car.vin", "a VIN or a body number is required")
    car.text("reg_number", optional=True)
    car.text("brand")
    car.text("model")
    year = car.integer("production_year", MIN_YEAR, 9999)
    power_hp = car.integer("engine_power_hp", 1, MAX_POWER_HP)
    car.choice("category", CATEGORIES)
    usage = car.choice("usage", USAGES)
    holder = root.obj("policyholder")
    _person_name(holder)
    holder.day("birth_date", parse_date, ISO_DATE)
    city = holder.text("registration_city")
    owner_kbm_class = holder.choice("kbm", KBM_CLASSES)
    drivers = root.obj("drivers")
    unlimited = drivers.flag("unlimited")
    named = [_driver(d) for d in drivers.objects("list")]
    if not unlimited and not named:
        raise FieldError("drivers.list", "at least one driver is required unless unlimited")
    period = root.obj("period")
    start = period.day("starts_on", parse_date, ISO_DATE)
    if year > start.year + 1:
        raise FieldError("car.production_year", "is in the future")
    months = period.integer("months", 3, 12)
    tariff = tariff_input(
        start_date=start,
        city=city,
        power_hp=power_hp,
        months=months,
        unlimited_drivers=unlimited,
        drivers=named,
        owner_kbm_class=owner_kbm_class,
    )
    return Proposal(reference=reference, tariff=tariff, taxi=usage == "taxi"), webhook_url


def _person_name(fields: Fields) -> None:
    fields.text("surname")
    fields.text("name")
    fields.text("patronymic", optional=True)


def _driver(fields: Fields) -> Driver:
    _person_name(fields)
    born = fields.day("birth_date", parse_date, ISO_DATE)
    licence = fields.obj("licence")
    licence.text("number")
    licensed = licence.day("issued_on", parse_date, ISO_DATE)
    return Driver(born, licensed, fields.choice("kbm", KBM_CLASSES))


def create(insurer: SimInsurer, body: bytes, idempotency_key: str | None, base_url: str) -> Reply:
    try:
        proposal, webhook_url = parse(body)
    except FieldError as exc:
        error = {"code": "invalid_field", "pointer": pointer(exc.field), "detail": exc.message}
        return Reply(422, {"error": error})
    hook = Hook(webhook_url, _callback_body(base_url), sign)
    application, new = insurer.create(proposal, idempotency_key, hook)
    return Reply(202 if new else 200, {"quotation_id": application.application_id, "status": "pending"})


def poll(insurer: SimInsurer, quotation_id: str, base_url: str) -> Reply:
    seen = insurer.poll(quotation_id)
    if seen is None:
        return NOT_FOUND
    if isinstance(seen, Pending):
        return Reply(200, {"quotation_id": quotation_id, "status": "pending"})
    return Reply(200, {"quotation_id": quotation_id, **_result(seen, base_url)})


def _result(ready: Ready, base_url: str) -> JsonObject:
    """The outcome as both the status endpoint and the callback write it."""
    if not isinstance(ready.outcome, Offer):
        return {"status": "rejected", "rejection": {"reason": ready.outcome.reason}}
    offer = ready.outcome
    b = offer.breakdown
    factors = [("KT", b.kt), ("KBM", b.kbm), ("KVS", b.kvs), ("KO", b.ko), ("KM", b.km), ("KS", b.ks)]
    factors += [("KN", b.kn), ("KP", b.kp)]
    return {
        "status": "completed",
        "quotation": {
            "number": offer.offer_id,
            "premium": {"amount_minor": b.premium_kopecks, "currency": "RUB"},
            "base_rate": {"amount_minor": b.base_rate_kopecks, "currency": "RUB"},
            "factors": [{"code": code, "value": decimal_text(value)} for code, value in factors],
            "valid_till": ready.valid_until.isoformat(),
            "checkout_url": f"{base_url}/pay/{offer.offer_id}",
        },
    }


def _callback_body(base_url: str) -> Callable[[Ready, str], bytes]:
    def body(ready: Ready, delivery_id: str) -> bytes:
        result = _result(ready, base_url)
        event = "quotation.completed" if result["status"] == "completed" else "quotation.rejected"
        del result["status"]
        payload: JsonObject = {
            "event": event,
            "delivery_id": delivery_id,
            "quotation_id": ready.application.application_id,
            "partner_ref": ready.application.reference,
            **result,
        }
        return json.dumps(payload, ensure_ascii=False).encode()

    return body


def sign(body: bytes, secret: bytes, timestamp: int) -> Mapping[str, str]:
    """The headers signing `body` at `timestamp` (Unix seconds) with `secret`."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: f"sha256={digest}",
    }


DIALECT = Dialect(
    name="push",
    create_path="/v3/quotations",
    poll_path="/v3/quotations/{ref}",
    create=create,
    poll=poll,
    not_found=NOT_FOUND,
    callbacks=True,
)
