"""The Bank of Russia OSAGO formula: premium = ТБ × КТ × КБМ × КВС × КО × КМ × КС × КН × КП.

Every table is data in an `Edition`, picked by the policy start date, so a new directive of the
Bank of Russia is a new `Edition` rather than new code. Coefficients are `Decimal`, money is int
kopecks, and the premium is rounded half-up to whole kopecks.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, localcontext
from types import MappingProxyType

from osago.v1 import application_pb2

KBM_CLASSES: tuple[str, ...] = ("M", *(str(n) for n in range(14)))  # "M", "0".."13"
MIN_DRIVER_AGE = 16

_ONE = Decimal("1.0")
_UNLIMITED_KO = Decimal("2.32")  # private owner
_KN = _KP = _ONE  # no gross violations on record; a one-year policy
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class TariffError(ValueError):
    """The inputs fall outside the tariff: unknown territory, impossible age/experience cell, ..."""


@dataclass(frozen=True)
class DriverFactors:
    age: int  # full years on the policy start date
    experience_years: int  # full years since the first licence, on the policy start date
    kbm_class: str  # "M", "0".."13"


@dataclass(frozen=True)
class TariffInput:
    start_date: date
    city: str  # owner's registration city (any known spelling, see territory_coefficient)
    power_hp: int
    months: int  # months of use, 3..12
    unlimited_drivers: bool
    drivers: tuple[DriverFactors, ...]  # empty when unlimited_drivers
    owner_kbm_class: str  # used for КБМ when unlimited_drivers ("3" when unknown)


@dataclass(frozen=True)
class Breakdown:
    base_rate_kopecks: int
    kt: Decimal
    kbm: Decimal
    kvs: Decimal
    ko: Decimal
    km: Decimal
    ks: Decimal
    kn: Decimal
    kp: Decimal
    premium_kopecks: int  # the product, rounded half-up to whole kopecks


def _grid(text: str) -> tuple[tuple[int, ...], tuple[tuple[int, tuple[Decimal | None, ...]], ...]]:
    """A table written as in the directive: a header of column starts, then rows that begin with
    the row start; "-" is an empty cell."""
    header, *lines = (line.split() for line in text.strip().splitlines())
    rows = tuple(
        (int(first), tuple(None if cell == "-" else Decimal(cell) for cell in cells)) for first, *cells in lines
    )
    if any(len(cells) != len(header) for _, cells in rows):
        raise ValueError("ragged tariff table")
    return tuple(int(h) for h in header), rows


# КВС: rows by age (from), columns by years of experience (from). The last row is "older than 59".
_KVS_EXPERIENCE_FROM, _KVS_ROWS = _grid("""
       0     1     2     3     5     7    10    15
16  2.27  1.92  1.84  1.65  1.62     -     -     -
22  1.88  1.72  1.71  1.13  1.10  1.09     -     -
25  1.72  1.60  1.54  1.09  1.08  1.07  1.02     -
30  1.56  1.50  1.48  1.05  1.04  1.01  0.97  0.95
35  1.54  1.47  1.46  1.00  0.97  0.95  0.94  0.93
40  1.50  1.44  1.43  0.96  0.95  0.94  0.93  0.91
50  1.46  1.40  1.39  0.93  0.92  0.91  0.90  0.86
60  1.43  1.36  1.35  0.91  0.90  0.89  0.88  0.83
""")

_KBM = dict(
    zip(
        KBM_CLASSES,
        map(
            Decimal,
            """
