"""One contract for both request stores: the embedded one and Postgres (a private server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from osago.v1 import events_pb2, quote_pb2

from aggregator.postgres import PostgresRequestStore, migrate, migrations
from aggregator.store import Lease, LeaseLost, MemoryRequestStore, RequestRecord, RequestStore

pytestmark = pytest.mark.functional

Status = events_pb2.SessionStatus
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TTL = 3.0


@pytest.fixture(params=["memory", "postgres"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RequestStore]:
    if request.param == "memory":
        yield MemoryRequestStore()
        return
    url = request.getfixturevalue("postgres_db")
    async with PostgresRequestStore.open(url) as pg:
        yield pg


def record(request_id: str, key: str = "", customer: str = "") -> RequestRecord:
    return RequestRecord(
        request_id=request_id,
        created_at=T0,
        deadline=T0 + timedelta(seconds=60),
        insurers=(("alfa", "AlfaStrakhovanie"), ("vsk", "VSK")),
        idempotency_key=key,
        fingerprint="f" * 64,
        customer_id=customer,
    )


def started(request_id: str) -> events_pb2.QuoteEvent:
    event = events_pb2.QuoteEvent(request_id=request_id, seq=1)
    event.time.FromDatetime(T0)
    event.session_started.insurers.add(insurer_id="alfa", insurer_name="AlfaStrakhovanie")
    return event


def offer(request_id: str, seq: int, insurer: str = "alfa", premium: int = 621_950) -> events_pb2.QuoteEvent:
    event = events_pb2.QuoteEvent(request_id=request_id, seq=seq)
    event.time.FromDatetime(T0 + timedelta(seconds=seq))
    event.quote_received.quote.CopyFrom(
        quote_pb2.Quote(insurer_id=insurer, insurer_name=insurer.upper(), offer_id=f"o-{seq}", premium_kopecks=premium)
    )
    return event


def declined(request_id: str, seq: int, insurer: str = "vsk") -> events_pb2.QuoteEvent:
    event = events_pb2.QuoteEvent(request_id=request_id, seq=seq)
    event.time.FromDatetime(T0 + timedelta(seconds=seq))
    event.insurer_failed.CopyFrom(
        events_pb2.InsurerFailed(
            insurer_id=insurer, reason=quote_pb2.FailureReason.FAILURE_REASON_DECLINED, message="no"
        )
    )
    return event


def finished(request_id: str, seq: int) -> events_pb2.QuoteEvent:
    event = events_pb2.QuoteEvent(request_id=request_id, seq=seq)
    event.time.FromDatetime(T0 + timedelta(seconds=seq))
    event.session_finished.status = Status.SESSION_STATUS_COMPLETED
    return event


async def create(store: RequestStore, request_id: str, owner: str = "a", **kw: str) -> Lease:
    _, lease = await store.create(record(request_id, **kw), b"app", {"power_hp": 110}, started(request_id), owner)
    assert lease is not None
    return lease


async def test_a_created_request_reads_back_with_its_first_event(store: RequestStore) -> None:
    stored, lease = await store.create(record("r1"), b"app", {"power_hp": 110}, started("r1"), "a")
    assert lease == Lease("r1", "a", 1)
    assert stored == record("r1")
    assert await store.get("r1") == record("r1")
    assert await store.events("r1") == [started("r1")]
    assert await store.get("nope") is None
    assert await store.events("nope") == []


async def test_the_same_key_from_the_same_customer_returns_the_first_request(store: RequestStore) -> None:
    await create(store, "r1", key="k", customer="c1")
    again, lease = await store.create(record("r2", key="k", customer="c1"), b"app", {}, started("r2"), "b")
    assert lease is None
    assert again.request_id == "r1"
    assert await store.get("r2") is None and await store.events("r2") == []
    # Another customer's key is their own.
    other, other_lease = await store.create(record("r3", key="k", customer="c2"), b"app", {}, started("r3"), "b")
    assert other.request_id == "r3" and other_lease is not None


async def test_a_request_is_not_created_with_an_answer_or_an_end_for_its_first_event(store: RequestStore) -> None:
    for first in (offer("r1", 1), finished("r1", 1)):
        with pytest.raises(ValueError, match="first event"):
            await store.create(record("r1"), b"app", {}, first, "a")
    assert await store.get("r1") is None and await store.events("r1") == []


async def test_events_append_in_order_and_read_from_any_point(store: RequestStore) -> None:
    lease = await create(store, "r1")
    await store.append(lease, [offer("r1", 2)])
    await store.append(lease, [declined("r1", 3), finished("r1", 4)])
    assert [e.seq for e in await store.events("r1")] == [1, 2, 3, 4]
    tail = await store.events("r1", after_seq=2)
    assert [e.WhichOneof("payload") for e in tail] == ["insurer_failed", "session_finished"]
    assert tail[0].insurer_failed.reason == quote_pb2.FailureReason.FAILURE_REASON_DECLINED
    stored = await store.get("r1")
    assert stored is not None and stored.status == Status.SESSION_STATUS_COMPLETED


async def test_a_write_made_again_after_an_unknown_outcome_is_stored_once(store: RequestStore) -> None:
    lease = await create(store, "r1")
    batch = [offer("r1", 2), declined("r1", 3)]
    await store.append(lease, batch)
    await store.append(lease, batch)  # its writer was stopped before it learned the outcome
    assert await store.events("r1") == [started("r1"), *batch]
    # Other events under a stored seq are another writer's: this one lost the session.
    with pytest.raises(LeaseLost):
        await store.append(lease, [offer("r1", 3, insurer="other")])
    assert await store.events("r1") == [started("r1"), *batch]
    # The write that ended the request, made again: taken, although the request has no owner now.
    end = [declined("r1", 4, insurer="x"), finished("r1", 5)]
    await store.append(lease, end)
    await store.append(lease, end)
    assert await store.events("r1") == [started("r1"), *batch, *end]
    assert (await store.get("r1")) == replace(record("r1"), status=Status.SESSION_STATUS_COMPLETED)
    with pytest.raises(LeaseLost):  # but nothing new
        await store.append(lease, [offer("r1", 6, insurer="y")])


async def test_a_finished_request_takes_no_more_events(store: RequestStore) -> None:
    lease = await create(store, "r1")
    await store.append(lease, [finished("r1", 2)])
    with pytest.raises(LeaseLost):
        await store.append(lease, [offer("r1", 3)])
    assert [e.seq for e in await store.events("r1")] == [1, 2]


async def test_requests_of_a_live_owner_are_not_claimed(store: RequestStore) -> None:
    await store.heartbeat("a", T0, TTL)
    await create(store, "r1", owner="a")
    assert await store.claim_orphans("b", T0 + timedelta(seconds=TTL - 0.5), 10) == []


async def test_a_lapsed_owner_s_running_requests_are_claimed_once_with_a_new_epoch(store: RequestStore) -> None:
    await store.heartbeat("a", T0, TTL)
    lease = await create(store, "r1", owner="a")
    await store.append(lease, [offer("r1", 2)])
    done = await create(store, "r2", owner="a")
    await store.append(done, [finished("r2", 2)])
    later = T0 + timedelta(seconds=TTL + 0.1)
    await store.heartbeat("b", later, TTL)
    claims = await store.claim_orphans("b", later, 10)
    assert [c.record.request_id for c in claims] == ["r1"]  # r2 finished: nothing to take over
    claim = claims[0]
    assert claim.lease == Lease("r1", "b", 2)
    assert claim.application == b"app"
    assert [e.seq for e in claim.events] == [1, 2]
    assert await store.claim_orphans("c", later, 10) == []  # b is alive and holds it now


async def test_a_stale_owner_cannot_append_after_a_takeover(store: RequestStore) -> None:
    await store.heartbeat("a", T0, TTL)
    stale = await create(store, "r1", owner="a")
    later = T0 + timedelta(seconds=TTL + 1)
    await store.heartbeat("b", later, TTL)
    [claim] = await store.claim_orphans("b", later, 10)
    await store.append(claim.lease, [offer("r1", 2, insurer="vsk")])
    with pytest.raises(LeaseLost):
        await store.append(stale, [offer("r1", 3)])
    with pytest.raises(LeaseLost):  # nor in its own numbering
        await store.append(stale, [offer("r1", 2)])
    events = await store.events("r1")
    assert [(e.seq, e.quote_received.quote.insurer_id) for e in events[1:]] == [(2, "vsk")]


async def test_a_released_request_is_claimed_at_once_and_the_releaser_is_fenced_off(store: RequestStore) -> None:
    await store.heartbeat("a", T0, TTL)
    await store.heartbeat("b", T0, TTL)
    lease = await create(store, "r1", owner="a")
    await store.release([lease])
    with pytest.raises(LeaseLost):
        await store.append(lease, [offer("r1", 2)])
    [claim] = await store.claim_orphans("b", T0, 10)  # no waiting for a's lease to lapse
    assert claim.lease.epoch == 3  # raised by the release and by the claim
    await store.append(claim.lease, [offer("r1", 2)])


async def test_claims_stop_at_the_limit_oldest_deadline_first(store: RequestStore) -> None:
    for n in range(3):
        rec = record(f"r{n}")
        rec = RequestRecord(**{**rec.__dict__, "deadline": T0 + timedelta(seconds=60 - n)})
        await store.create(rec, b"", {}, started(f"r{n}"), "gone")
    await store.heartbeat("b", T0, TTL)
    first = await store.claim_orphans("b", T0, 2)
    assert [c.record.request_id for c in first] == ["r2", "r1"]
    assert [c.record.request_id for c in await store.claim_orphans("b", T0, 2)] == ["r0"]
    assert await store.claim_orphans("b", T0, 2) == []


async def test_forgotten_requests_are_gone_with_their_key(store: RequestStore) -> None:
    await create(store, "r1", key="k")
    await store.forget("r1")
    assert await store.get("r1") is None
    assert await store.events("r1") == []
    _, lease = await store.create(record("r2", key="k"), b"", {}, started("r2"), "a")
    assert lease is not None


# Postgres only: what the rows hold, concurrency between instances, migrations.


async def test_postgres_keeps_each_answer_once_and_no_personal_data_outside_the_application(postgres_db: str) -> None:
    async with PostgresRequestStore.open(postgres_db) as store:
        lease = await create(store, "r1")
        await store.append(lease, [offer("r1", 2), declined("r1", 3)])
    async with await psycopg.AsyncConnection.connect(postgres_db) as conn:
        cursor = await conn.execute(
            "SELECT company_id, status, quote_data->>'premiumKopecks' FROM osago_quotes ORDER BY company_id"
        )
        assert await cursor.fetchall() == [("alfa", "offered", "621950"), ("vsk", "declined", None)]
        cursor = await conn.execute("SELECT status, owner, lease_epoch, vehicle_data FROM osago_requests")
        assert await cursor.fetchall() == [("running", "a", 1, {"power_hp": 110})]


async def test_postgres_opens_its_whole_pool_at_start_up(postgres_db: str) -> None:
    database = postgres_db.rsplit("/", 1)[1]

    async def connections() -> int:
        async with await psycopg.AsyncConnection.connect(postgres_db, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,)
            )
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

    async with PostgresRequestStore.open(postgres_db, size=7):
        assert await connections() == 7  # before any request needed them


async def test_two_instances_claiming_at_once_never_share_a_request(postgres_db: str) -> None:
    async with PostgresRequestStore.open(postgres_db) as one, PostgresRequestStore.open(postgres_db) as two:
        for n in range(40):
            await one.create(record(f"r{n}"), b"", {}, started(f"r{n}"), "gone")
        await one.heartbeat("b", T0, TTL)
        await one.heartbeat("c", T0, TTL)
        got_b, got_c = await asyncio.gather(one.claim_orphans("b", T0, 30), two.claim_orphans("c", T0, 30))
        ids_b = {c.record.request_id for c in got_b}
        ids_c = {c.record.request_id for c in got_c}
        assert not ids_b & ids_c
        assert len(ids_b | ids_c) == 40


async def test_migrations_run_twice_in_parallel_apply_each_version_once(postgres_db: str) -> None:
    async def run() -> list[int]:
        async with await psycopg.AsyncConnection.connect(postgres_db, autocommit=True) as conn:
            return await migrate(conn)

    first, second = await asyncio.gather(run(), run())
    versions = [version for version, _, _ in migrations()]
    assert sorted(first + second) == versions  # one of them applied everything, the other nothing
    async with await psycopg.AsyncConnection.connect(postgres_db) as conn:
        cursor = await conn.execute("SELECT version FROM osago_schema_migrations ORDER BY version")
        assert [row[0] for row in await cursor.fetchall()] == versions


async def test_a_heartbeat_after_the_lease_lapsed_says_so_and_owned_tells_what_is_still_held(
    store: RequestStore,
) -> None:
    assert await store.heartbeat("a", T0, TTL)  # a new instance
    lease = await create(store, "r1", owner="a")
    await create(store, "r2", owner="a")
    assert await store.heartbeat("a", T0 + timedelta(seconds=TTL - 0.5), TTL)  # renewed in time
    late = T0 + timedelta(seconds=2 * TTL + 1)
    await store.heartbeat("b", late, TTL)
    [claim] = await store.claim_orphans("b", late, 1)  # b takes one of a's two sessions
    assert not await store.heartbeat("a", late, TTL)  # a was paused past its lease
    held = await store.owned("a", ["r1", "r2", "nope"])
    taken = claim.record.request_id
    assert held == {("r2" if taken == "r1" else "r1"): lease.epoch}
    assert await store.owned("b", [taken]) == {taken: claim.lease.epoch}


async def test_a_session_long_past_its_deadline_is_claimed_even_from_a_live_owner(store: RequestStore) -> None:
    await store.heartbeat("a", T0, 3600.0)  # alive for an hour
    await create(store, "r1", owner="a")  # deadline T0 + 60 s
    await store.heartbeat("b", T0, 3600.0)
    assert await store.claim_orphans("b", T0, 10, overdue_before=T0 + timedelta(seconds=60)) == []  # due, not overdue
    [claim] = await store.claim_orphans("b", T0, 10, overdue_before=T0 + timedelta(seconds=61))
    assert claim.lease == Lease("r1", "b", 2)
