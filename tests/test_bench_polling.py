"""`osago bench polling`: the polling policy offline, on the simulator's latency profiles."""

from __future__ import annotations

from osago_bench.polling import PollingConfig, run_polling
from osago_bench.polling import table as polling_table


def test_the_offline_benchmark_shows_the_trade_off_and_the_chosen_point() -> None:
    config = PollingConfig(insurers=8, applications=300, warmup=50)
    points = run_polling(config)
    by = {(p.insurer_id, p.choice): p for p in points}
    chosen = {p.insurer_id: p for p in points if p.chosen}
    assert set(chosen) == {"alfa", "ingos", "reso", "vsk", "sogaz", "renins", "soglasie", "tstrah"}
    for insurer in ("alfa", "ingos", "sogaz", "renins"):
        # An exact hint, trusted: one poll, at the moment the offer is ready (plus the round trip).
        assert chosen[insurer].requests_per_application == 2.0 and chosen[insurer].hints == "honest"
    for insurer in ("reso", "vsk", "soglasie", "tstrah"):
        before, now = by[(insurer, "before")], chosen[insurer]
        assert now.choice == "p5/95, gaps ≤ 1 s" and len([p for p in points if p.insurer_id == insurer]) == 11
        assert now.requests_per_application < before.requests_per_application
    assert "<- chosen" in polling_table(points, config)
