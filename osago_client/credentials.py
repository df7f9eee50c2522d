"""A caller's credentials toward the aggregator, from the environment (the CLI, benchmarks, and
any core-app process using QuoteClient):

| variable | meaning |
|---|---|
| `OSAGO_TLS_CA` | the CA the aggregator's certificate chains to: TLS on |
| `OSAGO_TLS_CERT` / `OSAGO_TLS_KEY` | a client certificate (mTLS on the aggregator's main port) |
| `OSAGO_TLS_SERVER_NAME` | the name expected in the aggregator's certificate, when not the target's host |
| `OSAGO_JWT_SIGNING_KEY` | a PEM private key: every call carries a bearer JWT signed with it (the aggregator's JWT port) |
| `OSAGO_JWT_KEY_ID` / `OSAGO_JWT_ISSUER` / `OSAGO_JWT_SUBJECT` / `OSAGO_JWT_AUDIENCE` | its `kid`, `iss`, `sub` (default `core-app`) and `aud` (default `osago-aggregator`) |

Without `OSAGO_TLS_CA` the channel is plaintext (a dev mesh).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import grpc

from osago_common.env import SettingsError, env_str
from osago_common.grpc_options import Options
from osago_common.service_tokens import DEFAULT_AUDIENCE, BearerCredentials, SignerConfig, TokenSigner


def _read(env: Mapping[str, str], name: str) -> bytes | None:
    path = env.get(name)
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise SettingsError(f"{name}: cannot read {path}: {error.strerror}") from None


def credentials_from_env(env: Mapping[str, str]) -> tuple[grpc.ChannelCredentials | None, Options]:
    """Channel credentials and options for the aggregator, or (None, ()) for plaintext."""
    ca = _read(env, "OSAGO_TLS_CA")
    if ca is None:
        return None, ()
    cert, key = _read(env, "OSAGO_TLS_CERT"), _read(env, "OSAGO_TLS_KEY")
    if (cert is None) != (key is None):
        raise SettingsError("OSAGO_TLS_CERT and OSAGO_TLS_KEY go together")
    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    signing_key = _read(env, "OSAGO_JWT_SIGNING_KEY")
    if signing_key is not None:
        signer = TokenSigner(
            SignerConfig(
                private_key_pem=signing_key,
                key_id=env_str(env, "OSAGO_JWT_KEY_ID"),
                issuer=env_str(env, "OSAGO_JWT_ISSUER", "core-app"),
                subject=env_str(env, "OSAGO_JWT_SUBJECT", "core-app"),
                audience=env_str(env, "OSAGO_JWT_AUDIENCE", DEFAULT_AUDIENCE),
            )
        )
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.metadata_call_credentials(BearerCredentials(signer))
        )
    name = env.get("OSAGO_TLS_SERVER_NAME", "")
    return credentials, ((("grpc.ssl_target_name_override", name),) if name else ())
