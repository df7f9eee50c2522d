"""What an exchange with the insurer can end in: the transport's errors and the reasons for no
offer. Shared by the offer flow, the guarded call and the transport; imports no I/O library."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class TransportError(Exception):
    """An HTTP call gave no response; the message never holds the data sent."""


class HttpTimeout(TransportError):
    """No complete response within the call's timeout."""


class HttpUnavailable(TransportError):
    """The insurer could not be reached, or the connection broke (refused, reset, closed)."""


class HttpProtocolError(TransportError):
    """The response was not valid HTTP, or its body was too large."""


class Reason(enum.Enum):
    """Why no offer came; the names match osago.v1.FailureReason without its prefix."""

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
