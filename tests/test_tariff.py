"""The Bank of Russia formula: hand-computed premiums and every coefficient table."""

from __future__ import annotations

import math
from datetime import date
from decimal import Decimal

import pytest

from osago_common import tariff
from osago_common.tariff import (
    KBM_CLASSES,
    DriverFactors,
    TariffError,
    TariffInput,
    base_rate_for,
    compute_premium,
    full_years,
    known_cities,
    kvs,
    territory_coefficient,
)

START = date(2026, 3, 2)


def named(
    *drivers: DriverFactors,
    city: str = "Moscow",
    power_hp: int = 106,
    months: int = 12,
    start_date: date = START,
) -> TariffInput:
    return TariffInput(
        start_date=start_date,
        city=city,
        power_hp=power_hp,
        months=months,
        unlimited_drivers=False,
        drivers=drivers,
        owner_kbm_class="3",
    )


# A driver whose КБМ (class 4) and КВС (35-39 years, 3-4 years' experience) are both exactly 1.
NEUTRAL = DriverFactors(age=37, experience_years=3, kbm_class="4")


# --- whole premiums ------------------------------------------------------------------------------


def test_moscow_young_driver_premium() -> None:
    driver = DriverFactors(age=19, experience_years=1, kbm_class="4")
    inp = named(driver, city="Moscow", power_hp=106)
    b = compute_premium(659_100, inp)
    assert (b.kt, b.kbm, b.kvs, b.ko, b.km, b.ks, b.kn, b.kp) == tuple(
        Decimal(x) for x in ("1.8", "1.00", "1.92", "1.0", "1.2", "1.0", "1.0", "1.0")
    )
    # 6591 × 1.8 = 11863.8; × 1.00 (КБМ) = 11863.8; × 1.92 (КВС) = 22778.496;
    # × 1.2 (КМ, 106 hp) = 27334.1952 RUB = 2 733 419.52 kopecks → 2 733 420
    assert b.premium_kopecks == 2_733_420
    assert b.base_rate_kopecks == 659_100


def test_unlimited_drivers_use_ko_2_32_owner_kbm_and_no_kvs() -> None:
    inp = TariffInput(
        start_date=START,
        city="Санкт-Петербург",
        power_hp=123,
        months=12,
        unlimited_drivers=True,
        drivers=(),
        owner_kbm_class="7",
    )
    b = compute_premium(753_500, inp)
    assert (b.kt, b.kbm, b.kvs, b.ko, b.km) == (
        Decimal("1.64"),
        Decimal("0.78"),
        Decimal("1.0"),
        Decimal("2.32"),
        Decimal("1.4"),
    )
    # 7535 × 1.64 = 12357.4; × 0.78 (КБМ class 7) = 9638.772; × 2.32 (КО) = 22361.95104;
    # × 1.4 (КМ, 123 hp) = 31306.731456 RUB = 3 130 673.1456 kopecks → 3 130 673
    assert b.premium_kopecks == 3_130_673


def test_two_drivers_take_the_higher_kbm_times_kvs_and_months_discount() -> None:
    first = DriverFactors(age=45, experience_years=25, kbm_class="13")  # 0.46 × 0.91 = 0.4186
    second = DriverFactors(age=41, experience_years=18, kbm_class="10")  # 0.63 × 0.91 = 0.5733
    b = compute_premium(500_000, named(first, second, city="Казань", power_hp=123, months=9))
    assert (b.kbm, b.kvs, b.ks) == (Decimal("0.63"), Decimal("0.91"), Decimal("0.95"))
    # 5000 × 1.8 = 9000; × 0.63 = 5670; × 0.91 = 5159.7; × 1.4 (КМ) = 7223.58; × 0.95 (КС, 9 months)
    # = 6862.401 RUB = 686 240.1 kopecks → 686 240
    assert b.premium_kopecks == 686_240


def test_the_driver_with_the_highest_product_wins_not_the_highest_single_factor() -> None:
    highest_kbm = DriverFactors(age=62, experience_years=40, kbm_class="M")  # 3.92 × 0.83 = 3.2536
    highest_product = DriverFactors(age=19, experience_years=1, kbm_class="1")  # 2.25 × 1.92 = 4.32
    highest_kvs = DriverFactors(age=17, experience_years=0, kbm_class="13")  # 0.46 × 2.27 = 1.0442
    b = compute_premium(500_000, named(highest_kbm, highest_product, highest_kvs))
    assert (b.kbm, b.kvs) == (Decimal("2.25"), Decimal("1.92"))


