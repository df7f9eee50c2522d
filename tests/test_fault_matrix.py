"""The fault matrix over the whole mesh: for each way insurers fail, on some insurers, the
customer still gets every healthy offer, a clear reason for each failing insurer, and the end of
the session within its limit."""

from __future__ import annotations

import pytest

from osago_bench.faults import SCENARIOS, MatrixConfig, Scenario, run_scenario
from tests.conftest import load_example

pytestmark = pytest.mark.functional

# Small and quick: 1 s HTTP timeouts against a 2.5 s session limit, breakers that open after 3
# failures and probe again after half a second; every service in this event loop.
CONFIG = MatrixConfig(
    limit_s=2.5, sessions_per_wave=3, waves=2, http_timeout_s=1.0, breaker_open_s=0.5, processes=False
)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_fault_mode_keeps_sessions_complete_and_honest(scenario: Scenario) -> None:
    report = await run_scenario(scenario, load_example(), CONFIG)
    assert report.finished_within_limit == report.sessions, report
    assert report.healthy_offers_delivered == report.healthy_offers_issued, report
    assert report.duplicates == 0 and report.invented == 0
    assert report.unexpected_reasons == [], report.failure_reasons
    assert report.failure_reasons, "the faulty insurers were reported"
    if scenario.name in ("down", "error", "malformed", "blackhole"):
        assert report.breakers_opened == sorted(scenario.faulty), report
        assert report.breakers_closed_after_heal is True, report
    if scenario.name == "blackhole":
        # Healthy insurers answer in a fraction of a second, not after the blackhole's timeout.
        assert report.healthy_last_offer_p99_s is not None and report.healthy_last_offer_p99_s < CONFIG.http_timeout_s
    if scenario.name == "outage":
        during = report.sessions - CONFIG.sessions_per_wave
        assert report.statuses.get("SESSION_STATUS_UPSTREAM_OUTAGE") == during, report.statuses
    if scenario.name == "decline":
        assert report.failure_reasons == {"declined": CONFIG.sessions_per_wave * CONFIG.waves * 3}
