"""What every insurer API dialect provides: building the two HTTP calls (create an application,
poll it) and reading their answers into a few plain outcomes; and what a dialect whose insurer
calls back provides besides (the callback URL it writes into the create, the headers carrying a
callback's signature, reading a callback's body). Pure code: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

from osago.v1 import application_pb2

from insurer_gateway.exchange import HttpCall, HttpResponse


class InvalidApplication(ValueError):
    """The application cannot be written in the insurer's dialect; `field` is its path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Created:
    """The insurer accepted the application; poll it after `poll_hint_s` seconds if given."""

    application_id: str
    poll_hint_s: float | None


@dataclass(frozen=True)
class Rejected:
    """The insurer refused the application's data; `field` is the insurer's name of the field."""

    field: str


@dataclass(frozen=True)
class NotReady:
    """The insurer is still computing; poll again after `poll_hint_s` seconds if given."""

    poll_hint_s: float | None


@dataclass(frozen=True)
class NotFound:
    """The insurer does not know the application polled."""


@dataclass(frozen=True)
class Breakdown:
    """The tariff coefficients of an offer (ТБ in kopecks, the rest exact decimals)."""

    base_rate_kopecks: int
    kt: Decimal
    kbm: Decimal
    kvs: Decimal
    ko: Decimal
    km: Decimal
    ks: Decimal
    kn: Decimal
    kp: Decimal


@dataclass(frozen=True)
class Offer:
    """The insurer's offer."""

    offer_id: str
    premium_kopecks: int
    currency: str
    breakdown: Breakdown
    valid_until: datetime
    purchase_url: str
    # When the gateway received the answer carrying the offer (set by the offer flow, not the
    # dialect): the start of the delivery lag the mesh adds.
    obtained_at: datetime | None = None


@dataclass(frozen=True)
class Declined:
    """The insurer declined the application; `reason` is its own words."""

    reason: str


@dataclass(frozen=True)
class Pushed:
    """An outcome the insurer POSTed to the callback URL, for its application `application_id`."""

    application_id: str
    outcome: Offer | Declined


CreateOutcome = Created | Rejected
PollOutcome = NotReady | Offer | Declined | NotFound


class Dialect(Protocol):
    """One insurer API dialect."""

    name: str

    def create_request(
        self, ref: str, idempotency_key: str, application: application_pb2.Application, start_date: date
    ) -> HttpCall:
        """The call creating the application, carrying `idempotency_key` the way the insurer
        reads it and so marked `idempotent`; raises InvalidApplication."""

    def parse_create(self, response: HttpResponse) -> CreateOutcome:
        """Reads the answer to the create call (status below 500, not 429); raises BadResponse."""

    def poll_request(self, application_id: str) -> HttpCall:
        """The call asking for the application's state (idempotent: it changes nothing)."""

    def parse_poll(self, response: HttpResponse) -> PollOutcome:
        """Reads the answer to a poll (status below 500, not 429); raises BadResponse."""


class CallbackDialect(Dialect, Protocol):
    """A dialect whose insurer POSTs the outcome to a URL given at creation; its poll is the
    insurer's status endpoint, for the safety-net poll. The signature scheme is
    insurer_gateway.signatures'; the dialect says where its parts travel."""

    # The headers carrying the signature's timestamp and the signature.
    timestamp_header: str
    signature_header: str

    def with_callback_url(self, url: str) -> CallbackDialect:
        """The dialect writing `url` as the callback URL of every application it creates."""

    def read_callback(self, body: bytes) -> Pushed:
        """Reads a callback's body (already verified); raises BadResponse."""