@pytest.mark.parametrize(
    ("start_date", "position", "expected"),
    [
        # corridor 1 646–7 535 until 8 Dec 2025: ТБ 7535.
        # 7535 × 1.88 = 14165.8; × 1.17 = 16573.986; × 0.97 = 16076.76642; × 1.1 = 17684.443062 RUB
        # = 1 768 444.3062 kopecks → 1 768 444
        (date(2025, 12, 8), 1.0, 1_768_444),
        # corridor 1 399–8 665 from 9 Dec 2025: ТБ 8665.
        # 8665 × 1.88 = 16290.2; × 1.17 = 19059.534; × 0.97 = 18487.74798; × 1.1 = 20336.522778 RUB
        # = 2 033 652.2778 kopecks → 2 033 652
        (date(2025, 12, 9), 1.0, 2_033_652),
    ],
)
def test_premium_follows_the_corridor_in_force_on_the_start_date(
    start_date: date, position: float, expected: int
) -> None:
    driver = DriverFactors(age=30, experience_years=10, kbm_class="3")  # КВС 0.97, КБМ 1.17
    inp = named(driver, city="Chelyabinsk", power_hp=90, start_date=start_date)  # КТ 1.88, КМ 1.1
    assert compute_premium(base_rate_for(position, start_date), inp).premium_kopecks == expected


def test_premium_is_rounded_half_up_to_whole_kopecks() -> None:
    # 100 005 × 1.8 (КТ) × 1 × 1 × 1.0 (КМ, 60 hp) × 0.5 (КС, 3 months) = 90 004.5 → 90 005
    # (banker's rounding would give 90 004)
    assert compute_premium(100_005, named(NEUTRAL, power_hp=60, months=3)).premium_kopecks == 90_005


# --- ТБ corridor ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start_date", "corridor"),
    [
        (date(2022, 9, 10), (164_600, 753_500)),
        (date(2025, 12, 8), (164_600, 753_500)),
        (date(2025, 12, 9), (139_900, 866_500)),
        (date(2030, 1, 1), (139_900, 866_500)),
    ],
)
def test_base_rate_corridor_is_picked_by_start_date(start_date: date, corridor: tuple[int, int]) -> None:
    assert (base_rate_for(0.0, start_date), base_rate_for(1.0, start_date)) == corridor


def test_no_tariff_before_september_2022() -> None:
    with pytest.raises(TariffError, match="no tariff tables before 2022-09-10"):
        base_rate_for(0.5, date(2022, 9, 9))


@pytest.mark.parametrize(
    ("position", "start_date", "expected"),
    [
        (0.0, date(2025, 1, 1), 164_600),
        (1.0, date(2025, 1, 1), 753_500),
        (0.5, date(2025, 1, 1), 459_100),  # 1646 + 0.5 × 5889 = 4590.5 → 4591 RUB (half up)
        (0.0, date(2026, 1, 1), 139_900),
        (1.0, date(2026, 1, 1), 866_500),
        (0.5, date(2026, 1, 1), 503_200),  # 1399 + 0.5 × 7266 = 5032 RUB
        (0.55, date(2026, 1, 1), 539_500),  # 1399 + 0.55 × 7266 = 5395.3 → 5395 RUB
    ],
)
def test_base_rate_for_position_is_whole_roubles_inside_the_corridor(
    position: float, start_date: date, expected: int
) -> None:
    assert base_rate_for(position, start_date) == expected


@pytest.mark.parametrize("position", [-0.01, 1.01, math.nan, math.inf])
def test_base_rate_position_outside_zero_to_one_is_rejected(position: float) -> None:
    with pytest.raises(TariffError, match="position must be between 0 and 1"):
        base_rate_for(position, START)


# --- КТ ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("city", "kt"),
    [
        ("Moscow", "1.8"),
        ("москва", "1.8"),
        ("  МОСКВА ", "1.8"),
        ("г. Москва", "1.8"),
        ("St Petersburg", "1.64"),
        ("St. Petersburg", "1.64"),
        ("Saint Petersburg", "1.64"),
        ("saint-petersburg", "1.64"),
        ("Санкт-Петербург", "1.64"),
        ("Kazan", "1.8"),
        ("Казань", "1.8"),
        ("Tyumen", "1.8"),
        ("Тюмень", "1.8"),
        ("Surgut", "1.8"),
        ("Chelyabinsk", "1.88"),
        ("Челябинск", "1.88"),
        ("Ufa", "1.64"),
        ("Уфа", "1.64"),
        ("Yaroslavl", "1.4"),
        ("Makhachkala", "0.96"),
        ("Sevastopol", "0.76"),
        ("Севастополь", "0.76"),
    ],
)
def test_territory_accepts_english_and_russian_spellings(city: str, kt: str) -> None:
    assert territory_coefficient(city) == Decimal(kt)


@pytest.mark.parametrize("city", ["Atlantis", "", "Moscow Oblast", "Petersburg Moscow"])
def test_unknown_territory_is_rejected(city: str) -> None:
    with pytest.raises(TariffError, match="unknown territory"):
        territory_coefficient(city)


def test_known_cities_are_the_ten_canonical_english_names() -> None:
    assert known_cities() == (
        "Moscow",
        "St Petersburg",
        "Kazan",
        "Tyumen",
        "Surgut",
        "Chelyabinsk",
        "Ufa",
        "Yaroslavl",
        "Makhachkala",
        "Sevastopol",
    )