3.92  2.94  2.25  1.76  1.17  1.00  0.91  0.83  0.78  0.74  0.68  0.63  0.57  0.52  0.46
""".split(),
        ),
        strict=True,
    )
)

# КМ: (inclusive upper bound in hp, coefficient); None = no bound.
_KM = ((50, "0.6"), (70, "1.0"), (100, "1.1"), (120, "1.2"), (150, "1.4"), (None, "1.6"))

# КС: months of use 3..9; 10 and more is 1.0.
_KS = dict(zip(range(3, 10), map(Decimal, "0.5 0.6 0.65 0.7 0.8 0.9 0.95".split()), strict=True))

# КТ: canonical English name, coefficient, other spellings (in _normalise_city's form).
_TERRITORIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Moscow", "1.8", ("москва", "moskva")),
    ("St Petersburg", "1.64", ("saint petersburg", "санкт петербург", "sankt peterburg", "петербург", "спб", "spb")),
    ("Kazan", "1.8", ("казань",)),
    ("Tyumen", "1.8", ("тюмень", "tiumen")),
    ("Surgut", "1.8", ("сургут",)),
    ("Chelyabinsk", "1.88", ("челябинск", "cheliabinsk")),
    ("Ufa", "1.64", ("уфа",)),
    ("Yaroslavl", "1.4", ("ярославль", "jaroslavl")),
    ("Makhachkala", "0.96", ("махачкала", "mahachkala")),
    ("Sevastopol", "0.76", ("севастополь",)),
)


@dataclass(frozen=True)
class Edition:
    """The tables in force from `effective_from` until the next edition."""

    effective_from: date
    base_rate_rub: tuple[int, int]  # ТБ corridor, category B, private owner
    kt: Mapping[str, Decimal]  # by canonical city
    kbm: Mapping[str, Decimal]  # by class
    km: tuple[tuple[int | None, Decimal], ...]  # (inclusive upper bound in hp, КМ)
    ks: Mapping[int, Decimal]  # months 3..9; 10+ is 1.0
    kvs_experience_from: tuple[int, ...]
    kvs_rows: tuple[tuple[int, tuple[Decimal | None, ...]], ...]  # (lowest age, cells)

    def territory(self, city: str) -> Decimal:
        canonical = _canonical_city(city)
        if canonical is None or canonical not in self.kt:
            raise TariffError("unknown territory")
        return self.kt[canonical]

    def power(self, power_hp: int) -> Decimal:
        if power_hp < 1:
            raise TariffError("engine power must be positive")
        return next(k for bound, k in self.km if bound is None or power_hp <= bound)

    def season(self, months: int) -> Decimal:
        if not 3 <= months <= 12:
            raise TariffError("months of use must be 3..12")
        return self.ks.get(months, _ONE)

    def bonus_malus(self, kbm_class: str) -> Decimal:
        if kbm_class not in self.kbm:
            raise TariffError("unknown bonus-malus class")
        return self.kbm[kbm_class]

    def age_experience(self, age: int, experience_years: int) -> Decimal:
        if age < MIN_DRIVER_AGE or experience_years < 0:
            raise TariffError("no КВС for this age and experience")
        row = next(cells for lowest, cells in reversed(self.kvs_rows) if age >= lowest)
        column = sum(1 for lowest in self.kvs_experience_from if experience_years >= lowest) - 1
        value = row[column]
        if value is None:
            raise TariffError("driving experience too long for the driver's age")
        return value


_SEP_2022 = Edition(
    # The corridor widened to 1 646–7 535 on 10 Sep 2022 (15 КБМ classes since 1 Apr 2022).
    effective_from=date(2022, 9, 10),
    base_rate_rub=(1646, 7535),
    kt=MappingProxyType({name: Decimal(k) for name, k, _ in _TERRITORIES}),
    kbm=MappingProxyType(_KBM),
    km=tuple((bound, Decimal(k)) for bound, k in _KM),
    ks=MappingProxyType(_KS),
    kvs_experience_from=_KVS_EXPERIENCE_FROM,
    kvs_rows=_KVS_ROWS,
)
# 9 Dec 2025: new corridor 1 399–8 665; the other tables as above.
_DEC_2025 = dataclasses.replace(_SEP_2022, effective_from=date(2025, 12, 9), base_rate_rub=(1399, 8665))

EDITIONS: tuple[Edition, ...] = (_SEP_2022, _DEC_2025)  # oldest first


def edition_for(start_date: date | None = None) -> Edition:
    """The tables in force on `start_date` (the newest edition when None)."""
    if start_date is None:
        return EDITIONS[-1]
    for edition in reversed(EDITIONS):
        if start_date >= edition.effective_from:
            return edition
    raise TariffError(f"no tariff tables before {EDITIONS[0].effective_from.isoformat()}")


def base_rate_for(position: float, start_date: date) -> int:
    """ТБ at `position` (0 = min, 1 = max) in the corridor: whole roubles (half up), in kopecks."""
    if not (math.isfinite(position) and 0.0 <= position <= 1.0):
        raise TariffError("position must be between 0 and 1")
    low, high = edition_for(start_date).base_rate_rub
    roubles = (low + Decimal(str(position)) * (high - low)).quantize(Decimal(1), ROUND_HALF_UP)
    return int(roubles) * 100


def _normalise_city(city: str) -> str:
    words = re.sub(r"[\s.\-]+", " ", city.casefold().replace("ё", "е")).split()
    if words and words[0] in ("г", "город"):
        words = words[1:]
    if words and words[0] == "st":
        words[0] = "saint"
    return " ".join(words)


_CITY_ALIASES: Mapping[str, str] = MappingProxyType(
    {_normalise_city(spelling): canonical for canonical, _, others in _TERRITORIES for spelling in (canonical, *others)}
)


def _canonical_city(city: str) -> str | None:
    return _CITY_ALIASES.get(_normalise_city(city))


def known_cities() -> tuple[str, ...]:
    """Canonical English names of the places with a КТ."""
    return tuple(edition_for().kt)


def territory_coefficient(city: str, start_date: date | None = None) -> Decimal:
    """КТ for a city in any known spelling ("Moscow", "москва", "Saint-Petersburg", "г. Казань")."""
    return edition_for(start_date).territory(city)


def kvs(age: int, experience_years: int, start_date: date | None = None) -> Decimal:
    """КВС; TariffError for age under 16 and for the table's empty cells."""
    return edition_for(start_date).age_experience(age, experience_years)


