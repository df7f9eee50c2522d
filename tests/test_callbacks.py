"""Insurers that call back, end to end over real servers: the gateway's callback endpoint over
HTTP, the inbox shared through a private redis-server, the whole mesh with insurers of all three
dialects (and the simulator's callback faults), and two gateway replicas where the callback lands
on the one not holding the stream."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import grpc
import pytest
import redis.asyncio
from google.protobuf import duration_pb2
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import events_pb2, gateway_service_pb2, gateway_service_pb2_grpc

from insurer_gateway.callback_http import CallbackServer
from insurer_gateway.dialects import PushDialect
from insurer_gateway.inbox import CallbackInbox, InboxUnavailable, LocalInbox, RedisInbox, unseal
from insurer_gateway.service import GatewayService
from insurer_gateway.settings import GatewaySettings
from insurer_sim.config import SimConfig
from insurer_sim.profiles import profile
from insurer_sim.server import SimServer
from osago_common.clock import SYSTEM_CLOCK, FakeClock
from osago_mesh.local import LocalMesh, start_mesh
from osago_mesh.servers import redis_server
from tests.conftest import load_example
from tests.test_gateway_callbacks import SECRET, completed
from tests.test_gateway_offers import DEV_ENV
from tests.test_gateway_service import make_application

pytestmark = pytest.mark.functional

Json = dict[str, Any]
# The tests that need sovcom's offer: its 2 % of underwriting declines would fail them by chance.
NEVER_DECLINES = {"sovcom": {"decline_rate": 0.0}}
# How long the tests wait for something that happens within milliseconds (never asserted on).
PATIENCE_S = 10.0


def sign(body: bytes, timestamp: int, secret: str = SECRET) -> dict[str, str]:
    """The push dialect's signature headers, computed here as its documentation says."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Webhook-Timestamp": str(timestamp),
        "X-Webhook-Signature": f"sha256={digest}",
    }


async def post(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Json]:
    async with http.post(url, data=body, headers=headers) as response:
        assert response.content_type == "application/json"
        answer: Json = await response.json()
        return response.status, answer


