"""A real Prometheus (Debian's package, a private server) scrapes the mesh every 250 ms while a
customer gets quotes through web_bridge, and what its HTTP API answers is what happened: one
session started and finished, each insurer's offers as the simulator's ledger has them, every
gateway's breaker closed and its calls timed, the bridge's stream closed; the chart's alert
rules evaluate on these series without error and none fires."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from osago_common.metrics import MetricsEndpoint
from tests.conftest import EXAMPLES, start_mesh
from tests.prometheus_server import prometheus_server, query, until
from web_bridge.service import BridgeService
from web_bridge.settings import BridgeSettings

pytestmark = pytest.mark.functional

ALERTS = Path(__file__).resolve().parent.parent / "helm" / "osago" / "files" / "alerts.yaml"


def address(url: str) -> str:
    return url.removeprefix("http://").removesuffix("/metrics")


async def test_prometheus_scraping_the_mesh_during_a_session_sees_what_happened() -> None:
    # Every HTTP call and the stream bounded: a stall fails with where it stalled, not a timeout.
    async with (
        start_mesh(n=4, time_scale=0.02) as mesh,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
    ):
        bridge = BridgeService(
            BridgeSettings(aggregator_target=mesh.target, port=0, metrics=MetricsEndpoint("127.0.0.1", 0))
        )
        await bridge.start()
        try:
            assert bridge.metrics_server is not None
            jobs = {
                "osago-aggregator": [address(mesh.metrics["aggregator"])],
                "osago-gateway": [address(mesh.metrics[f"gateway {i}"]) for i in mesh.gateway_targets],
                "osago-bridge": [bridge.metrics_server.address],
            }
            async with prometheus_server(jobs, [ALERTS]) as prometheus:
                # Every endpoint scraped, nothing started yet.
                await until(http, prometheus, "sum(up)", 6)
                await until(http, prometheus, "sum(osago_sessions_started_total)", 0)

                application = (EXAMPLES / "moscow-young-driver.json").read_text(encoding="utf-8")
                headers = {"Content-Type": "application/json"}
                async with http.post(f"{bridge.url}/osago/quotes", data=application, headers=headers) as response:
                    created = await response.json()
                    assert response.status == 201, created
                protocols = ("osago.v1", f"access-token.{created['accessToken']}")
                ws_url = bridge.url.replace("http", "ws", 1) + f"/osago/quotes/{created['requestId']}/stream"
                async with http.ws_connect(ws_url, protocols=protocols) as ws, asyncio.timeout(30):
                    messages = [m.data async for m in ws]
                assert "sessionFinished" in messages[-1]
                ledger = Counter(o["insurer_id"] for o in await mesh.ledger(created["requestId"]))

                await until(http, prometheus, "sum(osago_sessions_finished_total)", 1)
                await until(http, prometheus, 'osago_bridge_streams_closed_total{by="server"}', 1)
                assert [v for _, v in await query(http, prometheus, "osago_sessions_started_total")] == [1]
                assert [v for _, v in await query(http, prometheus, "osago_sessions_running")] == [0]
                offers = await query(http, prometheus, "sum by (insurer) (osago_offers_total)")
                assert {labels["insurer"]: v for labels, v in offers} == {i: ledger[i] for i in mesh.gateway_targets}
                breakers = await query(http, prometheus, 'osago_breaker_state{job="osago-gateway"}')
                assert sorted((labels["insurer"], v) for labels, v in breakers) == [
                    (i, 0) for i in sorted(mesh.gateway_targets)
                ]
                creates = await query(
                    http, prometheus, 'sum by (insurer) (osago_insurer_call_duration_seconds_count{step="create"})'
                )
                assert {labels["insurer"]: v for labels, v in creates} == dict.fromkeys(mesh.gateway_targets, 1)
                lag = await query(
                    http,
                    prometheus,
                    "histogram_quantile(0.99, sum by (le) (osago_event_delivery_lag_seconds_bucket))",
                )
                assert len(lag) == 1 and 0 <= lag[0][1] <= 5.0
                # The chart's alert rules run on the real series, and none fires.
                async with http.get(f"{prometheus}/api/v1/rules") as response:
                    groups = (await response.json())["data"]["groups"]
                rules = [r for g in groups for r in g["rules"]]
                assert len(rules) >= 6
                assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
                assert await query(http, prometheus, "ALERTS") == []
                # No request id, customer or application value in any series.
                series = await query(http, prometheus, '{__name__=~"osago_.+"}')
                assert created["requestId"] not in str(series)
        finally:
            await bridge.stop()
