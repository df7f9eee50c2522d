"""What every dialect module provides, and the pieces they share."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from insurer_sim.insurer import SimInsurer
from osago_common.tariff import DriverFactors, TariffInput, full_years

JsonObject = dict[str, object]


@dataclass(frozen=True)
class Reply:
    """An HTTP response: status, JSON body, extra headers."""

    status: int
    body: JsonObject
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Dialect:
    """One insurer API dialect: its two paths (below the insurer's base URL) and their handlers."""

    name: str
    create_path: str
    poll_path: str  # holds "{ref}", the id the create returned
    # (insurer, request body, Idempotency-Key header, insurer base URL) -> reply
    create: Callable[[SimInsurer, bytes, str | None, str], Reply]
    # (insurer, id from the path, insurer base URL) -> reply
    poll: Callable[[SimInsurer, str, str], Reply]
    not_found: Reply
    # The insurer POSTs each outcome to the URL given at creation (insurer_sim.webhooks); its
    # poll path is then a status endpoint for partners whose callback went missing.
    callbacks: bool = False


@dataclass(frozen=True)
class Driver:
    born: date
    licensed: date
    kbm_class: str


def tariff_input(
    *,
    start_date: date,
    city: str,
    power_hp: int,
    months: int,
    unlimited_drivers: bool,
    drivers: Sequence[Driver],
    owner_kbm_class: str,
) -> TariffInput:
    """The tariff's view of an application; ages and experience in full years on the start date.

    With unlimited drivers the named ones (if any were sent) do not enter the price.
    """
    factors = (
        ()
        if unlimited_drivers
        else tuple(
            DriverFactors(
                age=full_years(d.born, start_date),
                experience_years=full_years(d.licensed, start_date),
                kbm_class=d.kbm_class,
            )
            for d in drivers
        )
    )
    return TariffInput(
        start_date=start_date,
        city=city,
        power_hp=power_hp,
        months=months,
        unlimited_drivers=unlimited_drivers,
        drivers=factors,
        owner_kbm_class=owner_kbm_class,
    )


def hint_ms(seconds: float) -> int:
    """A hint in whole milliseconds, never below 10."""
    return max(10, math.ceil(seconds * 1000))


def retry_after(ms: int) -> str:
    """A Retry-After header value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(ms / 1000)))


def decimal_text(value: Decimal) -> str:
    """A coefficient as plain decimal text ("1.8", never "1.8E+0")."""
    return format(value, "f")


def roubles_text(kopecks: int) -> str:
    """Kopecks as roubles with two decimals: 1234567 -> "12345.67"."""
    sign = "-" if kopecks < 0 else ""
    whole, cents = divmod(abs(kopecks), 100)
    return f"{sign}{whole}.{cents:02d}"
