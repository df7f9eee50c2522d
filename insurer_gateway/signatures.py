"""Verifying a signed callback: HMAC-SHA256 with the secret shared with the insurer, over
`timestamp + "." + body`, written "sha256=<hex>"; the timestamp (Unix seconds) must lie within
`window_s` of now, either way, so a callback captured and replayed later is refused (one replayed
within the window is refused by insurer_gateway.inbox.first_sight). Pure: the time is given.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re

PREFIX = "sha256="
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class Verdict(enum.Enum):
    VALID = "valid"
    UNSIGNED = "the signature or its timestamp is missing"
    MALFORMED = "the signature or its timestamp is malformed"
    MISMATCH = "the signature does not match"
    STALE = "the timestamp is outside the accepted window"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature of `body` at `timestamp`: "sha256=<hex>"."""
    return PREFIX + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(
    secret: bytes, timestamp: str | None, signature: str | None, body: bytes, now: float, window_s: float
) -> Verdict:
    """Whether `signature` signs `body` at `timestamp` with `secret`, and the timestamp is fresh
    (`now`: Unix seconds)."""
    if not timestamp or not signature:
        return Verdict.UNSIGNED
    digest = signature.strip().removeprefix(PREFIX)
    if not signature.strip().startswith(PREFIX) or not _HEX_DIGEST.fullmatch(digest):
        return Verdict.MALFORMED
    if not _TIMESTAMP.fullmatch(timestamp.strip()):
        return Verdict.MALFORMED
    if not hmac.compare_digest(sign(secret, timestamp.strip(), body), PREFIX + digest):
        return Verdict.MISMATCH
    if abs(now - int(timestamp)) > window_s:
        return Verdict.STALE
    return Verdict.VALID
