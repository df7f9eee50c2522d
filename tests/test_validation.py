"""Application checks: each rule, its field path, and descriptions that never echo personal data."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from osago.v1 import application_pb2

from osago_common.validation import (
    FieldViolation,
    normalise_plate,
    normalise_vin,
    validate_application,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE_NAMES = ("moscow-young-driver.json", "spb-unlimited.json", "kazan-two-drivers.json")
TODAY = date(2026, 6, 1)  # so an empty policy_start_date means 2026-06-02


def load_example(name: str) -> application_pb2.Application:
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    return json_format.Parse(text, application_pb2.Application())


def moscow() -> application_pb2.Application:
    """One driver (also the owner) born 2007-03-14, first licence 2025-04-02; a 2022 Lada Vesta."""
    return load_example("moscow-young-driver.json")


def kazan() -> application_pb2.Application:
    return load_example("kazan-two-drivers.json")


def fields(app: application_pb2.Application, today: date = TODAY) -> set[str]:
    return {v.field for v in validate_application(app, today)}


# --- the examples --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
@pytest.mark.parametrize("today", [date(2026, 1, 1), date(2027, 7, 14), date(2028, 2, 29), date(2030, 12, 31)])
def test_examples_are_valid_on_any_day_from_2026_to_2030(name: str, today: date) -> None:
    assert validate_application(load_example(name), today) == []


# --- one rule at a time --------------------------------------------------------------------------

Mutation = Callable[[application_pb2.Application], None]


def _set(path: str, value: object) -> Callable[[Message], None]:
    """A mutation setting a dotted attribute path, e.g. "vehicle.registration_document.series",
    of an application or of a part of it (a driver)."""
    *parents, leaf = path.split(".")

    def mutate(app: Message) -> None:
        target = app
        for name in parents:
            target = getattr(target, name)
        setattr(target, leaf, value)

    return mutate


def _all(*mutations: Mutation) -> Mutation:
    def mutate(app: application_pb2.Application) -> None:
        for m in mutations:
            m(app)

    return mutate


def _driver(field: str, value: object, index: int = 0) -> Mutation:
    def mutate(app: application_pb2.Application) -> None:
        _set(field, value)(app.drivers[index])

    return mutate


def _no_drivers(app: application_pb2.Application) -> None:
    del app.drivers[:]


def _unlimited_with_drivers(app: application_pb2.Application) -> None:
    app.unlimited_drivers = True


def _six_drivers(app: application_pb2.Application) -> None:
    for i in range(5):
        extra = app.drivers.add()
        extra.CopyFrom(app.drivers[0])
        extra.licence_number = f"77314568{i}9"


def _duplicate_licence(app: application_pb2.Application) -> None:
    extra = app.drivers.add()
    extra.CopyFrom(app.drivers[0])
    extra.licence_number = " 7731 456802 "  # the same number, spaced differently


def _epts_with_series(app: application_pb2.Application) -> None:
    doc = app.vehicle.registration_document
    doc.type = application_pb2.REGISTRATION_DOCUMENT_TYPE_EPTS
    doc.series, doc.number = "9952", "164301012345678"


def _epts_short_number(app: application_pb2.Application) -> None:
    doc = app.vehicle.registration_document
    doc.type = application_pb2.REGISTRATION_DOCUMENT_TYPE_EPTS
    doc.series, doc.number = "", "384715"


# (what is wrong, how to break the Moscow example, the field path after "application.")
REJECTIONS: list[tuple[str, Mutation, str]] = [
    ("short VIN", _set("vehicle.vin", "XTAGFL110NY61234"), "vehicle.vin"),
    ("VIN with O", _set("vehicle.vin", "XTAGFL110NY61234O"), "vehicle.vin"),
    ("VIN with a Cyrillic letter like no Latin one", _set("vehicle.vin", "ЖТАGFL110NY612345"), "vehicle.vin"),
    ("neither VIN nor body number", _set("vehicle.vin", ""), "vehicle.vin"),
    ("short body number", _all(_set("vehicle.vin", ""), _set("vehicle.body_number", "A1")), "vehicle.body_number"),
    ("missing plate", _set("vehicle.plate", ""), "vehicle.plate"),
    ("plate without region", _set("vehicle.plate", "М482КХ"), "vehicle.plate"),
    ("plate with a letter not on plates", _set("vehicle.plate", "Ф482КХ797"), "vehicle.plate"),
    ("missing make", _set("vehicle.make", "  "), "vehicle.make"),
    ("too long model", _set("vehicle.model", "V" * 65), "vehicle.model"),
    ("missing year", _set("vehicle.year", 0), "vehicle.year"),
    ("year before 1900", _set("vehicle.year", 1899), "vehicle.year"),
    ("year in the future", _set("vehicle.year", 2027), "vehicle.year"),
    ("missing power", _set("vehicle.power_hp", 0), "vehicle.power_hp"),
    ("negative power", _set("vehicle.power_hp", -90), "vehicle.power_hp"),
    ("absurd power", _set("vehicle.power_hp", 1501), "vehicle.power_hp"),
    ("missing category", _set("vehicle.category", 0), "vehicle.category"),
    ("lorry", _set("vehicle.category", application_pb2.VEHICLE_CATEGORY_C), "vehicle.category"),
    ("unknown purpose", _set("vehicle.purpose", 9), "vehicle.purpose"),
    ("missing document type", _set("vehicle.registration_document.type", 0), "vehicle.registration_document.type"),
    ("short STS series", _set("vehicle.registration_document.series", "99"), "vehicle.registration_document.series"),
    ("short STS number", _set("vehicle.registration_document.number", "38471"), "vehicle.registration_document.number"),
    ("EPTS with a series", _epts_with_series, "vehicle.registration_document.series"),
    ("EPTS with 6 digits", _epts_short_number, "vehicle.registration_document.number"),
    (
        "missing document date",
        _set("vehicle.registration_document.issue_date", ""),
        "vehicle.registration_document.issue_date",
    ),
    (
        "document date not ISO",
        _set("vehicle.registration_document.issue_date", "20.05.2025"),
        "vehicle.registration_document.issue_date",
    ),
    (
        "document date in the future",
        _set("vehicle.registration_document.issue_date", "2026-06-02"),
        "vehicle.registration_document.issue_date",
    ),
    (
        "document older than the car",
        _set("vehicle.registration_document.issue_date", "2021-12-31"),
        "vehicle.registration_document.issue_date",
    ),
    ("missing owner last name", _set("owner.name.last_name", ""), "owner.name.last_name"),
    ("missing owner first name", _set("owner.name.first_name", ""), "owner.name.first_name"),
    ("digits in a name", _set("owner.name.first_name", "Арт3м"), "owner.name.first_name"),
    ("too long middle name", _set("owner.name.middle_name", "И" * 65), "owner.name.middle_name"),
    ("missing owner birth date", _set("owner.birth_date", ""), "owner.birth_date"),
    ("owner birth date not ISO", _set("owner.birth_date", "2007-3-14"), "owner.birth_date"),
    ("owner birth date impossible", _set("owner.birth_date", "2007-02-30"), "owner.birth_date"),
    ("owner born before 1900", _set("owner.birth_date", "1899-12-31"), "owner.birth_date"),
    ("owner 17 on the start date", _set("owner.birth_date", "2008-06-03"), "owner.birth_date"),
    ("unknown city", _set("owner.registration_city", "Atlantis"), "owner.registration_city"),
    ("missing city", _set("owner.registration_city", ""), "owner.registration_city"),
    ("unknown owner class", _set("owner.kbm_class", 99), "owner.kbm_class"),
    ("no named drivers", _no_drivers, "drivers"),
    ("unlimited with named drivers", _unlimited_with_drivers, "drivers"),
    ("six named drivers", _six_drivers, "drivers"),
    ("missing driver name", _driver("name.last_name", ""), "drivers[0].name.last_name"),
    ("missing driver birth date", _driver("birth_date", ""), "drivers[0].birth_date"),
    ("missing licence", _driver("licence_number", ""), "drivers[0].licence_number"),
    ("short licence", _driver("licence_number", "773145680"), "drivers[0].licence_number"),
    ("licence with letters in the wrong place", _driver("licence_number", "7731АВ4568"), "drivers[0].licence_number"),
    ("duplicate licence", _duplicate_licence, "drivers[1].licence_number"),
    ("missing licence date", _driver("licence_issue_date", ""), "drivers[0].licence_issue_date"),
    ("licence date in the future", _driver("licence_issue_date", "2026-06-02"), "drivers[0].licence_issue_date"),
    ("licence before the 16th birthday", _driver("licence_issue_date", "2023-03-13"), "drivers[0].licence_issue_date"),
    ("named driver without class", _driver("kbm_class", 0), "drivers[0].kbm_class"),
    ("unknown driver class", _driver("kbm_class", 42), "drivers[0].kbm_class"),
    ("start date in the past", _set("policy_start_date", "2026-05-31"), "policy_start_date"),
    ("start date 61 days ahead", _set("policy_start_date", "2026-08-01"), "policy_start_date"),
    ("start date impossible", _set("policy_start_date", "2026-06-31"), "policy_start_date"),
    ("start date compact", _set("policy_start_date", "20260602"), "policy_start_date"),
    ("start date with time", _set("policy_start_date", "2026-06-02T00:00:00"), "policy_start_date"),
    ("2 months", _set("usage_months", 2), "usage_months"),
    ("13 months", _set("usage_months", 13), "usage_months"),
    ("negative months", _set("usage_months", -1), "usage_months"),
]


@pytest.mark.parametrize(("mutate", "field"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS])
def test_each_rule_rejects_with_its_field_path(mutate: Mutation, field: str) -> None:
    app = moscow()
    mutate(app)
    assert fields(app) == {f"application.{field}"}


def test_driver_under_16_is_rejected_with_the_licence_that_predates_the_16th_birthday() -> None:
    app = moscow()
    app.drivers[0].birth_date = "2010-06-03"  # 15 on 2026-06-02
    assert fields(app) == {
        "application.drivers[0].birth_date",
        "application.drivers[0].licence_issue_date",
    }


def test_second_drivers_violation_names_index_1() -> None:
    app = kazan()
    app.drivers[1].licence_issue_date = "2099-01-01"
    assert fields(app) == {"application.drivers[1].licence_issue_date"}


def test_lorry_description_says_only_b_and_be_are_quoted() -> None:
    app = moscow()
    app.vehicle.category = application_pb2.VEHICLE_CATEGORY_D
    assert validate_application(app, TODAY) == [
        FieldViolation("application.vehicle.category", "only categories B and BE are quoted")
    ]


def test_unknown_city_description_lists_the_supported_cities() -> None:
    app = moscow()
    app.owner.registration_city = "Atlantis"
    [violation] = validate_application(app, TODAY)
    assert "Moscow" in violation.description and "Sevastopol" in violation.description


ACCEPTED: list[tuple[str, Mutation]] = [
    ("VIN in lower case with spaces", _set("vehicle.vin", "  xtagfl110ny612345 ")),
    ("body number instead of VIN", _all(_set("vehicle.vin", ""), _set("vehicle.body_number", "GFL110-1234567"))),
    ("plate with Latin look-alikes and spaces", _set("vehicle.plate", "m 482 kx 797")),
    ("two-digit region", _set("vehicle.plate", "М482КХ77")),
    ("category BE", _set("vehicle.category", application_pb2.VEHICLE_CATEGORY_BE)),
    ("taxi", _set("vehicle.purpose", application_pb2.VEHICLE_PURPOSE_TAXI)),
    (
        "PTS with a lettered series",
        _all(
            _set("vehicle.registration_document.type", application_pb2.REGISTRATION_DOCUMENT_TYPE_PTS),
            _set("vehicle.registration_document.series", "77 ТН"),
        ),
    ),
    ("STS series with Latin look-alikes", _set("vehicle.registration_document.series", "77XT")),
    ("hyphenated name", _set("owner.name.last_name", "Римский-Корсаков")),
    ("Latin name with apostrophe", _set("owner.name.last_name", "O'Brien")),
    ("no middle name", _set("owner.name.middle_name", "")),
    ("English city spelling", _set("owner.registration_city", "moscow")),
    ("owner class unspecified", _set("owner.kbm_class", 0)),
    ("old licence format with Latin look-alikes", _driver("licence_number", "77ab123456")),
    ("old licence format in Cyrillic", _driver("licence_number", "77 АВ 123456")),
    ("licence on the 16th birthday", _driver("licence_issue_date", "2023-03-14")),
    ("start date today", _set("policy_start_date", "2026-06-01")),
    ("start date 60 days ahead", _set("policy_start_date", "2026-07-31")),
    ("months 0 means 12", _set("usage_months", 0)),
    ("3 months", _set("usage_months", 3)),
]


@pytest.mark.parametrize("mutate", [a[1] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_accepted_variants(mutate: Mutation) -> None:
    app = moscow()
    mutate(app)
    assert validate_application(app, TODAY) == []


def test_age_is_judged_on_the_policy_start_date_not_today() -> None:
    app = moscow()
    app.owner.birth_date = "2008-06-20"  # 17 today, 18 on 20 June
    assert "application.owner.birth_date" in fields(app)
    app.policy_start_date = "2026-06-20"
    assert "application.owner.birth_date" not in fields(app)


# --- all at once ---------------------------------------------------------------------------------


def test_all_violations_are_reported_together() -> None:
    app = kazan()
    app.vehicle.vin = "NOT-A-VIN"
    app.vehicle.plate = "123"
    app.owner.registration_city = "Atlantis"
    app.drivers[1].licence_number = "12"
    app.policy_start_date = "tomorrow"
    app.usage_months = 1
    assert fields(app) == {
        "application.vehicle.vin",
        "application.vehicle.plate",
        "application.owner.registration_city",
        "application.drivers[1].licence_number",
        "application.policy_start_date",
        "application.usage_months",
    }


def test_an_empty_application_gets_violations_not_an_exception() -> None:
    got = fields(application_pb2.Application())
    assert {
        "application.vehicle.vin",
        "application.vehicle.plate",
        "application.vehicle.category",
        "application.vehicle.registration_document.type",
        "application.owner.name.last_name",
        "application.owner.birth_date",
        "application.owner.registration_city",
        "application.drivers",
    } <= got


def test_descriptions_never_echo_personal_data() -> None:
    secrets = {
        "vin": "XTAQWE123QQQ99999",
        "licence": "99ЖЖ123456",
        "last_name": "Петров1",
        "first_name": "Agent007",
        "body": "##SECRET##",
    }
    app = kazan()
    app.vehicle.vin = secrets["vin"]
    app.vehicle.body_number = secrets["body"]
    app.owner.name.last_name = secrets["last_name"]
    app.drivers[0].name.first_name = secrets["first_name"]
    app.drivers[0].licence_number = secrets["licence"]
    app.drivers[1].licence_number = secrets["licence"]
    violations = validate_application(app, TODAY)
    assert {v.field for v in violations} >= {
        "application.vehicle.vin",
        "application.vehicle.body_number",
        "application.owner.name.last_name",
        "application.drivers[0].name.first_name",
        "application.drivers[1].licence_number",
    }
    for violation in violations:
        for secret in secrets.values():
            assert secret.casefold() not in violation.description.casefold()


# --- normalisation -------------------------------------------------------------------------------


def test_normalise_plate_maps_latin_look_alikes_to_cyrillic() -> None:
    assert normalise_plate(" a 123 bc 777 ") == "А123ВС777"
    assert normalise_plate("ABEKMHOPCTYX") == "АВЕКМНОРСТУХ"


def test_normalise_vin_strips_and_upper_cases() -> None:
    assert normalise_vin("  xta210990y2765439\n") == "XTA210990Y2765439"


def test_real_russian_vin_failing_the_check_digit_is_accepted() -> None:
    app = moscow()
    app.vehicle.vin = "XTA210990Y2765439"
    assert validate_application(app, TODAY) == []
