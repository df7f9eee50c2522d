"""The durable record of every quote request: what was asked, of whom, until when, every event
it logged, and which aggregator instance runs it under which lease epoch.

Two implementations behind one `RequestStore` protocol, held to one contract suite:
`MemoryRequestStore` (this process; the embedded default) and `PostgresRequestStore`
(aggregator.postgres; shared by every instance).

Ownership: each instance renews its own lease (`heartbeat`); each running request names its
owner and carries a lease epoch, the fencing token. `claim_orphans` hands the requests whose
owner's lease lapsed (or that were released) to another instance, raising their epoch; an
`append` with an older epoch is refused with `LeaseLost`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from osago.v1 import events_pb2

Status = events_pb2.SessionStatus
RUNNING = Status.SESSION_STATUS_RUNNING


@dataclass(frozen=True)
class RequestRecord:
    request_id: str
    created_at: datetime
    deadline: datetime
    # (insurer_id, insurer_name) of every insurer asked, in order.
    insurers: tuple[tuple[str, str], ...]
    idempotency_key: str
    # A hash of the normalised application: tells a retried create from a key reused for a
    # different application, and keys the cache of results.
    fingerprint: str
    customer_id: str = ""
    # An osago.v1.SessionStatus value.
    status: int = RUNNING


@dataclass(frozen=True)
class Lease:
    """The right to write a request's events: its owner and the epoch it holds."""

    request_id: str
    owner: str
    epoch: int


@dataclass(frozen=True)
class Claim:
    """A running request taken over from an instance that is gone: what is needed to resume it."""

    record: RequestRecord
    application: bytes
    lease: Lease
    events: list[events_pb2.QuoteEvent]


class LeaseLost(Exception):
    """The writer's lease epoch is no longer the request's: another instance runs it now."""


class StoreUnavailable(Exception):
    """The store cannot be reached; the message says so without internal detail."""


class RequestStore(Protocol):
    async def create(
        self,
        record: RequestRecord,
        application: bytes,
        vehicle: Mapping[str, Any],
        first: events_pb2.QuoteEvent,
        owner: str,
    ) -> tuple[RequestRecord, Lease | None]:
        """Stores a new request with its first event (seq 1: the session's start, never an answer
        or its end; ValueError) and `owner` holding it, all or nothing; or, when the customer
        already used the record's idempotency key, returns the request stored under it and no
        lease."""

    async def get(self, request_id: str) -> RequestRecord | None:
        """The record, or None."""

    async def append(self, lease: Lease, events: Sequence[events_pb2.QuoteEvent]) -> None:
        """Stores events (numbered by the writer, following the last one), each offer or failure
        also as the insurer's one answer; a `session_finished` event ends the request. Raises
        LeaseLost when `lease` is no longer current, storing nothing. The same events again under
        the same seqs (a write whose outcome its writer did not learn) are taken without being
        stored twice; other events under a stored seq raise LeaseLost (another writer's)."""

    async def events(self, request_id: str, after_seq: int = 0) -> list[events_pb2.QuoteEvent]:
        """The request's events with seq > after_seq, in order ([] for an unknown request)."""

    async def heartbeat(self, owner: str, now: datetime, ttl_s: float) -> bool:
        """Renews (or starts) `owner`'s instance lease until now + ttl_s. False when the lease had
        lapsed meanwhile (the instance was paused or cut off): its sessions may have been taken
        over, see `owned`."""

    async def owned(self, owner: str, request_ids: Sequence[str]) -> dict[str, int]:
        """Of these requests, those `owner` still holds, with their current lease epoch."""

    async def claim_orphans(
        self, owner: str, now: datetime, limit: int, *, overdue_before: datetime | None = None
    ) -> list[Claim]:
        """Takes over, for `owner`, up to `limit` running requests whose owner's lease lapsed, that
        were released, or whose deadline is before `overdue_before` whoever owns them (an owner
        that could not finish them); each claim raises the request's epoch."""

    async def release(self, leases: Sequence[Lease]) -> None:
        """Gives running requests up (a draining instance): their epoch is raised, so the old
        owner can no longer write, and any instance may claim them at once."""

    async def forget(self, request_id: str) -> None:
        """Deletes a request and its events (retention)."""

    async def purge_personal(self, before: datetime, now: datetime, limit: int) -> int:
        """Erases the personal data (the application, customer id, idempotency key and
        fingerprint) of up to `limit` finished requests created before `before`; their events
        and the insurers' answers stay. Returns how many were purged."""

    async def check(self) -> None:
        """Returns when the store answers; raises StoreUnavailable otherwise."""

    async def close(self) -> None:
        """Releases connections."""


def final_status(events: Sequence[events_pb2.QuoteEvent]) -> int | None:
    """The status a `session_finished` among `events` sets, if any."""
    for event in events:
        if event.WhichOneof("payload") == "session_finished":
            return int(event.session_finished.status)
    return None


@dataclass
class _Stored:
    record: RequestRecord
    application: bytes
    owner: str | None
    epoch: int = 1
    events: list[events_pb2.QuoteEvent] = field(default_factory=list)


