"""`osago bench failover` once, small: sessions over three aggregators and two replicas per gateway
on Postgres + Redis while one aggregator is killed, one gateway replica is killed and one
aggregator is stopped; the report proves nothing was lost, repeated, made twice or late."""

from __future__ import annotations

import pytest

from osago_bench.failover import FailoverConfig, run_failover
from tests.conftest import load_example

pytestmark = pytest.mark.functional


async def test_sessions_survive_an_aggregator_killed_a_replica_killed_and_an_aggregator_stopped() -> None:
    report = await run_failover(load_example(), FailoverConfig(sessions=15, time_scale=0.2, limit_s=15.0))
    assert report.failed == {}
    assert report.finished == report.sessions == 15
    assert report.offers_expected == report.offers_delivered > 0
    assert (report.lost, report.duplicated, report.invented) == (0, 0, 0)
    assert report.declines_delivered == report.declines_expected
    assert report.applications_created_twice == 0
    assert report.finished_after_deadline == 0
    # Sessions of both stopped instances went on elsewhere; the killed one's after its lease
    # lapsed (2 s), the stopped one's at once, as it handed them over.
    assert report.taken_over > 0 and report.handed_over > 0
    assert report.takeover_delay_p50_ms is not None and report.handover_delay_p50_ms is not None
    assert report.handover_delay_p50_ms < report.takeover_delay_p50_ms
    assert set(report.events) >= {"aggregator 1 killed", "aggregator 2 stopped"}
    assert report.ok
