"""Application fields as the insurers' APIs write them (codes, dates, defaults)."""

from __future__ import annotations

from datetime import date

from osago.v1 import application_pb2

from insurer_gateway.dialects.base import InvalidApplication

# The class a missing owner class stands for: a new driver's.
DEFAULT_KBM = "3"
CATEGORIES = ("B", "BE")


def kbm_code(value: application_pb2.KbmClass.ValueType, field: str, *, default: str | None = None) -> str:
    """KBM_CLASS_M → "M", KBM_CLASS_0 → "0" … KBM_CLASS_13 → "13"."""
    if value == application_pb2.KBM_CLASS_UNSPECIFIED:
        if default is None:
            raise InvalidApplication(field, "bonus-malus class is required")
        return default
    try:
        name: str = application_pb2.KbmClass.Name(value)
    except ValueError:
        raise InvalidApplication(field, "unknown bonus-malus class") from None
    return name.removeprefix("KBM_CLASS_")


def category_code(value: application_pb2.VehicleCategory.ValueType) -> str:
    try:
        code: str = application_pb2.VehicleCategory.Name(value).removeprefix("VEHICLE_CATEGORY_")
    except ValueError:
        code = ""
    if code not in CATEGORIES:
        raise InvalidApplication("vehicle.category", "only categories B and BE are insured")
    return code


def is_taxi(purpose: application_pb2.VehiclePurpose.ValueType) -> bool:
    if purpose == application_pb2.VEHICLE_PURPOSE_TAXI:
        return True
    if purpose in (application_pb2.VEHICLE_PURPOSE_UNSPECIFIED, application_pb2.VEHICLE_PURPOSE_PERSONAL):
        return False
    raise InvalidApplication("vehicle.purpose", "unknown purpose")


def iso_date(value: str, field: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidApplication(field, "not a YYYY-MM-DD date") from None


def usage_months(application: application_pb2.Application) -> int:
    months = int(application.usage_months)
    return 12 if months == 0 else months


def full_name(name: application_pb2.PersonName) -> str:
    """ "Last First Middle", without the parts that are empty."""
    parts = (name.last_name, name.first_name, name.middle_name)
    return " ".join(str(p).strip() for p in parts if str(p).strip())
