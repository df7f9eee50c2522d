"""The gateway's resilience over real HTTP and gRPC: real GatewayService servers on port 0 in front
of small aiohttp insurers written here, and two replicas sharing one quota in a private Redis.

Waits the gateway makes (breaker open time, Retry-After, polls) run on a FakeClock where they
matter; what happened is read from counters (the insurer's requests, the gateway's status)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import redis.asyncio
from aiohttp import web
from osago.v1 import gateway_service_pb2, gateway_service_pb2_grpc, quote_pb2

from insurer_gateway.service import RATE_LIMIT_KEY_PREFIX, GatewayService
from insurer_gateway.settings import GatewaySettings
from osago_common.clock import SYSTEM_CLOCK, Clock, FakeClock
from osago_mesh.servers import redis_server
from tests.conftest import serve_app
from tests.test_gateway_offers import OFFER
from tests.test_gateway_service import make_application

# The dev mode (plaintext): these tests are about the other settings.
DEV_ENV = {"OSAGO_DEV_INSECURE": "true"}

pytestmark = pytest.mark.functional

PATH = "/insurers/alfa/api/v1/applications"
CIRCUIT_OPEN = quote_pb2.FAILURE_REASON_CIRCUIT_OPEN


@dataclass
class FakeInsurer:
    """A "rest" insurer whose behaviour the test switches: "ok" (an offer at the first poll),
    "fail" (503), "refuse" (400 data refused), "hang" (never answers), "lose_first" (makes the
    application but answers its first create with 503), "429_once" (one 429 with Retry-After)."""

    mode: str = "ok"
    applications: dict[str, str] = field(default_factory=dict)
    requests: int = 0  # every request, creates and polls
    creates: int = 0

    async def create(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.creates += 1
        if self.mode == "fail":
            return web.json_response({"error": "maintenance"}, status=503)
        if self.mode == "refuse":
            return web.json_response({"error": "unknown VIN", "field": "vehicle.vin"}, status=400)
        if self.mode == "hang":
            await asyncio.Event().wait()
        if self.mode == "429_once" and self.creates == 1:
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "1"})
        key = request.headers["Idempotency-Key"]
        application_id = self.applications.setdefault(key, f"APP-{len(self.applications) + 1}")
        if self.mode == "lose_first" and self.creates == 1:
            return web.json_response({"error": "gateway timeout"}, status=503)
        return web.json_response(
            {"applicationId": application_id, "status": "PROCESSING", "estimatedReadyInMs": 10}, status=201
        )

    async def poll(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.mode == "fail":
            return web.json_response({"error": "maintenance"}, status=503)
        offer = dict(OFFER, offerId=f"OFFER-{request.match_info['id']}")
        return web.json_response({"status": "QUOTED", "offer": offer})


@contextlib.asynccontextmanager
async def serve(insurer: FakeInsurer) -> AsyncIterator[str]:
    """Serves the insurer on a free port; yields its base URL."""
    app = web.Application()
    app.router.add_post(PATH, insurer.create)
    app.router.add_get(PATH + "/{id}", insurer.poll)
    async with serve_app(app) as url:
        yield f"{url}/insurers/alfa"


def dead_url() -> str:
    """A localhost port nothing listens on: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/insurers/alfa"


@dataclass
class Gateway:
    service: GatewayService
    stub: gateway_service_pb2_grpc.InsurerGatewayServiceStub

    async def offer(self, request_id: str, timeout: float = 10.0) -> list[gateway_service_pb2.RequestOfferResponse]:
        req = gateway_service_pb2.RequestOfferRequest(request_id=request_id, application=make_application())
        return [u async for u in self.stub.RequestOffer(req, timeout=timeout)]

    async def status(self) -> gateway_service_pb2.GetGatewayStatusResponse:
        return await self.stub.GetGatewayStatus(gateway_service_pb2.GetGatewayStatusRequest())


@contextlib.asynccontextmanager
async def gateway(
    base_url: str, env: dict[str, str] | None = None, clock: Clock = SYSTEM_CLOCK, **overrides: Any
) -> AsyncIterator[Gateway]:
    settings = GatewaySettings.from_env(
        DEV_ENV | {"OSAGO_GATEWAY_INSURER": "alfa", "OSAGO_GATEWAY_BASE_URL": base_url, **(env or {})}, **overrides
    )
    service = GatewayService(settings, clock)
    port = await service.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Gateway(service, gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel))
    finally:
        await service.stop(0)


