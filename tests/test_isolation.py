"""Customer isolation: a quote request is read only with the access token its creation returned,
for the customer it was created for. Every other attempt gets the same PERMISSION_DENIED, which
says nothing about whether the id exists."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from osago.v1 import aggregator_service_pb2 as pb

from aggregator.access import DENIED, AccessDenied, AccessKeys, AccessTokens
from osago_common.clock import FakeClock
from osago_mesh.local import LocalMesh
from tests.conftest import load_example, start_mesh

KEYS = AccessKeys((("k1", b"k" * 32),))
TTL_S = 900.0


def test_a_token_opens_its_request_for_its_customer_until_it_expires() -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    tokens = AccessTokens(KEYS, TTL_S, clock)
    token = tokens.issue("r1", "core-app:alice")
    tokens.check(token, "r1", "core-app:alice")
    for request_id, customer in (("r2", "core-app:alice"), ("r1", "core-app:bob"), ("r1", "")):
        with pytest.raises(AccessDenied):
            tokens.check(token, request_id, customer)


async def test_expiry_is_exact_on_the_clock() -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    tokens = AccessTokens(KEYS, TTL_S, clock)
    token = tokens.issue("r1", "")
    await clock.advance(TTL_S - 1)
    tokens.check(token, "r1", "")
    await clock.advance(1)
    with pytest.raises(AccessDenied):
        tokens.check(token, "r1", "")


def test_rotation_a_token_of_the_previous_key_still_opens_a_token_of_a_dropped_key_does_not() -> None:
    clock = FakeClock()
    old = AccessTokens(KEYS, TTL_S, clock).issue("r1", "")
    rotated = AccessTokens(AccessKeys((("k2", b"n" * 32), *KEYS.keys)), TTL_S, clock)
    rotated.check(old, "r1", "")
    dropped = AccessTokens(AccessKeys((("k2", b"n" * 32),)), TTL_S, clock)
    with pytest.raises(AccessDenied):
        dropped.check(old, "r1", "")


def test_tampered_tokens_are_refused() -> None:
    clock = FakeClock()
    tokens = AccessTokens(KEYS, TTL_S, clock)
    token = tokens.issue("r1", "")
    header, payload, signature = token.split(".")
    other = AccessTokens(KEYS, TTL_S, clock).issue("r2", "")
    forged_payload = other.split(".")[1]
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","kid":"k1"}').decode().rstrip("=")
    for bad in (
        f"{header}.{forged_payload}.{signature}",  # another request's claims under this signature
        f"{header}.{payload}.{flipped}",
        f"{none_header}.{payload}.",
        "",
        "x" * 5000,
    ):
        with pytest.raises(AccessDenied):
            tokens.check(bad, "r1", "")


def test_keys_are_parsed_with_their_ids_and_refused_when_short() -> None:
    spec = "a:" + base64.b64encode(b"x" * 32).decode() + ",b:" + base64.b64encode(b"y" * 40).decode()
    assert AccessKeys.parse(spec).keys == (("a", b"x" * 32), ("b", b"y" * 40))
    assert AccessKeys.parse(AccessKeys.parse(spec).spec()) == AccessKeys.parse(spec)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        AccessKeys.parse("a:" + base64.b64encode(b"short").decode())


# --- over gRPC -----------------------------------------------------------------------------------


@pytest.fixture
async def mesh() -> AsyncIterator[LocalMesh]:
    async with start_mesh(n=2, time_scale=0.01, aggregator_overrides={"access_keys": KEYS}) as running:
        yield running


def customer(name: str) -> tuple[tuple[str, str], ...]:
    return (("x-osago-customer", name),)


async def denied(mesh: LocalMesh, request_id: str, token: str, metadata: tuple[tuple[str, str], ...] = ()) -> str:
    """Both reading calls fail PERMISSION_DENIED with one message; returns it."""
    messages = []
    with pytest.raises(grpc.aio.AioRpcError) as snapshot:
        await mesh.stub.GetQuoteRequest(
            pb.GetQuoteRequestRequest(request_id=request_id, access_token=token), timeout=5, metadata=metadata
        )
    messages.append((snapshot.value.code(), snapshot.value.details()))
    with pytest.raises(grpc.aio.AioRpcError) as stream:
        async for _ in mesh.stub.StreamQuoteEvents(
            pb.StreamQuoteEventsRequest(request_id=request_id, access_token=token), timeout=5, metadata=metadata
        ):
            pass
    messages.append((stream.value.code(), stream.value.details()))
    assert messages == [(grpc.StatusCode.PERMISSION_DENIED, DENIED)] * 2
    return DENIED


@pytest.mark.functional
async def test_only_the_creator_reads_a_request(mesh: LocalMesh) -> None:
    alice = customer("alice")
    created = await mesh.stub.CreateQuoteRequest(
        pb.CreateQuoteRequestRequest(application=load_example()), timeout=5, metadata=alice
    )
    request_id, token = created.quote_request.request_id, created.quote_request.access_token
    assert token
    snapshot = await mesh.stub.GetQuoteRequest(
        pb.GetQuoteRequestRequest(request_id=request_id, access_token=token), timeout=5, metadata=alice
    )
    assert snapshot.quote_request.request_id == request_id and not snapshot.quote_request.access_token

    # Bob with Alice's token, Bob with his own token for his own request on Alice's id, nobody's
    # token, a tampered token, an expired one: one and the same answer.
    bob = customer("bob")
    await denied(mesh, request_id, token, bob)
    bobs = await mesh.stub.CreateQuoteRequest(
        pb.CreateQuoteRequestRequest(application=load_example()), timeout=5, metadata=bob
    )
    await denied(mesh, request_id, bobs.quote_request.access_token, bob)
    await denied(mesh, request_id, "", alice)
    await denied(mesh, request_id, token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB"), alice)
    expired = AccessTokens(KEYS, TTL_S, FakeClock(datetime(2020, 1, 1, tzinfo=UTC))).issue(request_id, "dev:alice")
    await denied(mesh, request_id, expired, alice)


@pytest.mark.functional
async def test_a_guessed_id_and_an_unknown_id_are_answered_as_a_real_one_without_its_token(mesh: LocalMesh) -> None:
    created = await mesh.stub.CreateQuoteRequest(pb.CreateQuoteRequestRequest(application=load_example()), timeout=5)
    real, token = created.quote_request.request_id, created.quote_request.access_token
    # Ids are 128 random bits: a neighbour of a real one is as unknown as any other.
    assert len(real) == 32 and int(real, 16) >= 0
    guessed = f"{int(real, 16) ^ 1:032x}"
    answers = {await denied(mesh, rid, "") for rid in (real, guessed, uuid.uuid4().hex)}
    answers.add(await denied(mesh, guessed, token))  # a real token does not open another id
    assert answers == {DENIED}


@pytest.mark.functional
async def test_get_quotes_returns_the_token_on_its_first_answer_only(mesh: LocalMesh) -> None:
    responses = [
        r async for r in mesh.stub.GetQuotes(pb.GetQuotesRequest(application=load_example(), fresh=True), timeout=10)
    ]
    assert responses[0].access_token and not any(r.access_token for r in responses[1:])
    request_id = responses[0].event.request_id
    replay = [
        r.event
        async for r in mesh.stub.StreamQuoteEvents(
            pb.StreamQuoteEventsRequest(request_id=request_id, access_token=responses[0].access_token), timeout=10
        )
    ]
    assert replay == [r.event for r in responses]
