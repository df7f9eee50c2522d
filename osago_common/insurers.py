"""The catalogue of insurers the project knows: ids, display names, API dialects and the
behaviour the simulator gives each (base rate inside the ТБ corridor, latency, declines).

Gateways and the aggregator take names and dialects from here unless configured otherwise;
the simulator takes the behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InsurerProfile:
    insurer_id: str
    name: str
    # API dialect the insurer speaks: "rest" or "calc" (see insurer_sim and insurer_gateway.dialects).
    dialect: str
    # Where the insurer's base rate ТБ sits inside the corridor in force: 0.0 = min, 1.0 = max.
    base_rate_position: float
    # Log-normal latency from application to offer: median seconds and sigma (of the log).
    latency_median_s: float
    latency_sigma: float
    # Share of applications declined for no stated reason (underwriting).
    decline_rate: float
    # Declines every taxi.
    declines_taxi: bool = False


CATALOGUE: tuple[InsurerProfile, ...] = (
    InsurerProfile("alfa", "AlfaStrakhovanie", "rest", 0.55, 2.0, 0.35, 0.02),
    InsurerProfile("ingos", "Ingosstrakh", "calc", 0.70, 3.5, 0.35, 0.03),
    InsurerProfile("reso", "RESO-Garantia", "rest", 0.62, 5.0, 0.40, 0.03, declines_taxi=True),
    InsurerProfile("vsk", "VSK", "calc", 0.48, 7.0, 0.40, 0.02),
    InsurerProfile("sogaz", "SOGAZ", "rest", 0.66, 9.0, 0.40, 0.02),
    InsurerProfile("renins", "Renaissance Insurance", "calc", 0.58, 11.0, 0.40, 0.04),
    InsurerProfile("soglasie", "Soglasie", "rest", 0.74, 14.0, 0.40, 0.03, declines_taxi=True),
    InsurerProfile("tstrah", "T-Strakhovanie", "calc", 0.40, 4.0, 0.35, 0.02),
    InsurerProfile("sber", "Sberbank Strakhovanie", "rest", 0.60, 18.0, 0.40, 0.02),
    InsurerProfile("maks", "MAKS", "calc", 0.52, 25.0, 0.40, 0.03),
    InsurerProfile("zetta", "Zetta Insurance", "rest", 0.35, 75.0, 0.30, 0.05),
    InsurerProfile("ugoria", "Yugoria", "calc", 0.30, 95.0, 0.30, 0.05),
)

BY_ID: dict[str, InsurerProfile] = {p.insurer_id: p for p in CATALOGUE}


def profile(insurer_id: str) -> InsurerProfile:
    """The catalogue entry for `insurer_id`; KeyError names the unknown id."""
    try:
        return BY_ID[insurer_id]
    except KeyError:
        raise KeyError(f"unknown insurer {insurer_id!r}; known: {', '.join(BY_ID)}") from None


def first(n: int) -> tuple[InsurerProfile, ...]:
    """The first `n` insurers of the catalogue (1 <= n <= its size)."""
    if not 1 <= n <= len(CATALOGUE):
        raise ValueError(f"between 1 and {len(CATALOGUE)} insurers can be simulated, not {n}")
    return CATALOGUE[:n]