class MemoryRequestStore:
    """Requests kept in this process (the embedded default): the same contract, one instance."""

    def __init__(self) -> None:
        self._by_id: dict[str, _Stored] = {}
        self._by_key: dict[tuple[str, str], str] = {}
        self._instances: dict[str, datetime] = {}
        # One writer at a time per store keeps every method atomic, as a transaction would.
        self._lock = asyncio.Lock()

    async def create(
        self,
        record: RequestRecord,
        application: bytes,
        vehicle: Mapping[str, Any],
        first: events_pb2.QuoteEvent,
        owner: str,
    ) -> tuple[RequestRecord, Lease | None]:
        if first.WhichOneof("payload") in ("quote_received", "insurer_failed") or final_status([first]) is not None:
            raise ValueError("a request's first event is its start, not an answer or its end")
        key = (record.customer_id, record.idempotency_key)
        if record.idempotency_key:
            existing = self._by_key.get(key)
            if existing is not None and existing in self._by_id:
                return self._by_id[existing].record, None
            self._by_key[key] = record.request_id
        if record.request_id in self._by_id:
            raise ValueError(f"request {record.request_id} already exists")
        stored = _Stored(record, application, owner)
        stored.events.append(first)
        self._by_id[record.request_id] = stored
        return record, Lease(record.request_id, owner, stored.epoch)

    async def get(self, request_id: str) -> RequestRecord | None:
        stored = self._by_id.get(request_id)
        return stored.record if stored is not None else None

    async def append(self, lease: Lease, events: Sequence[events_pb2.QuoteEvent]) -> None:
        stored = self._by_id.get(lease.request_id)
        if not events:
            return
        last = stored.events[-1].seq if stored is not None and stored.events else 0
        if stored is not None and events[0].seq <= last:
            # Seqs already stored: this very write again (its writer did not learn the outcome;
            # it may have ended the request), or another writer's (then this one lost its lease).
            if stored.events[events[0].seq - 1 : events[-1].seq] == list(events):
                return
            raise LeaseLost(lease.request_id)
        if stored is None or stored.epoch != lease.epoch or stored.owner != lease.owner:
            raise LeaseLost(lease.request_id)
        for offset, event in enumerate(events, 1):
            if event.seq != last + offset:
                raise ValueError(f"event seq {event.seq} does not follow {last + offset - 1}")
        stored.events.extend(events)
        status = final_status(events)
        if status is not None:
            stored.record = replace(stored.record, status=status)
            stored.owner = None

    async def events(self, request_id: str, after_seq: int = 0) -> list[events_pb2.QuoteEvent]:
        stored = self._by_id.get(request_id)
        if stored is None:
            return []
        # Events are numbered from 1 without gaps: seq n sits at index n - 1.
        return stored.events[max(after_seq, 0) :]

    async def heartbeat(self, owner: str, now: datetime, ttl_s: float) -> bool:
        before = self._instances.get(owner)
        self._instances[owner] = now + timedelta(seconds=ttl_s)
        return before is None or before > now

    async def owned(self, owner: str, request_ids: Sequence[str]) -> dict[str, int]:
        held = (self._by_id.get(request_id) for request_id in request_ids)
        return {s.record.request_id: s.epoch for s in held if s is not None and s.owner == owner}

    async def claim_orphans(
        self, owner: str, now: datetime, limit: int, *, overdue_before: datetime | None = None
    ) -> list[Claim]:
        claims: list[Claim] = []
        async with self._lock:
            running = sorted(
                (s for s in self._by_id.values() if s.record.status == RUNNING),
                key=lambda s: s.record.deadline,
            )
            for stored in running:
                if len(claims) >= limit:
                    break
                alive_until = self._instances.get(stored.owner) if stored.owner else None
                overdue = overdue_before is not None and stored.record.deadline < overdue_before
                if alive_until is not None and alive_until > now and not overdue:
                    continue
                stored.owner = owner
                stored.epoch += 1
                lease = Lease(stored.record.request_id, owner, stored.epoch)
                claims.append(Claim(stored.record, stored.application, lease, list(stored.events)))
        return claims

    async def release(self, leases: Sequence[Lease]) -> None:
        for lease in leases:
            stored = self._by_id.get(lease.request_id)
            if stored is not None and stored.epoch == lease.epoch and stored.record.status == RUNNING:
                stored.owner = None
                stored.epoch += 1

    async def purge_personal(self, before: datetime, now: datetime, limit: int) -> int:
        due = [
            s
            for s in self._by_id.values()
            if s.application and s.record.status != RUNNING and s.record.created_at < before
        ][:limit]
        for stored in due:
            key = (stored.record.customer_id, stored.record.idempotency_key)
            if self._by_key.get(key) == stored.record.request_id:
                del self._by_key[key]
            stored.application = b""
            stored.record = replace(stored.record, customer_id="", idempotency_key="", fingerprint="")
        return len(due)

    def application(self, request_id: str) -> bytes | None:
        """The stored application (tests of the purge)."""
        stored = self._by_id.get(request_id)
        return stored.application if stored is not None else None

    async def forget(self, request_id: str) -> None:
        stored = self._by_id.pop(request_id, None)
        if stored is not None:
            key = (stored.record.customer_id, stored.record.idempotency_key)
            if self._by_key.get(key) == request_id:
                del self._by_key[key]

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None
