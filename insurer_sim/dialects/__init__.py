"""The insurer API dialects the simulator speaks, by name (`InsurerProfile.dialect`)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from insurer_sim.dialects import calc, push, rest
from insurer_sim.dialects.base import Dialect, Reply

DIALECTS: Mapping[str, Dialect] = MappingProxyType({d.name: d for d in (rest.DIALECT, calc.DIALECT, push.DIALECT)})

__all__ = ["DIALECTS", "Dialect", "Reply"]
