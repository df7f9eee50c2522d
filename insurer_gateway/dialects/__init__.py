"""Insurer API dialects, pluggable: each turns the application into that insurer's HTTP calls and
reads its answers into plain outcomes. Add a dialect by implementing `Dialect` and registering it;
one whose insurer calls back implements `CallbackDialect` and is registered in CALLBACK_DIALECTS
too: whether an insurer's gateway waits for callbacks is its dialect's property."""

from __future__ import annotations

from insurer_gateway.dialects.base import (
    Breakdown,
    CallbackDialect,
    Created,
    CreateOutcome,
    Declined,
    Dialect,
    InvalidApplication,
    NotFound,
    NotReady,
    Offer,
    PollOutcome,
    Pushed,
    Rejected,
)
from insurer_gateway.dialects.calc import CalcDialect
from insurer_gateway.dialects.push import PushDialect
from insurer_gateway.dialects.rest import RestDialect

CALLBACK_DIALECTS: dict[str, CallbackDialect] = {"push": PushDialect()}
DIALECTS: dict[str, Dialect] = {"rest": RestDialect(), "calc": CalcDialect(), **CALLBACK_DIALECTS}

__all__ = [
    "CALLBACK_DIALECTS",
    "DIALECTS",
    "Breakdown",
    "CalcDialect",
    "CallbackDialect",
    "CreateOutcome",
    "Created",
    "Declined",
    "Dialect",
    "InvalidApplication",
    "NotFound",
    "NotReady",
    "Offer",
    "PollOutcome",
    "PushDialect",
    "Pushed",
    "Rejected",
    "RestDialect",
]
