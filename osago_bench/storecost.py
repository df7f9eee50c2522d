"""`osago bench store`: the aggregator's CPU per event appended to the Postgres request store.

Each round creates `requests` requests, then appends `events` offers to each, one statement per
event as a session does; this process's CPU time over the appends, per append. Every round runs
the store's statement twice: as it is (the event arrays sent in binary form) and with the same
arrays in text form (psycopg's default, which escapes every element with a regular
expression), alternating, so the two are compared on the same machine at the same moment.
Against a private Postgres server it starts (or `--postgres URL`, whose schema it migrates).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from osago.v1 import events_pb2, quote_pb2

from aggregator import postgres
from aggregator.postgres import PostgresRequestStore
from aggregator.store import RequestRecord
from osago_mesh.servers import postgres_server

FORMS = ("binary", "text")


@dataclass(frozen=True)
class StoreCostConfig:
    requests: int = 200
    events: int = 10
    rounds: int = 3
    postgres: str | None = None


def statements() -> dict[str, str]:
    """The append statement as the store sends it ("binary") and with text parameters."""
    binary = postgres.QUERIES["append_events"]
    text = binary.replace(")b::", ")s::")
    if text == binary:
        raise RuntimeError("the append statement has no binary parameters")
    return {"binary": binary, "text": text}


async def measure(config: StoreCostConfig) -> dict[str, Any]:
    with _server(config.postgres) as url:
        async with PostgresRequestStore.open(url) as store:
            return await _drive(config, store)


@contextlib.contextmanager
def _server(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    with postgres_server() as started:
        yield started


async def _drive(config: StoreCostConfig, store: PostgresRequestStore) -> dict[str, Any]:
    forms = statements()
    original = postgres.QUERIES["append_events"]
    per_append: dict[str, list[float]] = {form: [] for form in FORMS}
    now = datetime.now(UTC)
    try:
        for _ in range(config.rounds):
            for form in FORMS:
                postgres.QUERIES["append_events"] = forms[form]
                leases = []
                for _ in range(config.requests):
                    request_id = uuid.uuid4().hex
                    _, lease = await store.create(
                        _record(request_id, now), b"application", {}, _event(request_id, 1, now), "bench"
                    )
                    if lease is None:  # not a new request: never, with a fresh id and no key
                        raise RuntimeError(f"request {request_id} was not created")
                    leases.append(lease)
                began = time.process_time()
                for lease in leases:
                    for seq in range(2, config.events + 2):
                        await store.append(lease, [_event(lease.request_id, seq, now)])
                cpu = time.process_time() - began
                per_append[form].append(round(cpu * 1e6 / (config.requests * config.events), 1))
    finally:
        postgres.QUERIES["append_events"] = original
    return {
        "us_per_append": per_append,
        "appends_per_round": config.requests * config.events,
        "config": {"requests": config.requests, "events": config.events, "rounds": config.rounds},
    }


def _record(request_id: str, now: datetime) -> RequestRecord:
    return RequestRecord(
        request_id=request_id,
        created_at=now,
        deadline=now + timedelta(seconds=60),
        insurers=(("alfa", "AlfaStrakhovanie"),),
        idempotency_key="",
        fingerprint="f" * 64,
        customer_id="",
    )


def _event(request_id: str, seq: int, now: datetime) -> events_pb2.QuoteEvent:
    """A session's first event (seq 1), else an insurer's offer, as sessions append them."""
    event = events_pb2.QuoteEvent(request_id=request_id, seq=seq)
    event.time.FromDatetime(now + timedelta(milliseconds=seq))
    if seq == 1:
        event.session_started.insurers.add(insurer_id="alfa", insurer_name="AlfaStrakhovanie")
    else:
        quote = quote_pb2.Quote(insurer_id="alfa", insurer_name="AlfaStrakhovanie", offer_id=f"o-{seq}")
        quote.premium_kopecks = 621_950
        event.quote_received.quote.CopyFrom(quote)
    return event


def line(result: dict[str, Any]) -> str:
    figures = result["us_per_append"]
    return (
        f"request store (Postgres): {' / '.join(map(str, figures['binary']))} µs CPU per append with binary "
        f"parameters, {' / '.join(map(str, figures['text']))} with text ({result['appends_per_round']} appends "
        f"per round and form, alternating)"
    )
