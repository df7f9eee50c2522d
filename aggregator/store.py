"""Quote request records: what was asked, of whom, until when, under which idempotency key.

`MemoryRequestStore` is the embedded implementation; a Postgres one can stand in for it behind
the same `RequestStore` protocol. What the insurers answered lives in the event log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class RequestRecord:
    request_id: str
    created_at: datetime
    deadline: datetime
    # (insurer_id, insurer_name) of every insurer asked, in order.
    insurers: tuple[tuple[str, str], ...]
    idempotency_key: str
    # A hash of the normalised application, to tell a retried create from a key reused for
    # a different application.
    fingerprint: str


class RequestStore(Protocol):
    async def create(self, record: RequestRecord) -> tuple[RequestRecord, bool]:
        """Stores `record`, or returns the record already stored under its idempotency key;
        the flag is True when `record` was stored."""

    async def get(self, request_id: str) -> RequestRecord | None:
        """The record, or None."""

    async def delete(self, request_id: str) -> None:
        """Forgets a record (retention)."""


class MemoryRequestStore:
    """Records kept in this process."""

    def __init__(self) -> None:
        self._by_id: dict[str, RequestRecord] = {}
        self._by_key: dict[str, str] = {}

    async def create(self, record: RequestRecord) -> tuple[RequestRecord, bool]:
        if record.idempotency_key:
            existing = self._by_key.get(record.idempotency_key)
            if existing is not None and existing in self._by_id:
                return self._by_id[existing], False
            self._by_key[record.idempotency_key] = record.request_id
        self._by_id[record.request_id] = record
        return record, True

    async def get(self, request_id: str) -> RequestRecord | None:
        return self._by_id.get(request_id)

    async def delete(self, request_id: str) -> None:
        record = self._by_id.pop(request_id, None)
        if record is not None and self._by_key.get(record.idempotency_key) == request_id:
            del self._by_key[record.idempotency_key]