async def get(http: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with http.get(url, params=params) as response:
        response.raise_for_status()
        return await response.json()


async def until(check: Any, what: str) -> Any:
    """Waits (a few ms at a time) for `check()` to answer something truthy; fails after PATIENCE_S."""
    for _ in range(int(PATIENCE_S / 0.01)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


# --- the endpoint over HTTP -----------------------------------------------------------------

ENDPOINT_SETTINGS = GatewaySettings(
    insurer_id="sovcom", insurer_name="Sovcom", dialect="push", base_url="http://insurer", callback_secret=SECRET
)


@contextlib.asynccontextmanager
async def endpoint(inbox: CallbackInbox, clock: FakeClock) -> AsyncIterator[CallbackServer]:
    server = CallbackServer(ENDPOINT_SETTINGS, PushDialect(), inbox, clock)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_the_endpoint_accepts_a_signed_callback_once_and_refuses_every_forgery(
    http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    inbox = LocalInbox(clock, keep_s=600, window_s=300)
    async with endpoint(inbox, clock) as server:
        url = server.url()
        assert url == f"http://127.0.0.1:{server.port}/callbacks/sovcom"
        now = int(clock.now().timestamp())
        body = completed("Q-1")
        with inbox.waiting("Q-1") as arrival:
            assert await post(http, url, body, sign(body, now)) == (200, {"status": "accepted"})
            # The body as it came, with the moment the endpoint accepted it.
            assert unseal(arrival.result()) == (body, clock.now())
        # Forgeries change nothing: each is refused, naming the header at fault.
        forged = completed("Q-2", premium={"amount_minor": 1, "currency": "RUB"})
        refusals = [
            (forged, sign(body, now), "X-Webhook-Signature"),  # another body's valid signature
            (forged, sign(forged, now, "not-the-shared-secret-at-all"), "X-Webhook-Signature"),
            (forged, sign(forged, now - 301), "X-Webhook-Timestamp"),
            (forged, sign(forged, now + 301), "X-Webhook-Timestamp"),
            (forged, {"Content-Type": "application/json"}, "X-Webhook-Signature"),
        ]
        for raw, headers, field in refusals:
            status, answer = await post(http, url, raw, headers)
            assert (status, answer["field"]) == (401, field), answer
        assert await inbox.stored("Q-2") is None
        # The same signed callback again is a replay, refused; signed anew, a duplicate: accepted,
        # and nothing changes.
        status, _ = await post(http, url, body, sign(body, now))
        assert status == 409
        again = completed("Q-1", number="SC-other")
        assert await post(http, url, again, sign(again, now + 1)) == (200, {"status": "duplicate"})
        stored = await inbox.stored("Q-1")
        assert stored is not None and unseal(stored) == (body, clock.now())
        # Validly signed but off the schema; another insurer's path; a wrong method; too large.
        junk = b'{"event": "quotation.completed"}'
        status, answer = await post(http, url, junk, sign(junk, now))
        assert status == 400 and "'quotation_id'" in answer["error"]
        status, _ = await post(http, url.replace("sovcom", "alfa"), body, sign(body, now))
        assert status == 404
        async with http.get(url) as response:
            assert (response.status, response.content_type) == (405, "application/json")
        huge = b" " * (300 * 1024)
        status, _ = await post(http, url, huge, sign(huge, now))
        assert status == 413
        assert server.counts == {
            "accepted": 1,
            "duplicate": 1,
            "mismatch": 2,
            "stale": 2,
            "unsigned": 1,
            "replayed": 1,
            "bad_body": 1,
            "wrong_insurer": 1,
        }


async def test_without_redis_a_callback_is_refused_503_unless_its_stream_is_held_here(
    http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # A Redis nobody listens on.
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2)
    inbox = RedisInbox(client, client, "sovcom", clock, keep_s=600, window_s=300, retry_s=1.0)
    try:
        async with endpoint(inbox, clock) as server:
            now = int(clock.now().timestamp())
            body = completed("Q-1")
            async with http.post(server.url(), data=body, headers=sign(body, now)) as response:
                assert (response.status, response.headers["Retry-After"]) == (503, "1")
            with inbox.waiting("Q-2") as arrival:
                assert await inbox.deliver("Q-2", b"{}") is True
                assert arrival.result() == b"{}"
            with pytest.raises(InboxUnavailable):
                await inbox.deliver("Q-3", b"{}")
            assert await inbox.stored("Q-2") is None
    finally:
        await client.aclose()


# --- the inbox shared through Redis ---------------------------------------------------------


@contextlib.asynccontextmanager
async def shared_inbox(url: str, start: bool = True) -> AsyncIterator[RedisInbox]:
    commands = redis.asyncio.Redis.from_url(url)
    listener = redis.asyncio.Redis.from_url(url)
    inbox = RedisInbox(commands, listener, "sovcom", SYSTEM_CLOCK, keep_s=600, window_s=300, retry_s=0.05)
    try:
        if start:
            await inbox.start()
            await asyncio.wait_for(inbox.listening.wait(), PATIENCE_S)
        yield inbox
    finally:
        await inbox.close()
        await commands.aclose()
        await listener.aclose()


async def test_a_callback_stored_through_one_replica_wakes_the_stream_held_by_another(redis_db: str) -> None:
    async with shared_inbox(redis_db) as holder, shared_inbox(redis_db) as other:
        with holder.waiting("Q-1") as arrival:
            assert await other.deliver("Q-1", b"the body") is True
            assert await asyncio.wait_for(arrival, PATIENCE_S) == b"the body"
        assert await other.deliver("Q-1", b"again") is False
        assert await holder.stored("Q-1") == b"the body"
        # The replay memory is shared as well.
        assert await holder.first_sight("Q-1:sig") is True
        assert await other.first_sight("Q-1:sig") is False


async def test_a_replica_that_subscribes_late_finds_what_came_meanwhile(redis_db: str) -> None:
    async with shared_inbox(redis_db) as other, shared_inbox(redis_db, start=False) as late:
        with late.waiting("Q-1") as arrival:
            await other.deliver("Q-1", b"the body")
            await late.start()
            assert await asyncio.wait_for(arrival, PATIENCE_S) == b"the body"


async def test_when_redis_goes_away_the_subscription_is_lost_and_streams_held_here_still_get_theirs() -> None:
    with redis_server() as url:
        async with shared_inbox(url) as inbox:
            # Redis goes away (its server is stopped under the inbox).
            host_port = url.removeprefix("redis://").split("/")[0]
            async with redis.asyncio.Redis.from_url(url) as admin:
                with contextlib.suppress(redis.RedisError):
                    await admin.shutdown(nosave=True)

            async def lost() -> bool:
                return not inbox.listening.is_set()

            await until(lost, f"the inbox noticed Redis at {host_port} went away")
            with inbox.waiting("Q-1") as arrival:
                assert await inbox.deliver("Q-1", b"the body") is True
                assert arrival.result() == b"the body"
            with pytest.raises(InboxUnavailable):
                await inbox.deliver("Q-2", b"the body")
            assert await inbox.stored("Q-1") is None


# --- the whole mesh -------------------------------------------------------------------------


async def session(mesh: LocalMesh, limit_s: float = 10.0) -> list[events_pb2.QuoteEvent]:
    seconds, fraction = divmod(limit_s, 1)
    request = pb.GetQuotesRequest(
        application=load_example(),
        time_limit=duration_pb2.Duration(seconds=int(seconds), nanos=round(fraction * 1e9)),
        fresh=True,  # the insurers asked anew, never the cache of results
    )
    return [response.event async for response in mesh.stub.GetQuotes(request, timeout=30)]


def delivered(events: list[events_pb2.QuoteEvent]) -> list[tuple[str, str, int]]:
    return sorted(
        (e.quote_received.quote.insurer_id, e.quote_received.quote.offer_id, e.quote_received.quote.premium_kopecks)
        for e in events
        if e.HasField("quote_received")
    )


async def issued(mesh: LocalMesh, reference: str) -> list[tuple[str, str, int]]:
    """The offers the simulator issued for the request, once every callback it was sending is
    done: a callback is issued when the gateway's 2xx reaches the simulator, a moment after the
    gateway may have passed the offer on."""

    async def settled() -> bool:
        return bool((await get(mesh.http, f"{mesh.sim_url}/_sim/callbacks"))["pending"] == 0)

    await until(settled, "the simulator's callbacks were all delivered or given up")
    return sorted((o["insurer_id"], o["offer_id"], o["premium_kopecks"]) for o in await mesh.ledger(reference))


async def applications(mesh: LocalMesh, reference: str) -> dict[str, Json]:
    """Insurer id -> the simulator's counts of the request's application there."""
    stats = await get(mesh.http, f"{mesh.sim_url}/_sim/stats", reference=reference)
    return {a["insurer_id"]: a for a in stats["applications"]}


def counts(mesh: LocalMesh, insurer_id: str) -> dict[str, int]:
    """What became of the callbacks the insurer's gateway received."""
    callbacks = mesh.gateways[insurer_id].callbacks
    assert callbacks is not None
    return dict(callbacks.counts)


async def attempts(mesh: LocalMesh, reference: str) -> list[Json]:
    answer = await get(mesh.http, f"{mesh.sim_url}/_sim/callbacks", reference=reference)
    found: list[Json] = answer["attempts"]
    return found


async def test_a_session_over_all_three_dialects_delivers_exactly_the_ledgers_offers() -> None:
    async with start_mesh(ids=["alfa", "ingos", "sovcom", "energo"], time_scale=0.01) as mesh:
        events = await session(mesh)
        request_id = events[0].request_id
        assert events[-1].session_finished.status == events_pb2.SESSION_STATUS_COMPLETED
        assert delivered(events) == await issued(mesh, request_id), "offers lost, duplicated or invented"
        asked = await applications(mesh, request_id)
        # Polled: the create-then-poll dialects; called back, with no poll: the push ones.
        assert asked["alfa"]["polls"] >= 1 and asked["ingos"]["polls"] >= 1
        for insurer in ("sovcom", "energo"):
            assert (asked[insurer]["polls"], asked[insurer]["callbacks"]) == (0, 1), insurer
            assert counts(mesh, insurer) == {"accepted": 1}
        answered = {e.quote_received.quote.insurer_id for e in events if e.HasField("quote_received")}
        answered |= {e.insurer_failed.insurer_id for e in events if e.HasField("insurer_failed")}
        assert answered == {"alfa", "ingos", "sovcom", "energo"}


async def test_the_callback_insurers_offer_arrives_the_moment_it_is_issued_with_zero_polls() -> None:
    async with start_mesh(ids=["sovcom"], time_scale=0.01, sim_overrides=NEVER_DECLINES) as mesh:
        for _ in range(3):
            events = await session(mesh)
            request_id = events[0].request_id
            assert delivered(events) == await issued(mesh, request_id)
            ledger = await mesh.ledger(request_id)
            assert (await applications(mesh, request_id))["sovcom"]["polls"] == 0
            [quote] = [e for e in events if e.HasField("quote_received")]
            # The ledger issued it when the gateway accepted the callback; the customer's stream
            # had it right after (its event time, from the aggregator's clock, is not earlier).
            issued_at = datetime.fromisoformat(ledger[0]["issued_at"]).timestamp()
            assert quote.time.ToDatetime().timestamp() >= issued_at - 0.001
        assert counts(mesh, "sovcom") == {"accepted": 3}


@pytest.mark.parametrize(("mode", "results"), [("callback_never", {"withheld"}), ("callback_target_down", {"failed"})])
async def test_with_no_callback_coming_the_safety_net_poll_gets_the_offer_before_the_deadline(
    mode: str, results: set[str]
) -> None:
    async with start_mesh(ids=["sovcom"], time_scale=0.01, sim_overrides=NEVER_DECLINES) as mesh:
        await mesh.set_fault("sovcom", mode)
        events = await session(mesh, limit_s=2.0)
        request_id = events[0].request_id
        assert delivered(events) == await issued(mesh, request_id)
        assert len(delivered(events)) == 1
        # Nothing learned yet, so the first safety-net poll would come after the session: the
        # last one, just before the deadline, found it.
        assert (await applications(mesh, request_id))["sovcom"]["polls"] == 1
        assert {a["result"] for a in await attempts(mesh, request_id)} == results
        finished = events[-1]
        assert finished.session_finished.status == events_pb2.SESSION_STATUS_COMPLETED
        started = events[0].time.ToDatetime().timestamp()
        assert finished.time.ToDatetime().timestamp() - started < 2.0


async def test_a_callback_sent_twice_is_delivered_once() -> None:
    async with start_mesh(ids=["sovcom"], time_scale=0.01, sim_overrides=NEVER_DECLINES) as mesh:
        await mesh.set_fault("sovcom", "callback_twice")
        events = await session(mesh)
        request_id = events[0].request_id
        assert delivered(events) == await issued(mesh, request_id)
        assert len(delivered(events)) == 1
        sent = await attempts(mesh, request_id)
        assert [(a["result"], a["status"]) for a in sent] == [("accepted", 200), ("accepted", 200)]
        assert len({a["delivery_id"] for a in sent}) == 2
        assert counts(mesh, "sovcom") == {"accepted": 1, "duplicate": 1}


async def test_callbacks_with_a_bad_signature_are_refused_and_the_safety_net_poll_gets_the_offer() -> None:
    async with start_mesh(ids=["sovcom"], time_scale=0.01, sim_overrides=NEVER_DECLINES) as mesh:
        await mesh.set_fault("sovcom", "callback_bad_signature")
        events = await session(mesh, limit_s=2.0)
        request_id = events[0].request_id
        assert delivered(events) == await issued(mesh, request_id)
        assert len(delivered(events)) == 1
        sent = await attempts(mesh, request_id)
        assert sent and all((a["result"], a["status"], a["forged"]) == ("refused", 401, True) for a in sent)
        assert counts(mesh, "sovcom") == {"mismatch": len(sent)}
        assert (await applications(mesh, request_id))["sovcom"]["polls"] >= 1


async def test_a_forged_callback_is_refused_and_changes_nothing(http: aiohttp.ClientSession) -> None:
    async with start_mesh(ids=["sovcom"], time_scale=0.01, sim_overrides=NEVER_DECLINES) as mesh:
        # The real callback comes a second late, so the forgeries reach the gateway first.
        await mesh.set_fault("sovcom", "callback_late", delay_s=1.0)
        call = asyncio.ensure_future(session(mesh))

        async def created() -> list[Json]:
            found: list[Json] = (await get(http, f"{mesh.sim_url}/_sim/stats"))["applications"]
            return found

        [application] = await until(created, "the application was created")
        url = mesh.gateways["sovcom"].callback_url
        assert url is not None
        now = int(SYSTEM_CLOCK.now().timestamp())
        forged = completed(
            application["application_id"], number="FORGED", premium={"amount_minor": 1, "currency": "RUB"}
        )
        for headers in (sign(forged, now, secret="a-secret-someone-guessed"), {"Content-Type": "application/json"}):
            status, _ = await post(http, url, forged, headers)
            assert status == 401
        events = await call
        request_id = events[0].request_id
        assert delivered(events) == await issued(mesh, request_id)
        assert [offer_id for _, offer_id, _ in delivered(events)] != ["FORGED"]
        assert counts(mesh, "sovcom") == {"mismatch": 1, "unsigned": 1, "accepted": 1}


# --- two replicas ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def two_replicas(redis_url: str) -> AsyncIterator[tuple[SimServer, GatewayService, GatewayService]]:
    """The simulator playing sovcom, and two gateway replicas sharing Redis: the insurer is told
    to call the second back, whichever replica made the create."""
    async with contextlib.AsyncExitStack() as stack:
        sim = SimServer(SimConfig(insurers=(profile("sovcom"),), time_scale=0.01, seed=3, callback_secret=SECRET))
        await sim.start()
        stack.push_async_callback(sim.stop)
        settings = GatewaySettings.from_env(
            DEV_ENV
            | {
                "OSAGO_GATEWAY_INSURER": "sovcom",
                "OSAGO_GATEWAY_BASE_URL": sim.insurer_url("sovcom"),
                "OSAGO_GATEWAY_CALLBACK_SECRET": SECRET,
                "OSAGO_REDIS_URL": redis_url,
            }
        )
        other = GatewayService(settings)
        await other.start()
        stack.push_async_callback(other.stop, 0.1)
        assert other.callback_url is not None
        base = other.callback_url.removesuffix("/callbacks/sovcom")
        holder = GatewayService(dataclasses.replace(settings, callback_base_url=base))
        await holder.start()
        stack.push_async_callback(holder.stop, 0.1)
        for replica in (holder, other):
            assert isinstance(replica.inbox, RedisInbox)
            await asyncio.wait_for(replica.inbox.listening.wait(), PATIENCE_S)
        yield sim, holder, other


async def request_offer(
    port: int, request_id: str, stop_after_accepted: bool = False
) -> list[gateway_service_pb2.RequestOfferResponse]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel)
        request = gateway_service_pb2.RequestOfferRequest(request_id=request_id, application=make_application())
        updates = []
        async for update in stub.RequestOffer(request, timeout=30):
            updates.append(update)
            if stop_after_accepted and update.HasField("accepted"):
                break
        return updates


async def test_a_callback_landing_on_the_replica_not_holding_the_stream_still_delivers_the_offer(
    redis_db: str, http: aiohttp.ClientSession
) -> None:
    async with two_replicas(redis_db) as (sim, holder, other):
        assert holder.callback_url == other.callback_url  # the insurer calls the other replica
        updates = await request_offer(holder.port, "req-two-1")
        assert [u.WhichOneof("update") for u in updates] == ["accepted", "offer"]
        ledger = (await get(http, f"{sim.url}/_sim/ledger", reference="req-two-1"))["offers"]
        assert [(o["offer_id"], o["premium_kopecks"]) for o in ledger] == [
            (updates[-1].offer.offer_id, updates[-1].offer.premium_kopecks)
        ]
        assert other.callbacks is not None and holder.callbacks is not None
        assert (other.callbacks.counts, holder.callbacks.counts) == ({"accepted": 1}, {})
        stats = await get(http, f"{sim.url}/_sim/stats", reference="req-two-1")
        assert [a["polls"] for a in stats["applications"]] == [0]


async def test_a_resumed_stream_finds_the_callback_that_came_while_nobody_waited(
    redis_db: str, http: aiohttp.ClientSession
) -> None:
    async with two_replicas(redis_db) as (sim, holder, other):
        first = await request_offer(holder.port, "req-resume-1", stop_after_accepted=True)
        assert [u.WhichOneof("update") for u in first] == ["accepted"]

        async def accepted() -> bool:
            sent = (await get(http, f"{sim.url}/_sim/callbacks", reference="req-resume-1"))["attempts"]
            return any(a["result"] == "accepted" for a in sent)

        await until(accepted, "the callback was accepted")
        # The same request on the other replica resumes the insurer application (a replayed
        # create) and finds its outcome stored: no poll, no second application.
        again = await request_offer(other.port, "req-resume-1")
        assert [u.WhichOneof("update") for u in again] == ["accepted", "offer"]
        assert again[0].accepted.insurer_application_id == first[0].accepted.insurer_application_id
        stats = await get(http, f"{sim.url}/_sim/stats", reference="req-resume-1")
        assert (len(stats["applications"]), stats["applications"][0]["polls"]) == (1, 0)
        assert stats["insurers"]["sovcom"]["replays"] == 1
        ledger = (await get(http, f"{sim.url}/_sim/ledger", reference="req-resume-1"))["offers"]
        assert [o["offer_id"] for o in ledger] == [again[-1].offer.offer_id]
