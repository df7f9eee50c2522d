"""Customer isolation: the access token a quote request's creator gets, and the check that
StreamQuoteEvents and GetQuoteRequest make before touching the request.

The token is a JWT signed with a key every aggregator instance shares (HS256; several keys by
`kid`, the first signing, all verifying, so keys rotate without cutting anyone off). Its claims:
the request id, a hash of the customer it was issued to (never the customer's id itself),
audience, issue and expiry times. A call presenting no token, a token for another request or
customer, a tampered or an expired one is refused with one and the same PERMISSION_DENIED, before
the request is even looked up: the answer never tells whether the id exists.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

import jwt

from osago_common.clock import SYSTEM_CLOCK, Clock
from osago_common.env import SettingsError

AUDIENCE = "osago.v1.quote-access"
ALGORITHM = "HS256"
MIN_KEY_BYTES = 32
DENIED = "access denied: present the access token returned when this quote request was created"


class AccessDenied(Exception):
    """The call may not read this request. One message for every cause."""

    def __init__(self) -> None:
        super().__init__(DENIED)


@dataclass(frozen=True)
class AccessKeys:
    """Signing keys by id, the first one signs."""

    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def generate(cls) -> AccessKeys:
        """One random key: a single instance's dev default (tokens die with the process)."""
        return cls((("dev", secrets.token_bytes(MIN_KEY_BYTES)),))

    @classmethod
    def parse(cls, spec: str, variable: str = "OSAGO_ACCESS_TOKEN_KEYS") -> AccessKeys:
        """`kid:base64key,kid2:base64key` (each key at least 32 bytes)."""
        keys: list[tuple[str, bytes]] = []
        for item in filter(None, (part.strip() for part in spec.split(","))):
            kid, sep, encoded = item.partition(":")
            try:
                key = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if not sep or not kid or len(key) < MIN_KEY_BYTES:
                raise SettingsError(f"{variable}: expected kid:base64 with at least {MIN_KEY_BYTES} bytes per key")
            keys.append((kid, key))
        if not keys:
            raise SettingsError(f"{variable} names no key")
        return cls(tuple(keys))

    def spec(self) -> str:
        return ",".join(f"{kid}:{base64.b64encode(key).decode()}" for kid, key in self.keys)


def customer_hash(customer: str) -> str:
    return hashlib.sha256(customer.encode()).hexdigest()[:32]


class AccessTokens:
    def __init__(self, keys: AccessKeys, ttl_s: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self._signing = keys.keys[0]
        self._keys: Mapping[str, bytes] = dict(keys.keys)
        self._ttl_s = ttl_s
        self._clock = clock

    def issue(self, request_id: str, customer: str) -> str:
        now = int(self._clock.now().timestamp())
        kid, key = self._signing
        claims = {"rid": request_id, "cus": customer_hash(customer), "aud": AUDIENCE, "iat": now}
        claims["exp"] = now + int(self._ttl_s)
        return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})

    def check(self, token: str, request_id: str, customer: str) -> None:
        """Returns when `token` lets `customer` read `request_id`; AccessDenied otherwise."""
        if not token or len(token) > 2048:
            raise AccessDenied
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise AccessDenied
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                options={"require": ["exp", "rid", "cus"], "verify_exp": False},
            )
        except jwt.InvalidTokenError:
            raise AccessDenied from None
        now = self._clock.now().timestamp()
        if not isinstance(claims["exp"], int | float) or claims["exp"] <= now:
            raise AccessDenied
        if not secrets.compare_digest(str(claims["rid"]), request_id):
            raise AccessDenied
        if not secrets.compare_digest(str(claims["cus"]), customer_hash(customer)):
            raise AccessDenied
