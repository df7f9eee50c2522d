"""Insurer API dialects, pluggable: each turns the application into that insurer's HTTP calls and
reads its answers into plain outcomes. Add a dialect by implementing `Dialect` and registering it."""

from __future__ import annotations

from insurer_gateway.dialects.base import (
    Breakdown,
    Created,
    CreateOutcome,
    Declined,
    Dialect,
    InvalidApplication,
    NotFound,
    NotReady,
    Offer,
    PollOutcome,
    Rejected,
)
from insurer_gateway.dialects.calc import CalcDialect
from insurer_gateway.dialects.rest import RestDialect

DIALECTS: dict[str, Dialect] = {"rest": RestDialect(), "calc": CalcDialect()}

__all__ = [
    "DIALECTS",
    "Breakdown",
    "CalcDialect",
    "CreateOutcome",
    "Created",
    "Declined",
    "Dialect",
    "InvalidApplication",
    "NotFound",
    "NotReady",
    "Offer",
    "PollOutcome",
    "Rejected",
    "RestDialect",
]
