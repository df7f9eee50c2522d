"""A caller's credentials from its environment (osago_client.credentials), and the bearer tokens
it signs, checked by the aggregator's verifier on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from osago_client.credentials import credentials_from_env
from osago_common.clock import FakeClock
from osago_common.env import SettingsError
from osago_common.service_tokens import SignerConfig, TokenRejected, TokenSigner, TokenVerifier, VerifierConfig
from osago_mesh.devpki import JWT_KEY_ID, DevPki, make_dev_pki


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return make_dev_pki(tmp_path)


def test_without_a_ca_the_channel_is_plaintext() -> None:
    assert credentials_from_env({}) == (None, ())


def test_mtls_and_a_bearer_token_and_a_server_name_come_from_the_environment(pki: DevPki) -> None:
    env = {**pki.client_env(), "OSAGO_TLS_SERVER_NAME": "osago-aggregator"}
    credentials, options = credentials_from_env(env)
    assert credentials is not None and options == (("grpc.ssl_target_name_override", "osago-aggregator"),)
    with_jwt = {"OSAGO_TLS_CA": str(pki.ca), "OSAGO_JWT_SIGNING_KEY": str(pki.jwt_signing_key), "OSAGO_JWT_KEY_ID": "k"}
    assert credentials_from_env(with_jwt)[0] is not None


def test_half_a_client_certificate_or_a_missing_file_is_named(pki: DevPki, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="OSAGO_TLS_CERT and OSAGO_TLS_KEY"):
        credentials_from_env({"OSAGO_TLS_CA": str(pki.ca), "OSAGO_TLS_CERT": str(pki.cert("core-app"))})
    with pytest.raises(SettingsError, match="OSAGO_TLS_CA"):
        credentials_from_env({"OSAGO_TLS_CA": str(tmp_path / "missing.pem")})


async def test_a_signed_token_is_reused_then_renewed_and_verified_until_it_expires(pki: DevPki) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    signer = TokenSigner(SignerConfig(pki.jwt_signing_key.read_bytes(), JWT_KEY_ID, lifetime_s=300), clock)
    verifier = TokenVerifier(VerifierConfig(pki.jwks), clock)
    first = signer.token()
    assert verifier.verify(first) == "core-app/core-app"
    await clock.advance(200)
    assert signer.token() == first  # reused within four fifths of its life
    await clock.advance(41)
    renewed = signer.token()
    assert renewed != first and verifier.verify(renewed) == "core-app/core-app"
    await clock.advance(300 - 241 + 31)  # the first is past its expiry and the leeway
    with pytest.raises(TokenRejected, match="expired"):
        verifier.verify(first)
    with pytest.raises(TokenRejected, match="malformed"):
        verifier.verify("not a token")
