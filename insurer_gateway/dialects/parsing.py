"""Strict readers for insurer JSON bodies: every miss raises BadResponse naming the field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from insurer_gateway.dialects.base import Breakdown
from insurer_gateway.exchange import BadResponse

# Identifiers and texts the insurer sends back are bounded, so a broken insurer cannot flood
# logs, events and the customer's page.
MAX_ID_CHARS = 200
MAX_TEXT_CHARS = 500


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


# One decoder for every body: json.loads with options builds a decoder per call.
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_no_constants)


def load_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; numbers with a fraction become Decimal, never float."""
    try:
        # As json.loads reads bytes: UTF-8, -16 or -32, told apart by the first bytes.
        value = _DECODER.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except (ValueError, RecursionError):
        raise BadResponse("body is not JSON") from None
    if not isinstance(value, dict):
        raise BadResponse("body is not a JSON object")
    return value


def get_obj(obj: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise BadResponse(f"{key!r} is not an object")
    return value


def get_str(obj: Mapping[str, Any], key: str, *, limit: int = MAX_ID_CHARS) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadResponse(f"{key!r} is not a non-empty string")
    if len(value) > limit:
        raise BadResponse(f"{key!r} is longer than {limit} characters")
    return value


def opt_str(obj: Mapping[str, Any], key: str, *, limit: int = MAX_TEXT_CHARS) -> str:
    """A string field that may be missing or empty; over-long text is cut, not refused."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadResponse(f"{key!r} is not a string")
    return value.strip()[:limit]


def get_int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadResponse(f"{key!r} is not an integer")
    return value


def get_decimal(obj: Mapping[str, Any], key: str) -> Decimal:
    """A positive decimal written as a string ("1.17") or a JSON number."""
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise BadResponse(f"{key!r} is not a decimal")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise BadResponse(f"{key!r} is not a decimal") from None
    if not number.is_finite() or number <= 0:
        raise BadResponse(f"{key!r} is not a positive number")
    return number


def get_datetime(obj: Mapping[str, Any], key: str) -> datetime:
    """An ISO 8601 moment with a time zone (a naive one is ambiguous, so refused)."""
    raw = get_str(obj, key)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise BadResponse(f"{key!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise BadResponse(f"{key!r} has no time zone")
    try:
        moment.astimezone(UTC)  # a moment within a day of years 1 or 9999 may be beyond them in UTC
    except OverflowError:
        raise BadResponse(f"{key!r} is out of range") from None
    return moment


def roubles_to_kopecks(amount: Decimal, key: str) -> int:
    """Exact conversion of a rouble amount with at most two decimals."""
    kopecks = amount * 100
    if kopecks != kopecks.to_integral_value():
        raise BadResponse(f"{key!r} has fractions of a kopeck")
    return int(kopecks)


def positive_int(obj: Mapping[str, Any], key: str) -> int:
    value = get_int(obj, key)
    if value <= 0:
        raise BadResponse(f"{key!r} is not positive")
    return value


def ms_hint(obj: Mapping[str, Any], key: str) -> float | None:
    """An optional "come back in N ms" hint, in seconds."""
    if obj.get(key) is None:
        return None
    value = get_int(obj, key)
    if value < 0:
        raise BadResponse(f"{key!r} is negative")
    return value / 1000.0


# The coefficients after ТБ, in the order of the formula.
COEFFICIENTS = ("kt", "kbm", "kvs", "ko", "km", "ks", "kn", "kp")


def breakdown(k: Mapping[str, Any], base_rate_kopecks: int, *, upper_keys: bool = False) -> Breakdown:
    """The coefficients object of an offer; its keys are the names of COEFFICIENTS, upper-cased
    where a dialect writes them so ("KT")."""
    values = {name: get_decimal(k, name.upper() if upper_keys else name) for name in COEFFICIENTS}
    return Breakdown(base_rate_kopecks=base_rate_kopecks, **values)
