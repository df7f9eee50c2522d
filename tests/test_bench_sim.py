"""`osago bench sim`: the simulator's CPU per HTTP request under a fixed mix, measured against a
running simulator (here one in this process, so the CPU counted is this process's)."""

from __future__ import annotations

import os

import pytest

from insurer_sim import SimConfig, SimServer
from insurer_sim.profiles import first
from osago_bench.cli import DEFAULT_APPLICATION, load_application
from osago_bench.simcost import SimCostConfig, line, measure

pytestmark = pytest.mark.functional


async def test_the_fixed_mix_is_a_create_then_its_polls_and_the_cost_is_cpu_over_requests() -> None:
    async with SimServer(SimConfig(insurers=first(3), time_scale=0.01, seed=1)) as sim:
        config = SimCostConfig(seconds=1.0, concurrency=2, polls=3, sim=sim.url, pid=os.getpid())
        result = await measure(config, load_application(DEFAULT_APPLICATION))
    assert result["failed"] == 0
    # Each application costs its create and three polls: whole applications, but for the last
    # one of each client, cut short by the end of the window at most.
    assert result["requests"] >= 8
    assert result["sim_ms_per_request"] == pytest.approx(result["sim_cpu_s"] * 1000 / result["requests"], rel=0.01)
    assert line(result).startswith(f"simulator: {result['sim_ms_per_request']} ms CPU per HTTP request")


@pytest.mark.parametrize(("own_ports", "server"), [(True, "own ports"), (False, "shared port")])
async def test_the_simulator_it_starts_serves_the_insurers_on_their_own_ports_or_the_shared_one(
    own_ports: bool, server: str
) -> None:
    config = SimCostConfig(seconds=0.5, concurrency=2, polls=1, insurers=3, own_ports=own_ports)
    result = await measure(config, load_application(DEFAULT_APPLICATION))
    assert result["failed"] == 0 and result["requests"] >= 2
    assert result["config"]["server"] == server
    assert line(result).endswith(f"2 clients, {server})")
