"""Dialect "calc": snake_case JSON, dates DD.MM.YYYY; pending answers 202 with Retry-After.

POST {base}/osago/calc            -> 202 {calc_id, state: queued, poll_after_ms} + Retry-After
                                     (the same calc_id for a replayed Idempotency-Key;
                                     422 {errors: [{loc, msg}]} for bad input)
GET  {base}/osago/calc/{calc_id}  -> 202 {state: in_progress, poll_after_ms} + Retry-After;
                                     200 {state: done, result} | {state: refused, refusal}; 404
"""

from __future__ import annotations

import re
from datetime import date

from insurer_sim.dialects.base import (
    Dialect,
    Driver,
    JsonObject,
    Reply,
    decimal_text,
    hint_ms,
    retry_after,
    tariff_input,
)
from insurer_sim.dialects.fields import FieldError, Fields, parse_body
from insurer_sim.insurer import Offer, Pending, Proposal, SimInsurer
from osago_common.tariff import KBM_CLASSES

CATEGORIES = ("B", "BE")
USES = ("PERSONAL", "TAXI")
MIN_YEAR = 1900
MAX_POWER_HP = 2000
RU_DATE = "DD.MM.YYYY"
REFUSAL_CODE = "UW"

NOT_FOUND = Reply(404, {"error": "not found"})

_RU_DATE = re.compile(r"([0-9]{2})\.([0-9]{2})\.([0-9]{4})")


def parse_ru_date(text: str) -> date | None:
    """A strict "DD.MM.YYYY" date, or None."""
    match = _RU_DATE.fullmatch(text)
    if match is None:
        return None
    day, month, year = (int(g) for g in match.groups())
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _item(path: str, index: int) -> str:
    return f"{path}.{index}"


def _fio(fields: Fields, key: str) -> None:
    if len(fields.text(key).split()) < 2:
        raise FieldError(fields.at(key), "must hold the last and first names")


def parse(body: bytes) -> Proposal:
    """The proposal in a calculation request; FieldError names the first bad field."""
    root = parse_body(body, list_index=_item)
    reference = root.text("ref")
    ts = root.obj("ts")
    if not (ts.text("vin", optional=True) or ts.text("body_no", optional=True)):
        raise FieldError("ts.vin", "a VIN or a body number is required")
    ts.text("reg_plate", optional=True)
    ts.text("brand")
    ts.text("model")
    year = ts.integer("made_year", MIN_YEAR, 9999)
    power_hp = ts.integer("hp", 1, MAX_POWER_HP)
    ts.choice("cat", CATEGORIES)
    use = ts.choice("use", USES)
    insurant = root.obj("insurant")
    _fio(insurant, "fio")
    insurant.day("dob", parse_ru_date, RU_DATE)
    city = insurant.text("city")
    owner_kbm_class = root.choice("kbm_owner", KBM_CLASSES)
    persons = [_person(p) for p in root.objects("persons")]
    multidrive = root.flag("multidrive")
    if not multidrive and not persons:
        raise FieldError("persons", "at least one person is required unless multidrive")
    start = root.day("date_from", parse_ru_date, RU_DATE)
    if year > start.year + 1:
        raise FieldError("ts.made_year", "is in the future")
    months = root.integer("period_months", 3, 12)
    tariff = tariff_input(
        start_date=start,
        city=city,
        power_hp=power_hp,
        months=months,
        unlimited_drivers=multidrive,
        drivers=persons,
        owner_kbm_class=owner_kbm_class,
    )
    return Proposal(reference=reference, tariff=tariff, taxi=use == "TAXI")


def _person(fields: Fields) -> Driver:
    _fio(fields, "fio")
    born = fields.day("dob", parse_ru_date, RU_DATE)
    fields.text("vu")
    licensed = fields.day("vu_date", parse_ru_date, RU_DATE)
    return Driver(born, licensed, fields.choice("kbm", KBM_CLASSES))


def _pending(body: JsonObject, ms: int) -> Reply:
    return Reply(202, body, {"Retry-After": retry_after(ms)})


def create(insurer: SimInsurer, body: bytes, idempotency_key: str | None, base_url: str) -> Reply:
    try:
        proposal = parse(body)
    except FieldError as exc:
        return Reply(422, {"errors": [{"loc": exc.field or "body", "msg": exc.message}]})
    application, _ = insurer.create(proposal, idempotency_key)
    ms = hint_ms(insurer.hint_s(application))
    return _pending({"calc_id": application.application_id, "state": "queued", "poll_after_ms": ms}, ms)


def poll(insurer: SimInsurer, calc_id: str, base_url: str) -> Reply:
    seen = insurer.poll(calc_id)
    if seen is None:
        return NOT_FOUND
    if isinstance(seen, Pending):
        ms = hint_ms(seen.hint_s)
        return _pending({"state": "in_progress", "poll_after_ms": ms}, ms)
    if not isinstance(seen.outcome, Offer):
        return Reply(
            200,
            {
                "state": "refused",
                "refusal": {"code": REFUSAL_CODE, "text": seen.outcome.reason},
            },
        )
    offer = seen.outcome
    b = offer.breakdown
    return Reply(
        200,
        {
            "state": "done",
            "result": {
                "quote_no": offer.offer_id,
                "premium_kop": b.premium_kopecks,
                "k": {
                    "tb_kop": b.base_rate_kopecks,
                    "kt": decimal_text(b.kt),
                    "kbm": decimal_text(b.kbm),
                    "kvs": decimal_text(b.kvs),
                    "ko": decimal_text(b.ko),
                    "km": decimal_text(b.km),
                    "ks": decimal_text(b.ks),
                    "kn": decimal_text(b.kn),
                    "kp": decimal_text(b.kp),
                },
                "expires": seen.valid_until.isoformat(),
                "buy_url": f"{base_url}/pay/{offer.offer_id}",
            },
        },
    )


DIALECT = Dialect(
    name="calc",
    create_path="/osago/calc",
    poll_path="/osago/calc/{ref}",
    create=create,
    poll=poll,
    not_found=NOT_FOUND,
)
