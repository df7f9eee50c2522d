"""Why an insurer gave no offer, and what the customer reads for each reason. Shared by the
offer flow and the guarded call; imports no I/O library (the transport's own errors are in
insurer_gateway.exchange)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reason(enum.Enum):
    """Why no offer came (insurer_gateway.servicer.FAILURE_REASONS: as osago.v1.FailureReason)."""

    TIMEOUT = enum.auto()
    DEADLINE = enum.auto()
    UNAVAILABLE = enum.auto()
    DECLINED = enum.auto()
    RATE_LIMITED = enum.auto()
    CIRCUIT_OPEN = enum.auto()
    BAD_RESPONSE = enum.auto()
    INSURER_ERROR = enum.auto()


# What the customer may read for each reason (a decline carries the insurer's own words).
MESSAGES: dict[Reason, str] = {
    Reason.TIMEOUT: "The insurer did not answer in time.",
    Reason.DEADLINE: "The insurer's offer did not come before the time limit.",
    Reason.UNAVAILABLE: "The insurer cannot be reached right now.",
    Reason.DECLINED: "The insurer declined the application.",
    Reason.RATE_LIMITED: "The insurer is receiving too many requests right now.",
    Reason.CIRCUIT_OPEN: "The insurer is failing right now; we will ask it again shortly.",
    Reason.BAD_RESPONSE: "The insurer answered something we could not understand.",
    Reason.INSURER_ERROR: "The insurer reported an error of its own.",
}


@dataclass(frozen=True)
class Failed:
    """No offer; `message` is for the customer, `detail` for operators (no personal data)."""

    reason: Reason
    message: str
    detail: str = ""
    # With CIRCUIT_OPEN: how long calls to the insurer stay refused.
    retry_after_s: float | None = None


def failed(reason: Reason, detail: str = "") -> Failed:
    return Failed(reason, MESSAGES[reason], detail)