def outcome(updates: list[gateway_service_pb2.RequestOfferResponse]) -> str | int:
    """ "offer", or the failure reason of the last update."""
    last = updates[-1]
    return "offer" if last.WhichOneof("update") == "offer" else int(last.failed.reason)


async def until(condition: Callable[[], bool]) -> None:
    """Waits (in short real steps, a few seconds at most) for the gateway to reach a state."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


async def drive(
    clock: FakeClock, call: asyncio.Task[list[gateway_service_pb2.RequestOfferResponse]]
) -> list[gateway_service_pb2.RequestOfferResponse]:
    """Lets a call through a gateway on the fake clock finish: whenever the gateway waits on the
    clock (to poll), moves the clock 10 ms; meanwhile the HTTP exchanges run in real time."""
    while not call.done():
        if clock.sleepers:
            await clock.advance(0.01)
        else:
            await asyncio.sleep(0.001)
    return call.result()


BREAKER = {"OSAGO_GATEWAY_BREAKER_WINDOW": "5", "OSAGO_GATEWAY_BREAKER_MIN_CALLS": "5"}


async def test_a_dead_insurer_opens_the_breaker_then_answers_circuit_open_in_milliseconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with gateway(dead_url(), BREAKER) as gw:
        # Three attempts per request (two retries): the fifth failed call opens the breaker
        # during the second request, whose last retry is refused without a call.
        first = await gw.offer("req-1")
        assert outcome(first) == quote_pb2.FAILURE_REASON_UNAVAILABLE
        assert outcome(await gw.offer("req-2")) == CIRCUIT_OPEN
        status = await gw.status()
        assert status.breaker_state == gateway_service_pb2.BREAKER_STATE_OPEN
        assert status.retries_total == 3
        for i in range(20):
            updates = await gw.offer(f"req-open-{i}")
            assert [u.WhichOneof("update") for u in updates] == ["failed"]
            assert updates[0].failed.reason == CIRCUIT_OPEN
            assert updates[0].failed.message and "127.0.0.1" not in updates[0].failed.message
        # Each refused without an HTTP call: every one counted as rejected by the breaker.
        status = await gw.status()
        assert status.breaker_state == gateway_service_pb2.BREAKER_STATE_OPEN
        assert status.rejected_by_breaker_total == 21  # the refused retry, then 20 requests
        assert status.breaker_opened_total == 1
        assert (status.requests_total, status.failures_total, status.in_flight) == (22, 22, 0)
    # The line says what the calls did, not where they went (a refused connection).
    assert "circuit breaker: insurer=alfa closed -> open (last failed or slow call: create: POST: " in caplog.text
    assert "127.0.0.1" not in caplog.text


async def test_the_breaker_half_opens_after_the_wait_and_a_healthy_probe_closes_it(clock: FakeClock) -> None:
    insurer = FakeInsurer(mode="fail")
    one_attempt = {**BREAKER, "OSAGO_GATEWAY_RETRY_MAX_ATTEMPTS": "1"}
    async with serve(insurer) as url, gateway(url, one_attempt, clock, breaker_open_s=10.0) as gw:
        for i in range(5):  # the fifth failed call opens the breaker
            assert outcome(await gw.offer(f"req-{i}")) == quote_pb2.FAILURE_REASON_INSURER_ERROR
        assert (insurer.requests, (await gw.status()).breaker_state) == (5, gateway_service_pb2.BREAKER_STATE_OPEN)
        assert outcome(await gw.offer("req-open")) == CIRCUIT_OPEN
        assert insurer.requests == 5  # nothing reached the insurer
        insurer.mode = "ok"
        await clock.advance(9.9)
        assert outcome(await gw.offer("req-still-open")) == CIRCUIT_OPEN
        assert insurer.requests == 5
        await clock.advance(0.1)
        assert (await gw.status()).breaker_state == gateway_service_pb2.BREAKER_STATE_HALF_OPEN
        probe = asyncio.create_task(gw.offer("req-probe"))
        assert outcome(await drive(clock, probe)) == "offer"  # create and poll: the two probes
        assert insurer.requests == 7
        assert (await gw.status()).breaker_state == gateway_service_pb2.BREAKER_STATE_CLOSED


async def test_a_create_whose_answer_was_lost_is_retried_into_one_insurer_application() -> None:
    insurer = FakeInsurer(mode="lose_first")
    async with serve(insurer) as url, gateway(url) as gw:
        updates = await gw.offer("req-lost")
        assert outcome(updates) == "offer"
        assert updates[0].accepted.insurer_application_id == "APP-1"
        assert insurer.creates == 2 and list(insurer.applications) == ["req-lost:alfa"]
        assert (await gw.status()).retries_total == 1


async def test_a_429_is_retried_after_its_retry_after(clock: FakeClock) -> None:
    insurer = FakeInsurer(mode="429_once")  # Retry-After: 1
    async with serve(insurer) as url, gateway(url, clock=clock) as gw:
        call = asyncio.create_task(gw.offer("req-429"))
        await until(lambda: clock.sleepers == 1)  # the retry waits on the clock
        assert insurer.creates == 1
        await clock.advance(0.999)
        assert (insurer.creates, clock.sleepers) == (1, 1)  # not retried before the Retry-After
        await clock.advance(0.001)
        updates = await drive(clock, call)
        assert outcome(updates) == "offer"
        assert insurer.creates == 2
        status = await gw.status()
        assert (status.retries_total, status.breaker_state) == (1, gateway_service_pb2.BREAKER_STATE_CLOSED)


async def test_a_full_bulkhead_fails_the_next_call_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    insurer = FakeInsurer(mode="hang")
    env = {"OSAGO_GATEWAY_MAX_IN_FLIGHT": "1", "OSAGO_GATEWAY_HTTP_TIMEOUT_S": "60"}
    async with serve(insurer) as url, gateway(url, env) as gw:
        hanging = asyncio.create_task(gw.offer("req-hang", timeout=60.0))
        await until(lambda: insurer.requests == 1)
        updates = await gw.offer("req-next")
        # Refused by the bulkhead while the first call still holds the only slot, not queued
        # behind it (it would then have reached the insurer, or ended DEADLINE).
        assert not hanging.done()
        assert outcome(updates) == quote_pb2.FAILURE_REASON_UNAVAILABLE
        [refused] = [r for r in caplog.records if getattr(r, "request_id", None) == "req-next"]
        assert refused.getMessage() == "no offer: reason=UNAVAILABLE detail=create: 1 calls in flight"
        assert getattr(refused, "insurer_id", None) == "alfa"
        assert insurer.requests == 1
        hanging.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hanging


# --- one quota shared by two replicas -------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


# One token per 100 s: within a test only the burst is ever admitted, so the counts are exact
# whatever the machine's speed; a call that would have to wait for a token is refused at once.
BURST = 5
QUOTA = {
    "OSAGO_GATEWAY_RATE_LIMIT_PER_S": "0.01",
    "OSAGO_GATEWAY_RATE_LIMIT_BURST": str(BURST),
    "OSAGO_GATEWAY_RETRY_MAX_ATTEMPTS": "1",
}


async def test_two_replicas_sharing_redis_never_exceed_the_quota_together(redis_url: str) -> None:
    insurer = FakeInsurer(mode="refuse")  # one fast HTTP call per RequestOffer, answered DECLINED
    env = {**QUOTA, "OSAGO_REDIS_URL": redis_url}
    async with serve(insurer) as url, gateway(url, env) as one, gateway(url, env) as two:
        requests = [gw.offer(f"req-{i}", timeout=30.0) for i in range(80) for gw in (one, two)]
        results = collections.Counter(outcome(updates) for updates in await asyncio.gather(*requests))
        # The burst once for both replicas together; two separate quotas would have let through
        # twice as many.
        assert results == {quote_pb2.FAILURE_REASON_DECLINED: BURST, quote_pb2.FAILURE_REASON_RATE_LIMITED: 160 - BURST}
        assert insurer.requests == BURST
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            assert await client.exists(f"{RATE_LIMIT_KEY_PREFIX}alfa") == 1
        finally:
            await client.aclose()


async def test_with_redis_down_each_replica_keeps_to_its_own_quota(caplog: pytest.LogCaptureFixture) -> None:
    insurer = FakeInsurer(mode="refuse")
    dead_redis = "redis://" + dead_url().split("//", 1)[1].split("/", 1)[0] + "/0"
    async with serve(insurer) as url, gateway(url, {**QUOTA, "OSAGO_REDIS_URL": dead_redis}) as gw:
        results = collections.Counter(
            outcome(u) for u in await asyncio.gather(*(gw.offer(f"r-{i}", timeout=30.0) for i in range(30)))
        )
        # Answered, not an internal error: the process's own quota admits its burst.
        assert results == {quote_pb2.FAILURE_REASON_DECLINED: BURST, quote_pb2.FAILURE_REASON_RATE_LIMITED: 30 - BURST}
        assert insurer.requests == BURST
    assert "using this process's quota" in caplog.text
