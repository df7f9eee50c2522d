"""`osago bench store`: the Postgres store's CPU per append, its statement with binary parameters
against the same with text ones, on a private Postgres server."""

from __future__ import annotations

import psycopg
import pytest

from aggregator import postgres
from osago_bench.storecost import StoreCostConfig, line, measure, statements

pytestmark = pytest.mark.functional


def test_the_text_form_differs_from_the_stores_statement_only_in_its_placeholders() -> None:
    forms = statements()
    assert forms["binary"] == postgres.QUERIES["append_events"]
    assert forms["binary"].count(")b::") == 8 and ")b::" not in forms["text"]
    assert forms["text"].count(")s::") == forms["binary"].count(")s::") + 8
    assert len(forms["text"]) == len(forms["binary"])


async def test_both_forms_append_every_event_and_the_store_gets_its_statement_back(postgres_db: str) -> None:
    result = await measure(StoreCostConfig(requests=3, events=2, rounds=1, postgres=postgres_db))
    assert result["appends_per_round"] == 6
    assert set(result["us_per_append"]) == {"binary", "text"}
    assert all(len(v) == 1 and v[0] > 0 for v in result["us_per_append"].values())
    assert line(result).startswith("request store (Postgres): ")
    assert postgres.QUERIES["append_events"] == statements()["binary"]
    # Two forms × 3 requests, each its first event and 2 offers, each offer an insurer's answer.
    with psycopg.connect(postgres_db) as conn:
        assert conn.execute("SELECT count(*) FROM osago_events").fetchone() == (18,)
        assert conn.execute("SELECT count(*) FROM osago_quotes").fetchone() == (6,)
