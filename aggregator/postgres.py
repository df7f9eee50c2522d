"""`PostgresRequestStore`: the request store shared by every aggregator instance (psycopg 3,
async, pooled). Schema in aggregator/sql/migrations/*.sql (applied at start-up, one instance at a
time under an advisory lock); every query, by name, in aggregator/sql/queries.sql."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import psycopg
import psycopg_pool
from google.protobuf import json_format
from osago.v1 import events_pb2, quote_pb2
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from aggregator.store import Claim, Lease, LeaseLost, RequestRecord, StoreUnavailable, final_status

log = logging.getLogger(__name__)

Status = events_pb2.SessionStatus

# pg_advisory_lock key serialising migrations between instances starting at once.
MIGRATION_LOCK = 0x05A6_0001

_UTC = UTC
_LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)
_SQL = resources.files("aggregator") / "sql"


def _named_queries(text: str) -> dict[str, str]:
    """`-- name: x` sections of a SQL file, by name."""
    parts = re.split(r"^-- name: (\w+)\s*$", text, flags=re.MULTILINE)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


QUERIES = _named_queries((_SQL / "queries.sql").read_text(encoding="utf-8"))


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration file, in order."""
    found = []
    for entry in (_SQL / "migrations").iterdir():
        match = re.fullmatch(r"(\d+)_(\w+)\.sql", entry.name)
        if match:
            found.append((int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found)


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    """Applies the migrations not yet applied, each in its own transaction, holding an advisory
    lock so that instances starting together apply each one once. Returns the versions applied."""
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS osago_schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM osago_schema_migrations")
        row = await cursor.fetchone()
        current = int(row[0]) if row else 0
        for version, name, sql in migrations():
            if version <= current:
                continue
            async with conn.transaction():
                await conn.execute(sql.encode())
                await conn.execute(
                    "INSERT INTO osago_schema_migrations (version, name) VALUES (%s, %s)", (version, name)
                )
            applied.append(version)
            log.info("applied migration %04d_%s", version, name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return applied


_STATUS_NAMES: dict[int, str] = {
    Status.SESSION_STATUS_RUNNING: "running",
    Status.SESSION_STATUS_COMPLETED: "completed",
    Status.SESSION_STATUS_DEADLINE_EXCEEDED: "deadline_exceeded",
    Status.SESSION_STATUS_UPSTREAM_OUTAGE: "upstream_outage",
    Status.SESSION_STATUS_CANCELLED: "cancelled",
}
_STATUSES = {name: status for status, name in _STATUS_NAMES.items()}


def _record(row: Mapping[str, Any]) -> RequestRecord:
    return RequestRecord(
        request_id=row["id"],
        created_at=row["created_at"],
        deadline=row["expires_at"],
        insurers=tuple((str(i), str(n)) for i, n in row["insurers"]),
        idempotency_key=row["idempotency_key"] or "",
        fingerprint=row["fingerprint"],
        customer_id=row["customer_id"],
        status=_STATUSES[row["status"]],
    )


def _event(data: bytes) -> events_pb2.QuoteEvent:
    event = events_pb2.QuoteEvent()
    event.ParseFromString(data)
    return event


def _reason_name(reason: quote_pb2.FailureReason.ValueType) -> str:
    """ "declined" for FAILURE_REASON_DECLINED; the number for a reason newer than this code."""
    try:
        return str(quote_pb2.FailureReason.Name(reason)).removeprefix("FAILURE_REASON_").lower()
    except ValueError:
        return str(reason)


def _answer(event: events_pb2.QuoteEvent) -> tuple[str, dict[str, Any], str] | None:
    """(company_id, quote_data, status) of an event that is an insurer's answer."""
    kind = event.WhichOneof("payload")
    if kind == "quote_received":
        quote = event.quote_received.quote
        return quote.insurer_id, json_format.MessageToDict(quote), "offered"
    if kind == "insurer_failed":
        failed = event.insurer_failed
        name = _reason_name(failed.reason)
        return failed.insurer_id, {"reason": name, "message": failed.message}, name
    return None


class PostgresRequestStore:
    """Requests, events and answers in Postgres; safe for any number of instances."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str, *, size: int = 20, timeout_s: float = 5.0) -> AsyncIterator[PostgresRequestStore]:
        """A pool of `size` connections to `url`, all opened now and kept (one growing on demand
        made the first busy seconds wait for its new connections), the schema migrated, closed
        on exit. The connections are waited for (up to `timeout_s`): an instance does not start
        without its database."""
        pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
            url,
            min_size=size,
            max_size=size,
            timeout=timeout_s,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout_s))},
            open=False,
        )
        await pool.open(wait=True, timeout=timeout_s)
        try:
            async with pool.connection() as conn:
                await migrate(conn)
            yield cls(pool)
        finally:
            await pool.close()

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as error:
            raise StoreUnavailable("the request store (Postgres) is unavailable") from error

    async def create(
        self,
        record: RequestRecord,
        application: bytes,
        vehicle: Mapping[str, Any],
        first: events_pb2.QuoteEvent,
        owner: str,
    ) -> tuple[RequestRecord, Lease | None]:
        if _answer(first) is not None or final_status([first]) is not None:
            raise ValueError("a request's first event is its start, not an answer or its end")
        params = {
            "id": record.request_id,
            "customer_id": record.customer_id,
            "idempotency_key": record.idempotency_key or None,
            "fingerprint": record.fingerprint,
            "vehicle_data": Jsonb(dict(vehicle)),
            "application": application,
            "insurers": Jsonb([list(pair) for pair in record.insurers]),
            "created_at": record.created_at,
            "expires_at": record.deadline,
            "owner": owner,
            "seq": first.seq,
            "kind": first.WhichOneof("payload") or "",
            "event": first.SerializeToString(),
            "time": first.time.ToDatetime(tzinfo=_UTC),
        }
        async with self._conn() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(QUERIES["insert_request"], params)
            inserted = await cursor.fetchone()
            if inserted is None:  # the idempotency key is taken
                await cursor.execute(QUERIES["find_by_key"], params)
                row = await cursor.fetchone()
                if row is None:  # pragma: no cover - the conflicting row is visible once committed
                    raise StoreUnavailable("idempotency conflict on a request not visible yet")
                return _record(row), None
        return record, Lease(record.request_id, owner, int(inserted["lease_epoch"]))

    async def get(self, request_id: str) -> RequestRecord | None:
        async with self._conn() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(QUERIES["get_request"], {"id": request_id})
            row = await cursor.fetchone()
        return _record(row) if row else None

    async def append(self, lease: Lease, events: Sequence[events_pb2.QuoteEvent]) -> None:
        async with self._conn() as conn:
            await self._insert(conn, lease, events)

    async def _insert(
        self,
        conn: psycopg.AsyncConnection[Any],
        lease: Lease,
        events: Sequence[events_pb2.QuoteEvent],
    ) -> None:
        answers = [(e, a) for e in events if (a := _answer(e)) is not None]
        status = final_status(events)
        serialized = [e.SerializeToString() for e in events]
        params = {
            "id": lease.request_id,
            "epoch": lease.epoch,
            "owner": lease.owner,
            "seqs": [e.seq for e in events],
            "kinds": [e.WhichOneof("payload") or "" for e in events],
            "events": serialized,
            "times": [e.time.ToDatetime(tzinfo=_UTC) for e in events],
            "companies": [a[0] for _, a in answers],
            "answers": [Jsonb(a[1]) for _, a in answers],
            "answer_status": [a[2] for _, a in answers],
            "answer_times": [e.time.ToDatetime(tzinfo=_UTC) for e, _ in answers],
            "final_status": _STATUS_NAMES.get(status) if status is not None else None,
            "finished_at": events[-1].time.ToDatetime(tzinfo=_UTC) if status is not None else None,
        }
        try:
            cursor = await conn.execute(QUERIES["append_events"], params)
        except psycopg.errors.UniqueViolation as error:
            # A seq already stored: this very write, committed by an attempt whose reply was
            # lost, or another writer's (then this one lost its lease).
            if await self._holds(conn, lease.request_id, events, serialized):
                return
            raise LeaseLost(lease.request_id) from error
        row = await cursor.fetchone()
        if row is None or int(row[0]) != len(events):
            # Fenced off: the lease is lost, or this very write ended the request already (its
            # writer did not learn the outcome, and a finished request has no owner).
            if await self._holds(conn, lease.request_id, events, serialized):
                return
            raise LeaseLost(lease.request_id)

    @staticmethod
    async def _holds(
        conn: psycopg.AsyncConnection[Any],
        request_id: str,
        events: Sequence[events_pb2.QuoteEvent],
        serialized: list[bytes],
    ) -> bool:
        """Whether the request holds exactly these events under their seqs already."""
        stored = await conn.execute(
            QUERIES["events_between"], {"id": request_id, "first": events[0].seq, "last": events[-1].seq}
        )
        return [bytes(row[0]) for row in await stored.fetchall()] == serialized

    async def events(self, request_id: str, after_seq: int = 0) -> list[events_pb2.QuoteEvent]:
        async with self._conn() as conn:
            cursor = await conn.execute(QUERIES["events_after"], {"id": request_id, "after_seq": after_seq})
            return [_event(row[0]) for row in await cursor.fetchall()]

    async def heartbeat(self, owner: str, now: datetime, ttl_s: float) -> bool:
        async with self._conn() as conn:
            cursor = await conn.execute(
                QUERIES["heartbeat"], {"owner": owner, "now": now, "lease_until": now + timedelta(seconds=ttl_s)}
            )
            row = await cursor.fetchone()
        before = row[0] if row else None
        return before is None or before > now

    async def owned(self, owner: str, request_ids: Sequence[str]) -> dict[str, int]:
        if not request_ids:
            return {}
        async with self._conn() as conn:
            cursor = await conn.execute(QUERIES["owned"], {"owner": owner, "ids": list(request_ids)})
            return {str(request_id): int(epoch) for request_id, epoch in await cursor.fetchall()}

    async def claim_orphans(
        self, owner: str, now: datetime, limit: int, *, overdue_before: datetime | None = None
    ) -> list[Claim]:
        async with self._conn() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            params = {"owner": owner, "now": now, "limit": limit, "overdue_before": overdue_before or _LONG_AGO}
            await cursor.execute(QUERIES["claim_orphans"], params)
            rows = await cursor.fetchall()
            if not rows:
                return []
            ids = [row["id"] for row in rows]
            plain = await conn.execute(QUERIES["events_of"], {"ids": ids})
            by_request: dict[str, list[events_pb2.QuoteEvent]] = {i: [] for i in ids}
            for request_id, data in await plain.fetchall():
                by_request[request_id].append(_event(data))
        return [
            Claim(
                record=_record(row),
                application=bytes(row["application"] or b""),
                lease=Lease(row["id"], owner, int(row["lease_epoch"])),
                events=by_request[row["id"]],
            )
            for row in rows
        ]

    async def release(self, leases: Sequence[Lease]) -> None:
        if not leases:
            return
        async with self._conn() as conn, conn.transaction(), conn.cursor() as cursor:
            await cursor.executemany(
                QUERIES["release"], [{"id": lease.request_id, "epoch": lease.epoch} for lease in leases]
            )

    async def forget(self, request_id: str) -> None:
        async with self._conn() as conn:
            await conn.execute(QUERIES["forget"], {"id": request_id})

    async def purge_personal(self, before: datetime, now: datetime, limit: int) -> int:
        async with self._conn() as conn:
            cursor = await conn.execute(QUERIES["purge_personal"], {"before": before, "now": now, "limit": limit})
            return int(cursor.rowcount)

    async def drop_instance(self, owner: str) -> None:
        """Forgets an instance that stops (its sessions were released or finished)."""
        async with self._conn() as conn:
            await conn.execute(QUERIES["drop_instance"], {"owner": owner})

    async def check(self) -> None:
        async with self._conn() as conn:
            await conn.execute("SELECT 1")

    async def close(self) -> None:
        await self._pool.close()
