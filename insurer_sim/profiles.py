"""How each simulated insurer behaves: where its base rate sits inside the ТБ corridor, how
long it takes to make an offer, how often it declines. Keyed by insurer id; who the insurers
are (id, display name, dialect) comes from the dev catalogue, osago_common.insurers, and the
simulator plays them in its order. Only the simulator reads this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from osago_common.insurers import CATALOGUE, Insurer


class Behaviour(NamedTuple):
    # Where the insurer's base rate ТБ sits inside the corridor in force: 0.0 = min, 1.0 = max.
    base_rate_position: float
    # Log-normal latency from application to offer: median seconds and sigma (of the log).
    latency_median_s: float
    latency_sigma: float
    # Share of applications declined for no stated reason (underwriting).
    decline_rate: float
    # Declines every taxi.
    declines_taxi: bool = False


BEHAVIOUR: dict[str, Behaviour] = {
    "alfa": Behaviour(0.55, 2.0, 0.35, 0.02),
    "ingos": Behaviour(0.70, 3.5, 0.35, 0.03),
    "reso": Behaviour(0.62, 5.0, 0.40, 0.03, declines_taxi=True),
    "vsk": Behaviour(0.48, 7.0, 0.40, 0.02),
    "sogaz": Behaviour(0.66, 9.0, 0.40, 0.02),
    "renins": Behaviour(0.58, 11.0, 0.40, 0.04),
    "soglasie": Behaviour(0.74, 14.0, 0.40, 0.03, declines_taxi=True),
    "tstrah": Behaviour(0.40, 4.0, 0.35, 0.02),
    "sber": Behaviour(0.60, 18.0, 0.40, 0.02),
    "maks": Behaviour(0.52, 25.0, 0.40, 0.03),
    "sovcom": Behaviour(0.57, 3.0, 0.35, 0.02),
    "energo": Behaviour(0.45, 8.0, 0.40, 0.03, declines_taxi=True),
    "zetta": Behaviour(0.35, 75.0, 0.30, 0.05),
    "ugoria": Behaviour(0.30, 95.0, 0.30, 0.05),
}


@dataclass(frozen=True)
class InsurerProfile:
    """One simulated insurer: who it is and how it behaves (the fields of `Behaviour`)."""

    insurer_id: str
    name: str
    # API dialect the insurer speaks: "rest", "calc" or "push" (see insurer_sim.dialects).
    dialect: str
    base_rate_position: float
    latency_median_s: float
    latency_sigma: float
    decline_rate: float
    declines_taxi: bool = False

    @classmethod
    def of(cls, insurer: Insurer, behaviour: Behaviour) -> InsurerProfile:
        return cls(insurer.insurer_id, insurer.name, insurer.dialect, *behaviour)


# Every insurer of the catalogue, in its order (a catalogue insurer without a behaviour here
# fails at import).
PROFILES: tuple[InsurerProfile, ...] = tuple(
    InsurerProfile.of(insurer, BEHAVIOUR[insurer.insurer_id]) for insurer in CATALOGUE
)

BY_ID: dict[str, InsurerProfile] = {p.insurer_id: p for p in PROFILES}


def profile(insurer_id: str) -> InsurerProfile:
    """The simulated insurer `insurer_id`; KeyError names the unknown id."""
    try:
        return BY_ID[insurer_id]
    except KeyError:
        raise KeyError(f"unknown insurer {insurer_id!r}; known: {', '.join(BY_ID)}") from None


def first(n: int) -> tuple[InsurerProfile, ...]:
    """The first `n` simulated insurers, the catalogue's first `n` (1 <= n <= its size)."""
    if not 1 <= n <= len(PROFILES):
        raise ValueError(f"between 1 and {len(PROFILES)} insurers can be simulated, not {n}")
    return PROFILES[:n]
