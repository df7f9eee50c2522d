"""The dev catalogue of insurers: the id, display name and API dialect of every insurer the
project knows. The simulator plays them, and `osago up`, the benchmarks and the tests start a
gateway for the first N.

Production services are configured, not catalogued: the aggregator takes its insurers from
OSAGO_GATEWAYS (`id=host:port` or `id:Name=host:port`), a gateway takes its own from
OSAGO_GATEWAY_INSURER / _NAME / _DIALECT. They read this module only as the default for what
their configuration leaves out, an insurer's display name and dialect, and serve insurers it
does not list as well. How the simulator makes each insurer behave (prices, latency, declines)
is the simulator's own: insurer_sim.profiles.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Insurer:
    insurer_id: str
    name: str
    # API dialect the insurer speaks: "rest" or "calc" (create, then poll) or "push" (create with a
    # callback URL; the insurer POSTs the signed result). See insurer_sim and insurer_gateway.dialects.
    dialect: str


CATALOGUE: tuple[Insurer, ...] = (
    Insurer("alfa", "AlfaStrakhovanie", "rest"),
    Insurer("ingos", "Ingosstrakh", "calc"),
    Insurer("reso", "RESO-Garantia", "rest"),
    Insurer("vsk", "VSK", "calc"),
    Insurer("sogaz", "SOGAZ", "rest"),
    Insurer("renins", "Renaissance Insurance", "calc"),
    Insurer("soglasie", "Soglasie", "rest"),
    Insurer("tstrah", "T-Strakhovanie", "calc"),
    Insurer("sber", "Sberbank Strakhovanie", "rest"),
    Insurer("maks", "MAKS", "calc"),
    # The insurers that call back come after the first ten (the benchmarks' usual set) and before
    # the two slower than a session, so the first twelve hold every dialect.
    Insurer("sovcom", "Sovcombank Insurance", "push"),
    Insurer("energo", "Energogarant", "push"),
    Insurer("zetta", "Zetta Insurance", "rest"),
    Insurer("ugoria", "Yugoria", "calc"),
)

BY_ID: dict[str, Insurer] = {i.insurer_id: i for i in CATALOGUE}


def first(n: int) -> tuple[Insurer, ...]:
    """The first `n` insurers of the catalogue (1 <= n <= its size)."""
    if not 1 <= n <= len(CATALOGUE):
        raise ValueError(f"between 1 and {len(CATALOGUE)} insurers can be simulated, not {n}")
    return CATALOGUE[:n]