def compute_premium(base_rate_kopecks: int, inp: TariffInput) -> Breakdown:
    """Premium with its coefficients; with several drivers the highest КБМ × КВС applies."""
    if base_rate_kopecks <= 0:
        raise TariffError("base rate must be positive")
    edition = edition_for(inp.start_date)
    if inp.unlimited_drivers:
        if inp.drivers:
            raise TariffError("named drivers given with unlimited drivers")
        k_bm, k_vs, k_o = edition.bonus_malus(inp.owner_kbm_class), _ONE, _UNLIMITED_KO
    else:
        if not inp.drivers:
            raise TariffError("no drivers")
        pairs = [
            (edition.bonus_malus(d.kbm_class), edition.age_experience(d.age, d.experience_years)) for d in inp.drivers
        ]
        k_bm, k_vs = max(pairs, key=lambda pair: pair[0] * pair[1])
        k_o = _ONE
    k_t, k_m = edition.territory(inp.city), edition.power(inp.power_hp)
    k_s = edition.season(inp.months)
    with localcontext() as ctx:
        ctx.prec = 50
        product = Decimal(base_rate_kopecks) * k_t * k_bm * k_vs * k_o * k_m * k_s * _KN * _KP
        premium = int(product.quantize(Decimal(1), ROUND_HALF_UP))
    return Breakdown(
        base_rate_kopecks=base_rate_kopecks,
        kt=k_t,
        kbm=k_bm,
        kvs=k_vs,
        ko=k_o,
        km=k_m,
        ks=k_s,
        kn=_KN,
        kp=_KP,
        premium_kopecks=premium,
    )


def full_years(born: date, on: date) -> int:
    """Whole years from `born` to `on` (age, or experience); a 29 Feb anniversary falls on 1 Mar."""
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def parse_date(text: str) -> date | None:
    """A strict "YYYY-MM-DD" date, or None when `text` is anything else."""
    if not _DATE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


_KBM_BY_ENUM: Mapping[int, str] = MappingProxyType(
    {
        v.number: v.name.removeprefix("KBM_CLASS_")
        for v in application_pb2.KbmClass.DESCRIPTOR.values
        if v.number != application_pb2.KBM_CLASS_UNSPECIFIED
    }
)


def kbm_class_name(value: int) -> str | None:
    """The class ("M", "0".."13") of a KbmClass enum value; None when unspecified or unknown."""
    return _KBM_BY_ENUM.get(value)
