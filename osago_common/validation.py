"""Checks on an OSAGO application: every violation at once, each with its field path.

Paths are relative to the RPC request and use proto field names, e.g.
`application.drivers[0].birth_date`. Descriptions state the rule and never echo what was
submitted: names, VINs and licence numbers are personal data and must not travel back in error
messages or into logs.

Every text is judged in Unicode NFKC (full-width digits are digits, composed letters one
character) with its surrounding spaces trimmed; control and format characters (line breaks,
zero-width and direction marks) are refused anywhere, as is any text longer than `MAX_ANY_TEXT`.
Latin look-alike letters in plates, document series and old licences are read as the Cyrillic
ones they stand for, Cyrillic look-alikes in a VIN as Latin; a name mixing the two scripts in one
word is refused (a look-alike spoof).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, timedelta

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from osago.v1 import application_pb2

from osago_common import dates, tariff
from osago_common.tariff import MIN_DRIVER_AGE, full_years

MAX_DRIVERS = 5
MAX_START_DAYS_AHEAD = 60
MAX_POWER_HP = 1500
MIN_VEHICLE_YEAR = 1900
MIN_BIRTH_DATE = date(1900, 1, 1)
MIN_OWNER_AGE = 18
MAX_TEXT = 64
# No text field of an application is longer than this, whatever its own rule.
MAX_ANY_TEXT = 128

_LOOKALIKES = str.maketrans("ABEKMHOPCTYX", "АВЕКМНОРСТУХ")
_LATIN_LOOKALIKES = str.maketrans("АВЕКМНОРСТУХ", "ABEKMHOPCTYX")
# Control (Cc), format (Cf: zero-width, direction marks), private-use and surrogate characters.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs"})
_LATIN_WORD = re.compile(r"[A-Za-z]")
_CYRILLIC_WORD = re.compile(r"[А-Яа-яЁё]")
_VIN = re.compile(r"[A-HJ-NPR-Z0-9]{17}")
_BODY_NUMBER = re.compile(r"[A-Z0-9А-ЯЁ-]{3,30}")
_PLATE = re.compile(r"[АВЕКМНОРСТУХ][0-9]{3}[АВЕКМНОРСТУХ]{2}[0-9]{2,3}")
_NAME = re.compile(r"[A-Za-zА-Яа-яЁё]+(?:[ '’-]+[A-Za-zА-Яа-яЁё]+)*")
_NAME_SEPARATORS = re.compile(r"[ '’-]+")
_LICENCE = re.compile(r"[0-9]{10}|[0-9]{2}[А-ЯЁA-Z]{2}[0-9]{6}")
_DOC_SERIES = re.compile(r"[0-9]{2}(?:[0-9]{2}|[А-ЯЁA-Z]{2})")
_DOC_NUMBER = re.compile(r"[0-9]{6}")
_EPTS_NUMBER = re.compile(r"[0-9]{15}")

_STS_PTS = (
    application_pb2.REGISTRATION_DOCUMENT_TYPE_STS,
    application_pb2.REGISTRATION_DOCUMENT_TYPE_PTS,
)
_QUOTED_CATEGORIES = (application_pb2.VEHICLE_CATEGORY_B, application_pb2.VEHICLE_CATEGORY_BE)
_PURPOSES = (
    application_pb2.VEHICLE_PURPOSE_UNSPECIFIED,
    application_pb2.VEHICLE_PURPOSE_PERSONAL,
    application_pb2.VEHICLE_PURPOSE_TAXI,
)

_REQUIRED = "is required"
_BAD_DATE = "must be a calendar date written as YYYY-MM-DD"
_BAD_CLASS = "must be one of the classes M, 0..13"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


def normalise_plate(plate: str) -> str:
    """Upper case, no spaces, Latin look-alike letters mapped to Cyrillic."""
    return "".join(plate.split()).upper().translate(_LOOKALIKES)


def normalise_vin(vin: str) -> str:
    """Upper case, Cyrillic look-alike letters read as the Latin ones a VIN is made of."""
    return vin.strip().upper().translate(_LATIN_LOOKALIKES)


# What a field holds, as the two walks below see it: a string, a message, repeated messages, or
# anything else. Kept per field descriptor: asking the descriptor three questions per field cost
# more than the walk's own work (every session is validated).
_TEXT, _MESSAGE, _MESSAGES, _OTHER = range(4)
_KINDS: dict[FieldDescriptor, int] = {}


def _kind(descriptor: FieldDescriptor) -> int:
    kind = _KINDS.get(descriptor)
    if kind is None:
        if descriptor.type == FieldDescriptor.TYPE_STRING and not descriptor.is_repeated:
            kind = _TEXT
        elif descriptor.message_type is not None:
            kind = _MESSAGES if descriptor.is_repeated else _MESSAGE
        else:
            kind = _OTHER
        _KINDS[descriptor] = kind
    return kind


def normalise_text(message: Message) -> None:
    """Every string of `message` (nested messages included) in NFKC, trimmed, in place."""
    for descriptor, value in message.ListFields():
        kind = _kind(descriptor)
        if kind == _TEXT:
            normal = unicodedata.normalize("NFKC", value).strip()
            if normal != value:
                setattr(message, descriptor.name, normal)
        elif kind == _MESSAGE:
            normalise_text(value)
        elif kind == _MESSAGES:
            for child in value:
                normalise_text(child)


def _text_violations(message: Message, path: str, out: list[FieldViolation]) -> None:
    """Texts too long, or with control or format characters, anywhere in `message`."""
    for descriptor, value in message.ListFields():
        kind = _kind(descriptor)
        if kind == _OTHER:
            continue
        here = f"{path}.{descriptor.name}"
        if kind == _TEXT:
            if len(value) > MAX_ANY_TEXT:
                out.append(FieldViolation(here, f"must be at most {MAX_ANY_TEXT} characters"))
            # str.isprintable() is false for every refused category (and for separators but
            # the ASCII space): a printable text, nearly every one, needs no look at each character.
            elif not value.isprintable() and any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in value):
                out.append(FieldViolation(here, "must not contain control or invisible formatting characters"))
        elif kind == _MESSAGES:
            for i, child in enumerate(value[: MAX_DRIVERS + 1]):
                _text_violations(child, f"{here}[{i}]", out)
        else:
            _text_violations(value, here, out)


def _normalise_licence(number: str) -> str:
    """Old licence series use the same Cyrillic look-alike letters as plates."""
    return normalise_plate(number)


def validate_application(app: application_pb2.Application, today: date) -> list[FieldViolation]:
    """All the violations in `app`, judged on `today`; an empty list means valid. Texts are
    judged normalised (see the module docstring); a text refused as such gets no other
    violation."""
    refused: list[FieldViolation] = []
    _text_violations(app, "application", refused)
    normal = application_pb2.Application()
    normal.CopyFrom(app)
    normalise_text(normal)
    check = _Checker(today)
    start = _policy(check, normal)
    year = _vehicle(check, normal.vehicle)
    _document(check, normal.vehicle.registration_document, year)
    _owner(check, normal.owner, start)
    _drivers(check, normal, start)
    bad = {v.field for v in refused}
    return refused + [v for v in check.violations if v.field not in bad]


@dataclass
class _Checker:
    today: date
    violations: list[FieldViolation] = field(default_factory=list)

    def add(self, path: str, description: str) -> None:
        self.violations.append(FieldViolation(f"application.{path}", description))

    def text(self, path: str, value: str, *, required: bool = True) -> str | None:
        value = value.strip()
        if not value:
            if required:
                self.add(path, _REQUIRED)
            return None
        if len(value) > MAX_TEXT:
            self.add(path, f"must be at most {MAX_TEXT} characters")
            return None
        return value

    def past_date(self, path: str, value: str, *, earliest: date | None = None) -> date | None:
        """A required date, not in the future (nor before `earliest`)."""
        parsed = tariff.parse_date(value)
        if not value:
            self.add(path, _REQUIRED)
        elif parsed is None:
            self.add(path, _BAD_DATE)
        elif parsed > self.today:
            self.add(path, "must not be in the future")
        elif earliest is not None and parsed < earliest:
            self.add(path, f"must not be before {earliest.isoformat()}")
        else:
            return parsed
        return None

    def name(self, path: str, name: application_pb2.PersonName) -> None:
        for part, required in (("last_name", True), ("first_name", True), ("middle_name", False)):
            value = self.text(f"{path}.{part}", getattr(name, part), required=required)
            if value is not None and not _NAME.fullmatch(value):
                self.add(
                    f"{path}.{part}",
                    "must be letters (Cyrillic or Latin), spaces, hyphens or apostrophes",
                )
            elif value is not None and any(_mixed_scripts(word) for word in _NAME_SEPARATORS.split(value)):
                self.add(f"{path}.{part}", "must not mix Cyrillic and Latin letters in one word")

    def kbm_class(self, path: str, value: int, *, required: bool) -> None:
        if value == application_pb2.KBM_CLASS_UNSPECIFIED:
            if required:
                self.add(path, "is required for a named driver (3 for a new driver)")
        elif tariff.kbm_class_name(value) is None:
            self.add(path, _BAD_CLASS)


def _mixed_scripts(word: str) -> bool:
    return bool(_LATIN_WORD.search(word)) and bool(_CYRILLIC_WORD.search(word))


def _policy(check: _Checker, app: application_pb2.Application) -> date | None:
    """The start date when valid (tomorrow when empty), else None."""
    if app.usage_months != 0 and not 3 <= app.usage_months <= 12:
        check.add("usage_months", "must be 3..12 months, or 0 for 12")
    if not app.policy_start_date:
        return dates.default_policy_start(check.today)
    start = tariff.parse_date(app.policy_start_date)
    if start is None:
        check.add("policy_start_date", f"{_BAD_DATE}, or empty for tomorrow")
    elif start < check.today:
        check.add("policy_start_date", "must not be in the past")
    elif start > check.today + timedelta(days=MAX_START_DAYS_AHEAD):
        check.add("policy_start_date", f"must be at most {MAX_START_DAYS_AHEAD} days ahead")
    else:
        return start
    return None


def _vehicle(check: _Checker, vehicle: application_pb2.Vehicle) -> int | None:
    """Checks the vehicle; returns its year of manufacture when valid."""
    vin, body = normalise_vin(vehicle.vin), vehicle.body_number.strip().upper()
    if not vin and not body:
        check.add("vehicle.vin", "either vin or body_number is required")
    if vin and not _VIN.fullmatch(vin):
        check.add("vehicle.vin", "must be 17 characters: digits and Latin letters except I, O, Q")
    if body and not _BODY_NUMBER.fullmatch(body):
        check.add("vehicle.body_number", "must be 3 to 30 letters, digits or hyphens")
    plate = normalise_plate(vehicle.plate)
    if not plate:
        check.add("vehicle.plate", _REQUIRED)
    elif not _PLATE.fullmatch(plate):
        check.add(
            "vehicle.plate",
            "must be a letter, 3 digits, 2 letters and a 2–3 digit region code (like А123ВС77);"
            " letters only from А В Е К М Н О Р С Т У Х",
        )
    check.text("vehicle.make", vehicle.make)
    check.text("vehicle.model", vehicle.model)
    if vehicle.power_hp == 0:
        check.add("vehicle.power_hp", _REQUIRED)
    elif not 1 <= vehicle.power_hp <= MAX_POWER_HP:
        check.add("vehicle.power_hp", f"must be between 1 and {MAX_POWER_HP} hp")
    if vehicle.category == application_pb2.VEHICLE_CATEGORY_UNSPECIFIED:
        check.add("vehicle.category", _REQUIRED)
    elif vehicle.category not in _QUOTED_CATEGORIES:
        check.add("vehicle.category", "only categories B and BE are quoted")
    if vehicle.purpose not in _PURPOSES:
        check.add("vehicle.purpose", "must be personal or taxi")
    if vehicle.year == 0:
        check.add("vehicle.year", _REQUIRED)
    elif not MIN_VEHICLE_YEAR <= vehicle.year <= check.today.year:
        check.add("vehicle.year", f"must be between {MIN_VEHICLE_YEAR} and the current year")
    else:
        return int(vehicle.year)
    return None


def _document(check: _Checker, doc: application_pb2.RegistrationDocument, year: int | None) -> None:
    path = "vehicle.registration_document"
    series = "".join(doc.series.split()).upper().translate(_LOOKALIKES)
    number = "".join(doc.number.split())
    if doc.type == application_pb2.REGISTRATION_DOCUMENT_TYPE_EPTS:
        if series:
            check.add(f"{path}.series", "must be empty for an EPTS")
        if not _EPTS_NUMBER.fullmatch(number):
            check.add(f"{path}.number", "must be 15 digits for an EPTS")
    elif doc.type in _STS_PTS:
        if not _DOC_SERIES.fullmatch(series):
            check.add(f"{path}.series", "must be 2 digits followed by 2 digits or 2 letters")
        if not _DOC_NUMBER.fullmatch(number):
            check.add(f"{path}.number", "must be 6 digits")
    elif doc.type == application_pb2.REGISTRATION_DOCUMENT_TYPE_UNSPECIFIED:
        check.add(f"{path}.type", _REQUIRED)
    else:
        check.add(f"{path}.type", "must be STS, PTS or EPTS")
    issued = check.past_date(f"{path}.issue_date", doc.issue_date)
    if issued is not None and year is not None and issued.year < year:
        check.add(f"{path}.issue_date", "must not be before the vehicle's year of manufacture")


def _owner(check: _Checker, owner: application_pb2.Owner, start: date | None) -> None:
    check.name("owner.name", owner.name)
    born = check.past_date("owner.birth_date", owner.birth_date, earliest=MIN_BIRTH_DATE)
    if born is not None and start is not None and full_years(born, start) < MIN_OWNER_AGE:
        check.add("owner.birth_date", f"the owner must be at least {MIN_OWNER_AGE} on the start date")
    if not owner.registration_city.strip():
        check.add("owner.registration_city", _REQUIRED)
    elif not _is_known_city(owner.registration_city):
        check.add(
            "owner.registration_city",
            "must be one of the supported cities: " + ", ".join(tariff.known_cities()),
        )
    check.kbm_class("owner.kbm_class", owner.kbm_class, required=False)


def _is_known_city(city: str) -> bool:
    try:
        tariff.territory_coefficient(city)
    except tariff.TariffError:
        return False
    return True


def _drivers(check: _Checker, app: application_pb2.Application, start: date | None) -> None:
    if app.unlimited_drivers:
        if app.drivers:
            check.add("drivers", "must be empty when unlimited_drivers is set")
    elif not app.drivers:
        check.add("drivers", "at least one named driver is required, or unlimited_drivers")
    elif len(app.drivers) > MAX_DRIVERS:
        check.add("drivers", f"at most {MAX_DRIVERS} named drivers")
    first_with: dict[str, int] = {}
    # Beyond the most allowed, drivers are not examined one by one: the answer stays short.
    for i, driver in enumerate(app.drivers[: MAX_DRIVERS + 1]):
        _driver(check, f"drivers[{i}]", driver, start)
        licence = _normalise_licence(driver.licence_number)
        if licence in first_with:
            check.add(
                f"drivers[{i}].licence_number",
                f"duplicates the licence number of drivers[{first_with[licence]}]",
            )
        elif licence:
            first_with[licence] = i


def _driver(check: _Checker, path: str, driver: application_pb2.Driver, start: date | None) -> None:
    check.name(f"{path}.name", driver.name)
    born = check.past_date(f"{path}.birth_date", driver.birth_date, earliest=MIN_BIRTH_DATE)
    age = None if born is None or start is None else full_years(born, start)
    if age is not None and age < MIN_DRIVER_AGE:
        check.add(f"{path}.birth_date", f"the driver must be at least {MIN_DRIVER_AGE} on the start date")
    licence = _normalise_licence(driver.licence_number)
    if not licence:
        check.add(f"{path}.licence_number", _REQUIRED)
    elif not _LICENCE.fullmatch(licence):
        check.add(f"{path}.licence_number", "must be 10 digits, or 2 digits, 2 letters and 6 digits")
    issued = check.past_date(f"{path}.licence_issue_date", driver.licence_issue_date)
    check.kbm_class(f"{path}.kbm_class", driver.kbm_class, required=True)
    if issued is None or born is None:
        return
    if full_years(born, issued) < MIN_DRIVER_AGE:
        check.add(
            f"{path}.licence_issue_date",
            f"must not be before the driver's {MIN_DRIVER_AGE}th birthday",
        )
    elif start is not None and age is not None and not _fits_kvs(age, full_years(issued, start), start):
        check.add(f"{path}.licence_issue_date", "driving experience does not fit the driver's age")


def _fits_kvs(age: int, experience: int, start: date) -> bool:
    """Experience ≤ age − 16, and the КВС table has the cell (the first implies the second)."""
    if experience > age - MIN_DRIVER_AGE:
        return False
    try:
        tariff.kvs(age, experience, start)
    except tariff.TariffError:
        return False
    return True
