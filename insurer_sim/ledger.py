"""The record of every outcome the simulated insurers issued, so a test or a benchmark can prove
that nothing was lost or duplicated on the way to the customer.

An outcome is issued once: the first time a poll returns it, or the first time the partner
accepts (2xx) its callback, recorded when that answer arrives (a moment after the partner may
have passed the outcome on). Later polls or callbacks add nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class IssuedOffer:
    insurer_id: str
    application_id: str
    offer_id: str
    reference: str
    premium_kopecks: int
    issued_at: datetime
    # When the insurer had it ready (polls from then on see it): issued_at - ready_at is how
    # long the poller took to notice.
    ready_at: datetime

    def to_json(self) -> dict[str, object]:
        return {
            "insurer_id": self.insurer_id,
            "application_id": self.application_id,
            "offer_id": self.offer_id,
            "reference": self.reference,
            "premium_kopecks": self.premium_kopecks,
            "issued_at": self.issued_at.isoformat(),
            "ready_at": self.ready_at.isoformat(),
        }


@dataclass(frozen=True)
class IssuedDecline:
    insurer_id: str
    application_id: str
    reference: str
    reason: str
    issued_at: datetime
    ready_at: datetime

    def to_json(self) -> dict[str, object]:
        return {
            "insurer_id": self.insurer_id,
            "application_id": self.application_id,
            "reference": self.reference,
            "reason": self.reason,
            "issued_at": self.issued_at.isoformat(),
            "ready_at": self.ready_at.isoformat(),
        }


class Ledger:
    """Issued offers and declines, in the order they were issued."""

    def __init__(self) -> None:
        self.offers: list[IssuedOffer] = []
        self.declines: list[IssuedDecline] = []

    def record(self, entry: IssuedOffer | IssuedDecline) -> None:
        if isinstance(entry, IssuedOffer):
            self.offers.append(entry)
        else:
            self.declines.append(entry)

    def query(
        self, *, reference: str | None = None, insurer_id: str | None = None
    ) -> tuple[list[IssuedOffer], list[IssuedDecline]]:
        """The offers and declines matching every filter given."""

        def wanted(e: IssuedOffer | IssuedDecline) -> bool:
            return (reference is None or e.reference == reference) and (
                insurer_id is None or e.insurer_id == insurer_id
            )

        return [e for e in self.offers if wanted(e)], [e for e in self.declines if wanted(e)]
