"""One HTTP exchange with an insurer, as plain values: the call, its response, the ways it can
give none, and the Retry-After it may carry. The dialects build calls and read responses, the
transport makes them, the guard wraps them in its policies; all three share these types, and
none of them needs another's module for them. Pure: no I/O library is imported here.
"""

from __future__ import annotations

import email.utils
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class HttpCall:
    """One HTTP request to the insurer; `path` is relative to the insurer's base URL.

    `idempotent` says the call is safe to repeat: the insurer answers a repeat as it answered
    the first (a poll; a create carrying its Idempotency-Key). Whoever builds the call says so;
    only such calls are retried after a transient failure. False by default: a call nobody
    vouched for is made once.
    """

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Mapping[str, Any] | None = None
    idempotent: bool = False


@dataclass(frozen=True)
class HttpResponse:
    """One HTTP response; header names are lower-case."""

    status: int
    headers: Mapping[str, str]
    body: bytes


# Makes one call within the timeout (seconds) it is given: answers an HttpResponse or raises
# one of the TransportErrors below.
HttpFunction = Callable[[HttpCall, float], Awaitable[HttpResponse]]


class TransportError(Exception):
    """An HTTP call gave no response; the message never holds the data sent."""


class HttpTimeout(TransportError):
    """No complete response within the call's timeout."""


class HttpUnavailable(TransportError):
    """The insurer could not be reached, or the connection broke (refused, reset, closed)."""


class HttpProtocolError(TransportError):
    """The response was not valid HTTP, or its body was too large."""


class BadResponse(Exception):
    """The insurer answered something off its API's schema. The message names what was wrong,
    never the data sent (it may hold personal data)."""


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds; an HTTP-date or garbage is ignored (the caller's default applies)."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw.strip())
    except ValueError:
        return None
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return None
    return seconds


def retry_after_s(headers: Mapping[str, str], now: datetime) -> float | None:
    """Retry-After in seconds from `now`, written as seconds or as an HTTP-date (RFC 9110);
    a date in the past is 0, garbage None."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = retry_after(headers)
    if seconds is not None:
        return seconds
    try:
        moment = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000" in an HTTP-date means UTC
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())