# --- КМ, КС, КБМ ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("power_hp", "km"),
    [
        (1, "0.6"),
        (50, "0.6"),
        (51, "1.0"),
        (70, "1.0"),
        (71, "1.1"),
        (100, "1.1"),
        (101, "1.2"),
        (120, "1.2"),
        (121, "1.4"),
        (150, "1.4"),
        (151, "1.6"),
        (1500, "1.6"),
    ],
)
def test_power_bands_have_inclusive_upper_bounds(power_hp: int, km: str) -> None:
    assert compute_premium(100_000, named(NEUTRAL, power_hp=power_hp)).km == Decimal(km)


def test_zero_power_has_no_coefficient() -> None:
    with pytest.raises(TariffError, match="engine power must be positive"):
        compute_premium(100_000, named(NEUTRAL, power_hp=0))


@pytest.mark.parametrize(
    ("months", "ks"),
    [
        (3, "0.5"),
        (4, "0.6"),
        (5, "0.65"),
        (6, "0.7"),
        (7, "0.8"),
        (8, "0.9"),
        (9, "0.95"),
        (10, "1.0"),
        (11, "1.0"),
        (12, "1.0"),
    ],
)
def test_months_of_use_coefficient(months: int, ks: str) -> None:
    assert compute_premium(100_000, named(NEUTRAL, months=months)).ks == Decimal(ks)


@pytest.mark.parametrize("months", [0, 2, 13])
def test_months_outside_3_to_12_are_rejected(months: int) -> None:
    with pytest.raises(TariffError, match=r"months of use must be 3\.\.12"):
        compute_premium(100_000, named(NEUTRAL, months=months))


def test_bonus_malus_table_has_fifteen_classes_from_3_92_down_to_0_46() -> None:
    edition = tariff.edition_for()
    values = [edition.bonus_malus(c) for c in KBM_CLASSES]
    assert len(KBM_CLASSES) == 15
    assert values[0] == Decimal("3.92") and values[-1] == Decimal("0.46")
    assert edition.bonus_malus("3") == Decimal("1.17") and edition.bonus_malus("4") == Decimal("1.00")
    assert values == sorted(values, reverse=True)


def test_unknown_bonus_malus_class_is_rejected() -> None:
    with pytest.raises(TariffError, match="unknown bonus-malus class"):
        compute_premium(100_000, named(DriverFactors(age=37, experience_years=3, kbm_class="14")))


# --- КВС -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "experience", "expected"),
    [
        (16, 0, "2.27"),
        (21, 5, "1.62"),
        (22, 0, "1.88"),
        (24, 8, "1.09"),
        (25, 10, "1.02"),
        (29, 13, "1.02"),
        (30, 15, "0.95"),
        (34, 14, "0.97"),
        (35, 3, "1.00"),
        (39, 15, "0.93"),
        (40, 4, "0.96"),
        (49, 2, "1.43"),
        (50, 6, "0.92"),
        (59, 15, "0.86"),
        (60, 15, "0.83"),
        (60, 14, "0.88"),
        (85, 60, "0.83"),
    ],
)
def test_age_experience_rows_and_columns(age: int, experience: int, expected: str) -> None:
    assert kvs(age, experience) == Decimal(expected)


TOO_LONG = "driving experience too long for the driver's age"
NO_KVS = "no КВС for this age and experience"


@pytest.mark.parametrize(
    ("age", "experience", "message"),
    [(20, 7, TOO_LONG), (21, 15, TOO_LONG), (24, 10, TOO_LONG), (29, 15, TOO_LONG), (15, 0, NO_KVS), (30, -1, NO_KVS)],
)
def test_empty_age_experience_cell_raises(age: int, experience: int, message: str) -> None:
    with pytest.raises(TariffError, match=message):
        kvs(age, experience)


def test_driver_in_an_empty_age_experience_cell_gets_no_premium() -> None:
    impossible = DriverFactors(age=20, experience_years=7, kbm_class="3")
    with pytest.raises(TariffError, match=TOO_LONG):
        compute_premium(500_000, named(NEUTRAL, impossible))


# --- inconsistent inputs -------------------------------------------------------------------------


def test_named_policy_without_drivers_is_rejected() -> None:
    with pytest.raises(TariffError, match="no drivers"):
        compute_premium(500_000, named())


def test_unlimited_policy_with_named_drivers_is_rejected() -> None:
    inp = TariffInput(
        start_date=START,
        city="Moscow",
        power_hp=100,
        months=12,
        unlimited_drivers=True,
        drivers=(NEUTRAL,),
        owner_kbm_class="3",
    )
    with pytest.raises(TariffError, match="named drivers given with unlimited drivers"):
        compute_premium(500_000, inp)


def test_non_positive_base_rate_is_rejected() -> None:
    with pytest.raises(TariffError, match="base rate must be positive"):
        compute_premium(0, named(NEUTRAL))


# --- dates -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("born", "on", "years"),
    [
        (date(2000, 5, 10), date(2020, 5, 9), 19),
        (date(2000, 5, 10), date(2020, 5, 10), 20),
        (date(2000, 2, 29), date(2017, 2, 28), 16),
        (date(2000, 2, 29), date(2017, 3, 1), 17),
        (date(2000, 2, 29), date(2020, 2, 29), 20),
    ],
)
def test_full_years_counts_completed_years(born: date, on: date, years: int) -> None:
    assert full_years(born, on) == years
