"""Service authentication over real TLS: a CA and certificates made for the test (trustme), the
mesh with mTLS on every link, bearer JWTs on the aggregator's JWT port. Who gets in, who is
refused, and how a rotated signing key is picked up."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import jwt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import aggregator_service_pb2_grpc, gateway_service_pb2, gateway_service_pb2_grpc

from aggregator.door import DoorProbe
from aggregator.service import CREATE_QUOTE_REQUEST, GET_QUOTES
from osago_client import QuoteClient
from osago_common.env import SettingsError
from osago_common.service_tokens import BearerCredentials, SignerConfig, TokenSigner, jwks
from osago_common.tls import TlsFiles, tls_from_env
from osago_mesh.devpki import JWT_KEY_ID, DevPki, make_dev_pki
from osago_mesh.local import LocalMesh, start_mesh
from tests.conftest import EXAMPLES, load_example
from web_bridge.service import BridgeService
from web_bridge.settings import BridgeSettings

pytestmark = pytest.mark.functional


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return make_dev_pki(tmp_path)


@pytest.fixture
async def secure(pki: DevPki) -> AsyncIterator[LocalMesh]:
    async with start_mesh(n=2, time_scale=0.01, pki=pki) as mesh:
        yield mesh


def aggregator_jwt_target(mesh: LocalMesh) -> str:
    return f"127.0.0.1:{mesh.aggregator.jwt_port}"


async def call_code(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """The code of a GetQuoteRequest for an unknown id: PERMISSION_DENIED once let in."""
    stub = aggregator_service_pb2_grpc.AggregatorServiceStub(channel)
    try:
        await stub.GetQuoteRequest(pb.GetQuoteRequestRequest(request_id="r"), timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def signer(pki: DevPki, **claims: object) -> TokenSigner:
    config = SignerConfig(private_key_pem=pki.jwt_signing_key.read_bytes(), key_id=JWT_KEY_ID)
    return TokenSigner(dataclasses.replace(config, **claims))  # type: ignore[arg-type]


def bearer_channel(pki: DevPki, target: str, token_signer: TokenSigner) -> grpc.aio.Channel:
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(pki.ca.read_bytes()),
        grpc.metadata_call_credentials(BearerCredentials(token_signer)),
    )
    return grpc.aio.secure_channel(target, credentials)


async def test_a_session_runs_end_to_end_over_mtls(secure: LocalMesh, pki: DevPki) -> None:
    async with QuoteClient(secure.target, credentials=pki.channel_credentials()) as client:
        events = [e async for e in client.get_quotes(load_example(), time_limit_s=10)]
    assert events[-1].HasField("session_finished")
    assert sum(e.HasField("quote_received") for e in events) + sum(e.HasField("insurer_failed") for e in events) == 2
    assert any(e.HasField("quote_received") for e in events)  # the aggregator reached the gateways over mTLS


async def test_the_aggregator_s_queue_probe_passes_its_own_mtls_door(secure: LocalMesh, pki: DevPki) -> None:
    """Load shedding times a call of the aggregator's own through the port its customers use: with
    mTLS it shows its own certificate and expects the name that certificate is issued for."""
    assert TlsFiles(pki.cert("aggregator"), pki.key("aggregator"), pki.ca).own_name() == "aggregator"
    queue = secure.aggregator.queue_wait
    assert queue is not None
    waited = await queue.probe_once()
    assert queue.reached is True and 0 < waited < 5
    # OSAGO_TLS_SERVER_NAME names the gateways' certificates; the probe expects its own name still.
    as_deployed = TlsFiles(pki.cert("aggregator"), pki.key("aggregator"), pki.ca, server_name="gateway")
    probe = DoorProbe(secure.target, GET_QUOTES, CREATE_QUOTE_REQUEST, "not the secret", as_deployed)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as through:  # past TLS, into the ordinary calls
            await probe()
        assert through.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await probe.close()


def test_the_name_a_certificate_is_issued_for(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    for identities, expected in (
        (("*.osago.svc.cluster.local", "localhost"), "self.osago.svc.cluster.local"),
        (("10.0.0.5",), "10.0.0.5"),
    ):
        issued = ca.issue_cert(*identities)
        issued.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
        issued.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
        assert TlsFiles(tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem").own_name() == expected


async def test_a_client_without_credentials_is_refused_by_every_service(secure: LocalMesh, pki: DevPki) -> None:
    targets = [secure.target, *secure.gateway_targets.values()]
    for target in targets:
        async with grpc.aio.insecure_channel(target) as plain:
            assert await call_code(plain) == grpc.StatusCode.UNAVAILABLE, target  # the handshake fails
        # TLS that trusts the server but shows no certificate of its own: refused as well.
        async with grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(pki.ca.read_bytes())) as anonymous:
            assert await call_code(anonymous) == grpc.StatusCode.UNAVAILABLE, target
    # The JWT port takes TLS without a client certificate, and then wants a token.
    async with grpc.aio.secure_channel(
        aggregator_jwt_target(secure), grpc.ssl_channel_credentials(pki.ca.read_bytes())
    ) as tokenless:
        assert await call_code(tokenless) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_gateway_refuses_a_certificate_it_does_not_trust(secure: LocalMesh, pki: DevPki) -> None:
    rogue = trustme.CA().issue_cert("aggregator", "localhost", "127.0.0.1", common_name="aggregator")
    credentials = grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), rogue.private_key_pem.bytes(), b"".join(b.bytes() for b in rogue.cert_chain_pems)
    )
    target = next(iter(secure.gateway_targets.values()))
    async with grpc.aio.secure_channel(target, credentials) as channel:
        stub = gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetGatewayStatus(gateway_service_pb2.GetGatewayStatusRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # no handshake with an unknown CA's certificate
    # Our CA's certificate, but not the aggregator's: the gateway names the refusal.
    async with grpc.aio.secure_channel(target, pki.channel_credentials("web-bridge")) as channel:
        stub = gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.GetGatewayStatus(gateway_service_pb2.GetGatewayStatusRequest(), timeout=5)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Health stays open to any certificate the CA issued (probes, Envoy).
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_valid_bearer_token_is_let_in_on_the_jwt_port(secure: LocalMesh, pki: DevPki) -> None:
    async with bearer_channel(pki, aggregator_jwt_target(secure), signer(pki)) as channel:
        stub = aggregator_service_pb2_grpc.AggregatorServiceStub(channel)
        created = await stub.CreateQuoteRequest(pb.CreateQuoteRequestRequest(application=load_example()), timeout=5)
        request_id = created.quote_request.request_id
        token = created.quote_request.access_token
        snapshot = await stub.GetQuoteRequest(
            pb.GetQuoteRequestRequest(request_id=request_id, access_token=token), timeout=5
        )
    assert snapshot.quote_request.request_id == request_id


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"audience": "someone-else"}, "another audience"),
        ({"issuer": "stranger"}, "an issuer not accepted"),
        ({"lifetime_s": -60.0}, "expired"),
        ({"lifetime_s": 7200.0}, "lives longer than allowed"),
        ({"key_id": "unknown"}, "an unknown key"),
    ],
)
async def test_an_unacceptable_bearer_token_is_unauthenticated(
    secure: LocalMesh, pki: DevPki, claims: dict[str, object], why: str
) -> None:
    async with bearer_channel(pki, aggregator_jwt_target(secure), signer(pki, **claims)) as channel:
        assert await call_code(channel) == grpc.StatusCode.UNAUTHENTICATED, why


async def test_a_token_signed_by_another_key_with_a_known_kid_is_refused(secure: LocalMesh, pki: DevPki) -> None:
    forger = ec.generate_private_key(ec.SECP256R1())
    pem = forger.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    forged = TokenSigner(SignerConfig(private_key_pem=pem, key_id=JWT_KEY_ID))
    async with bearer_channel(pki, aggregator_jwt_target(secure), forged) as channel:
        assert await call_code(channel) == grpc.StatusCode.UNAUTHENTICATED
    # And a token that says it needs no signature at all.
    unsigned = jwt.encode(
        {"iss": "core-app", "sub": "x", "aud": "osago-aggregator", "exp": time.time() + 60}, "", algorithm="none"
    )
    metadata = (("authorization", f"Bearer {unsigned}"),)
    async with grpc.aio.secure_channel(
        aggregator_jwt_target(secure), grpc.ssl_channel_credentials(pki.ca.read_bytes())
    ) as channel:
        stub = aggregator_service_pb2_grpc.AggregatorServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetQuoteRequest(pb.GetQuoteRequestRequest(request_id="r"), timeout=5, metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_rotated_key_is_picked_up_from_the_jwks_without_a_restart(secure: LocalMesh, pki: DevPki) -> None:
    new_key = ec.generate_private_key(ec.SECP256R1())
    pem = new_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    rotated = TokenSigner(SignerConfig(private_key_pem=pem, key_id="dev-2"))
    target = aggregator_jwt_target(secure)
    async with bearer_channel(pki, target, rotated) as channel:
        assert await call_code(channel) == grpc.StatusCode.UNAUTHENTICATED  # not published yet
    old = json.loads(pki.jwks.read_text(encoding="utf-8"))["keys"]
    new = json.loads(jwks({"dev-2": new_key.public_key()}))["keys"]
    pki.jwks.write_text(json.dumps({"keys": old + new}), encoding="utf-8")
    async with bearer_channel(pki, target, rotated) as channel:
        assert await call_code(channel) == grpc.StatusCode.PERMISSION_DENIED  # let in; the id is not its
    async with bearer_channel(pki, target, signer(pki)) as channel:
        assert await call_code(channel) == grpc.StatusCode.PERMISSION_DENIED  # the old key still works


async def test_web_bridge_reaches_the_aggregator_over_mtls_with_its_own_certificate(
    secure: LocalMesh, pki: DevPki
) -> None:
    tls = TlsFiles(pki.cert("web-bridge"), pki.key("web-bridge"), pki.ca)
    bridge = BridgeService(BridgeSettings(aggregator_target=secure.target, port=0, tls=tls))
    await bridge.start()
    try:
        async with aiohttp.ClientSession() as http:
            body = (EXAMPLES / "moscow-young-driver.json").read_bytes()
            headers = {"Content-Type": "application/json"}
            async with http.post(f"{bridge.url}/osago/quotes", data=body, headers=headers) as response:
                assert response.status == 201, await response.text()
            async with http.get(f"{bridge.url}/readyz") as ready:
                assert ready.status == 200
    finally:
        await bridge.stop()


def test_a_service_refuses_to_start_without_tls_unless_in_the_dev_mode(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="TLS is required"):
        tls_from_env({})
    assert tls_from_env({"OSAGO_DEV_INSECURE": "true"}) is None
    with pytest.raises(SettingsError, match="OSAGO_TLS_KEY, OSAGO_TLS_CA must be set too"):
        tls_from_env({"OSAGO_TLS_CERT": "x"})
    with pytest.raises(SettingsError, match="cannot read"):
        tls_from_env({"OSAGO_TLS_CERT": str(tmp_path / "none"), "OSAGO_TLS_KEY": "k", "OSAGO_TLS_CA": "c"})
