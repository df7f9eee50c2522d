"""Bearer tokens between services (JWT, RFC 7519): core-app signs, the aggregator verifies.

Asymmetric keys (ES256 by default): the aggregator holds only public keys, in a JWKS file (a
mounted Secret), each with its `kid`. Rotation without downtime: add the new public key to the
JWKS, move the signer to the new key, later drop the old key. A token whose `kid` is not known is
the cue to read the file again (at most every `reload_s`), so a rotated Secret is picked up
without a restart.

A token is accepted when its signature verifies with the key its `kid` names, its `aud` is the
aggregator's audience, its `iss` one of the accepted issuers, `exp` and `iat` are present, it is
not expired (with a little leeway for clock skew), and it lived at most `max_lifetime_s`. The
caller is then named `iss/sub`.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from osago_common.clock import SYSTEM_CLOCK, Clock

DEFAULT_AUDIENCE = "osago-aggregator"
LEEWAY_S = 30.0
# Verified tokens remembered (until they expire), so a client's token costs one signature check.
CACHE_SIZE = 4096


class TokenRejected(Exception):
    """The token is not acceptable; the message says which rule it broke (for the log, never
    with the token itself)."""


@dataclass(frozen=True)
class VerifierConfig:
    jwks_path: Path
    audience: str = DEFAULT_AUDIENCE
    issuers: tuple[str, ...] = ("core-app",)
    max_lifetime_s: float = 3600.0
    reload_s: float = 10.0


class TokenVerifier:
    def __init__(self, config: VerifierConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self._config = config
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at = float("-inf")
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._load()

    def _load(self) -> None:
        try:
            document = self._config.jwks_path.read_text(encoding="utf-8")
            keys = jwt.PyJWKSet.from_json(document).keys
        except (OSError, jwt.PyJWKSetError, jwt.InvalidKeyError, ValueError) as error:
            raise ValueError(f"cannot read the JWKS {self._config.jwks_path}: {error}") from None
        self._keys = {k.key_id: k for k in keys if k.key_id}
        self._loaded_at = self._clock.monotonic()

    def _key(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is None and self._clock.monotonic() - self._loaded_at >= self._config.reload_s:
            try:
                self._load()
            except ValueError:
                self._loaded_at = self._clock.monotonic()  # keep the keys we have; try again later
            key = self._keys.get(kid)
        if key is None:
            raise TokenRejected("unknown key id")
        return key

    def verify(self, token: str) -> str:
        """The caller (`iss/sub`) the token names, or TokenRejected."""
        now = self._clock.now().timestamp()
        cached = self._cache.get(token)
        if cached is not None:
            if cached[1] + LEEWAY_S > now:
                self._cache.move_to_end(token)
                return cached[0]
            del self._cache[token]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenRejected("malformed token") from None
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise TokenRejected("no key id")
        key = self._key(kid)
        try:
            # Times are checked below on the injected clock, not on pyjwt's.
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self._config.audience,
                issuer=list(self._config.issuers),
                options={
                    "require": ["exp", "iat", "iss", "sub", "aud"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidTokenError as error:
            raise TokenRejected(type(error).__name__) from None
        try:
            exp, iat = float(claims["exp"]), float(claims["iat"])
        except (TypeError, ValueError):
            raise TokenRejected("exp and iat must be numbers") from None
        if exp + LEEWAY_S <= now:
            raise TokenRejected("expired")
        if exp - iat > self._config.max_lifetime_s or iat > now + LEEWAY_S:
            raise TokenRejected("lifetime too long or issued in the future")
        subject = f"{claims['iss']}/{claims['sub']}"
        self._cache[token] = (subject, exp)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return subject


@dataclass(frozen=True)
class SignerConfig:
    private_key_pem: bytes
    key_id: str
    issuer: str = "core-app"
    subject: str = "core-app"
    audience: str = DEFAULT_AUDIENCE
    lifetime_s: float = 300.0


class TokenSigner:
    """Mints short-lived tokens, reusing one until a fifth of its life is left."""

    def __init__(self, config: SignerConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self._config = config
        self._clock = clock
        self._key: PrivateKeyTypes = load_pem_private_key(config.private_key_pem, password=None)
        self._token = ""
        self._renew_at = float("-inf")
        self._lock = threading.Lock()  # gRPC may ask for metadata from its own threads

    def token(self) -> str:
        with self._lock:
            now = self._clock.now().timestamp()
            if now >= self._renew_at:
                c = self._config
                claims = {"iss": c.issuer, "sub": c.subject, "aud": c.audience, "iat": int(now)}
                claims["exp"] = int(now + c.lifetime_s)
                algorithm = "ES256" if isinstance(self._key, ec.EllipticCurvePrivateKey) else "RS256"
                self._token = jwt.encode(claims, self._key, algorithm=algorithm, headers={"kid": c.key_id})  # type: ignore[arg-type]
                self._renew_at = now + c.lifetime_s * 0.8
            return self._token


class BearerCredentials(grpc.AuthMetadataPlugin):
    """Puts `authorization: Bearer <token>` on every call of a channel (with TLS only)."""

    def __init__(self, signer: TokenSigner) -> None:
        self._signer = signer

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        try:
            callback((("authorization", f"Bearer {self._signer.token()}"),), None)
        except Exception as error:  # noqa: BLE001 - reported to gRPC, which fails the call
            callback((), error)


def jwks(keys: dict[str, Any]) -> str:
    """A JWKS document of public keys by key id (`{kid: public_key}`), for tests and dev meshes."""
    documents = []
    for kid, public_key in keys.items():
        algorithm = jwt.algorithms.ECAlgorithm if isinstance(public_key, ec.EllipticCurvePublicKey) else None
        if algorithm is None:
            document = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public_key))
        else:
            document = json.loads(algorithm.to_jwk(public_key))
            document["alg"] = "ES256"
        document["kid"] = kid
        documents.append(document)
    return json.dumps({"keys": documents})
