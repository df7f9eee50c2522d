"""Every service's /metrics, read over HTTP as Prometheus reads it and parsed by prometheus-client's
parser, moves as an operator would expect from what happened: a session's start, end, offers
and failures; a breaker opening; retries; the quota waiting and refusing; sessions shed; the
bridge's streams. `promtool check metrics` accepts every endpoint's output. Late sessions and
the breaker's half-open state, which need time to pass, are checked on the injected clock."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import aiohttp
import grpc
import pytest
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import events_pb2
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aggregator.metrics import LATE_AFTER_S, AggregatorMetrics
from aggregator.session import reason_name
from osago_common.breaker import BreakerConfig, BreakerState, CircuitBreaker
from osago_common.clock import FakeClock
from osago_common.env import SettingsError
from osago_common.metrics import Collect, MetricsEndpoint, breaker_metrics, new_registry
from tests.conftest import EXAMPLES, load_example, start_mesh
from tests.metrics_kit import Scrape, promtool_check, scrape
from tests.test_chart import HISTOGRAMS, METRICS
from web_bridge.service import BridgeService
from web_bridge.settings import BridgeSettings

Status = events_pb2.SessionStatus
NEVER_DECLINES = {"alfa": {"decline_rate": 0.0}}

# The signals osago_sessions_shed_total is labelled by (the README lists them).
SHED_SIGNALS = ("sessions", "loop_lag", "queue_wait", "adaptive_cap")


async def session(stub: object, time_limit_s: float | None = None) -> list[events_pb2.QuoteEvent]:
    request = pb.GetQuotesRequest(application=load_example())
    if time_limit_s is not None:
        request.time_limit.FromMilliseconds(int(time_limit_s * 1000))
    return [r.event async for r in stub.GetQuotes(request, timeout=30)]  # type: ignore[attr-defined]


def parse(text: str) -> Scrape:
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return Scrape(text, samples)


# --- on the injected clock ----------------------------------------------------------------------


async def test_an_opening_breaker_reads_open_then_half_open_once_its_time_is_up() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerConfig(window_size=2, minimum_calls=2, open_duration_s=10.0), clock)
    registry = new_registry()
    registry.register(Collect(lambda: breaker_metrics({"alfa": breaker})))

    def read() -> Scrape:
        return parse(generate_latest(registry).decode())

    assert read().value("osago_breaker_state", insurer="alfa") == 0
    for _ in range(2):
        permit = breaker.try_acquire()
        assert permit is not None
        permit.failure(0.1)
    opened = read()
    assert opened.value("osago_breaker_state", insurer="alfa") == 2
    assert opened.value("osago_breaker_transitions_total", insurer="alfa", to="open") == 1
    assert opened.value("osago_breaker_transitions_total", insurer="alfa", to="half_open") == 0
    await clock.advance(10.0)
    probing = read()
    assert probing.value("osago_breaker_state", insurer="alfa") == 1
    assert probing.value("osago_breaker_transitions_total", insurer="alfa", to="half_open") == 1
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_session_is_late_only_past_its_deadline_by_more_than_the_allowance() -> None:
    metrics = AggregatorMetrics(["alfa"])
    created = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    deadline = created + timedelta(seconds=60)
    metrics.session_finished(Status.SESSION_STATUS_COMPLETED, created, deadline, created + timedelta(seconds=12))
    metrics.session_finished(
        Status.SESSION_STATUS_DEADLINE_EXCEEDED, created, deadline, deadline + timedelta(seconds=LATE_AFTER_S / 2)
    )
    metrics.session_finished(
        Status.SESSION_STATUS_DEADLINE_EXCEEDED, created, deadline, deadline + timedelta(seconds=LATE_AFTER_S * 2)
    )
    read = parse(generate_latest(metrics.registry).decode())
    assert read.value("osago_sessions_late_total") == 1
    assert read.value("osago_sessions_finished_total", outcome="completed") == 1
    assert read.value("osago_sessions_finished_total", outcome="deadline_exceeded") == 2
    assert read.value("osago_session_duration_seconds_count") == 3
    assert read.value("osago_session_duration_seconds_bucket", le="20.0") == 1
    assert read.value("osago_session_duration_seconds_bucket", le="60.0") == 1
    assert read.value("osago_session_duration_seconds_bucket", le="65.0") == 3


# --- over HTTP, on the running mesh --------------------------------------------------------------


@pytest.mark.functional
async def test_a_sessions_counters_match_what_the_customer_saw_and_the_insurers_ledger() -> None:
    async with start_mesh(n=4, time_scale=0.02) as mesh, aiohttp.ClientSession() as http:
        assert set(mesh.metrics) == {"aggregator", *(f"gateway {i}" for i in mesh.gateway_targets)}
        events = await session(mesh.stub)
        request_id = events[0].request_id
        aggregator = await scrape(http, mesh.metrics["aggregator"])
        ledger = Counter(o["insurer_id"] for o in await mesh.ledger(request_id))
        status = events[-1].session_finished.status
        outcome = Status.Name(status).removeprefix("SESSION_STATUS_").lower()
        assert aggregator.value("osago_sessions_started_total") == 1
        assert aggregator.value("osago_sessions_finished_total", outcome=outcome) == 1
        assert aggregator.total("osago_sessions_finished_total") == 1
        assert aggregator.value("osago_sessions_running") == 0
        assert aggregator.value("osago_sessions_late_total") == 0
        for signal in SHED_SIGNALS:
            assert aggregator.value("osago_sessions_shed_total", signal=signal) == 0
        assert aggregator.value("osago_session_duration_seconds_count") == 1
        for insurer_id in mesh.gateway_targets:
            assert aggregator.value("osago_offers_total", insurer=insurer_id) == ledger[insurer_id]
            assert aggregator.value("osago_breaker_state", insurer=insurer_id) == 0
        failures = Counter(
            (e.insurer_failed.insurer_id, reason_name(e.insurer_failed.reason))
            for e in events
            if e.HasField("insurer_failed")
        )
        for (insurer_id, reason), count in failures.items():
            assert aggregator.value("osago_insurer_failures_total", insurer=insurer_id, reason=reason) == count
        assert aggregator.total("osago_insurer_failures_total") == sum(failures.values())
        # Every event after the first was written while the caller listened.
        assert aggregator.value("osago_event_delivery_lag_seconds_count") == len(events) - 1
        # Operators' series name insurers, steps, reasons and outcomes: never the request.
        assert request_id not in aggregator.text
        for insurer_id in mesh.gateway_targets:
            gateway = await scrape(http, mesh.metrics[f"gateway {insurer_id}"])
            assert gateway.value("osago_insurer_call_duration_seconds_count", insurer=insurer_id, step="create") == 1
            assert gateway.value("osago_insurer_call_duration_seconds_count", insurer=insurer_id, step="poll") >= 0
            assert gateway.value("osago_breaker_state", insurer=insurer_id) == 0
            assert gateway.value("osago_insurer_retries_total", insurer=insurer_id) == 0
            assert gateway.value("osago_gateway_calls_in_flight", insurer=insurer_id) == 0
            assert request_id not in gateway.text
            # A registry per service: in one process, each gateway serves its own insurer only.
            insurers = {v for (_, labels), _v in gateway.samples.items() for k, v in labels if k == "insurer"}
            assert insurers == {insurer_id}
            assert "osago_sessions_started_total" not in gateway.names()
            promtool_check(gateway.text)
        promtool_check(aggregator.text)


@pytest.mark.functional
async def test_an_insurer_failing_every_call_is_retried_then_its_breaker_opens() -> None:
    # Two attempts per call and a breaker over four calls: two sessions fail four calls.
    overrides = {"retry_max_attempts": 2, "breaker_window": 4, "breaker_min_calls": 4, "breaker_open_s": 60.0}
    async with (
        start_mesh(ids=["alfa", "ingos"], time_scale=0.02, gateway_overrides=overrides) as mesh,
        aiohttp.ClientSession() as http,
    ):
        await mesh.set_fault("alfa", "error", rate=1.0, status=500)
        alfa_url = mesh.metrics["gateway alfa"]
        assert (await scrape(http, alfa_url)).value("osago_breaker_state", insurer="alfa") == 0
        for _ in range(2):
            await session(mesh.stub)
        alfa = await scrape(http, alfa_url)
        assert alfa.value("osago_breaker_state", insurer="alfa") == 2
        assert alfa.value("osago_breaker_transitions_total", insurer="alfa", to="open") == 1
        assert alfa.value("osago_insurer_retries_total", insurer="alfa") == 2
        assert alfa.value("osago_insurer_call_duration_seconds_count", insurer="alfa", step="create") == 4
        ingos = await scrape(http, mesh.metrics["gateway ingos"])
        assert ingos.value("osago_breaker_state", insurer="ingos") == 0
        # The customer saw the insurer's errors, then (third session) its open breaker.
        await session(mesh.stub)
        aggregator = await scrape(http, mesh.metrics["aggregator"])
        assert aggregator.value("osago_insurer_failures_total", insurer="alfa", reason="insurer_error") == 2
        assert aggregator.value("osago_insurer_failures_total", insurer="alfa", reason="circuit_open") == 1
        # The gateway answered every time: the aggregator's own breaker toward it stays closed.
        assert aggregator.value("osago_breaker_state", insurer="alfa") == 0
        promtool_check(alfa.text)


@pytest.mark.functional
async def test_a_quota_with_room_makes_calls_wait_and_one_without_refuses_them() -> None:
    # One call a second: the first poll after the create waits for its slot. (alfa declines 2 %
    # of applications: not here.)
    waiting = {"rate_limit_per_s": 1.0, "rate_limit_burst": 1}
    async with (
        start_mesh(ids=["alfa"], time_scale=0.02, gateway_overrides=waiting, sim_overrides=NEVER_DECLINES) as mesh,
        aiohttp.ClientSession() as http,
    ):
        events = await session(mesh.stub)
        assert events[-1].session_finished.quotes_received == 1
        alfa = await scrape(http, mesh.metrics["gateway alfa"])
        assert alfa.value("osago_quota_waits_total", insurer="alfa") >= 1
        assert alfa.value("osago_quota_refusals_total", insurer="alfa") == 0
    # One call every 100 s: after the create no poll fits in a 3 s session.
    refusing = {"rate_limit_per_s": 0.01, "rate_limit_burst": 1}
    async with (
        start_mesh(
            ids=["alfa"],
            time_scale=0.02,
            session_limit_s=3.0,
            gateway_overrides=refusing,
            sim_overrides=NEVER_DECLINES,
        ) as mesh,
        aiohttp.ClientSession() as http,
    ):
        events = await session(mesh.stub)
        failed = [e.insurer_failed for e in events if e.HasField("insurer_failed")]
        assert [reason_name(f.reason) for f in failed] == ["rate_limited"]
        alfa = await scrape(http, mesh.metrics["gateway alfa"])
        assert alfa.value("osago_quota_refusals_total", insurer="alfa") >= 1
        assert alfa.value("osago_quota_waits_total", insurer="alfa") == 0
        aggregator = await scrape(http, mesh.metrics["aggregator"])
        assert aggregator.value("osago_insurer_failures_total", insurer="alfa", reason="rate_limited") == 1


@pytest.mark.functional
async def test_a_session_refused_by_load_shedding_is_counted_shed_and_the_running_one_running() -> None:
    async with (
        start_mesh(
            ids=["alfa"], time_scale=0.02, session_limit_s=5.0, aggregator_overrides={"max_sessions": 1}
        ) as mesh,
        aiohttp.ClientSession() as http,
    ):
        await mesh.set_fault("alfa", "blackhole")  # the session runs to its deadline
        request = pb.CreateQuoteRequestRequest(application=load_example())
        await mesh.stub.CreateQuoteRequest(request, timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await mesh.stub.CreateQuoteRequest(request, timeout=5)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        aggregator = await scrape(http, mesh.metrics["aggregator"])
        assert aggregator.value("osago_sessions_shed_total", signal="sessions") == 1
        for signal in SHED_SIGNALS[1:]:  # every signal is exported, refusing or not
            assert aggregator.value("osago_sessions_shed_total", signal=signal) == 0
        assert aggregator.value("osago_sessions_started_total") == 1
        assert aggregator.value("osago_sessions_running") == 1


@pytest.mark.functional
async def test_a_customer_over_its_creation_limit_is_counted_rate_limited_not_shed() -> None:
    limits = {"customer_create_burst": 1, "customer_create_per_min": 1.0}
    async with (
        start_mesh(ids=["alfa"], time_scale=0.02, aggregator_overrides=limits) as mesh,
        aiohttp.ClientSession() as http,
    ):
        request = pb.CreateQuoteRequestRequest(application=load_example())
        await mesh.stub.CreateQuoteRequest(request, timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await mesh.stub.CreateQuoteRequest(request, timeout=5)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        aggregator = await scrape(http, mesh.metrics["aggregator"])
        assert aggregator.value("osago_sessions_rate_limited_total", limit="customer") == 1
        assert aggregator.value("osago_sessions_rate_limited_total", limit="instance") == 0
        for signal in SHED_SIGNALS:
            assert aggregator.value("osago_sessions_shed_total", signal=signal) == 0
        assert aggregator.value("osago_sessions_started_total") == 1


@pytest.mark.functional
async def test_the_bridge_counts_its_streams_and_every_endpoint_passes_promtool_and_has_the_charts_metrics() -> None:
    async with start_mesh(n=2, time_scale=0.02) as mesh, aiohttp.ClientSession() as http:
        bridge = BridgeService(
            BridgeSettings(aggregator_target=mesh.target, port=0, metrics=MetricsEndpoint("127.0.0.1", 0))
        )
        await bridge.start()
        try:
            assert bridge.metrics_server is not None
            url = bridge.metrics_server.url
            assert bridge.metrics_server.port != bridge.port  # never on the browsers' port
            assert (await scrape(http, url)).value("osago_bridge_streams_open") == 0
            application = (EXAMPLES / "moscow-young-driver.json").read_text(encoding="utf-8")
            headers = {"Content-Type": "application/json"}
            async with http.post(f"{bridge.url}/osago/quotes", data=application, headers=headers) as response:
                created = await response.json()
                assert response.status == 201, created
            protocols = ("osago.v1", f"access-token.{created['accessToken']}")
            ws_url = bridge.url.replace("http", "ws", 1) + f"/osago/quotes/{created['requestId']}/stream"
            async with http.ws_connect(ws_url, protocols=protocols) as ws:
                messages = [m.data async for m in ws]
                assert "sessionFinished" in messages[-1]
                during = await scrape(http, url)
            async with http.get(f"{bridge.url}/osago/nothing-here") as response:
                assert response.status == 404
            after = await scrape(http, url)
            requests = {
                (labels["route"], labels["code"]): value
                for (name, label_set), value in after.samples.items()
                if name == "osago_bridge_http_requests_total"
                for labels in [dict(label_set)]
            }
            assert requests == {
                ("/osago/quotes", "201"): 1,
                ("/osago/quotes/{request_id}/stream", "101"): 1,
                ("unmatched", "404"): 1,
            }
            assert during.value("osago_bridge_streams_closed_total", by="server") == 1
            assert after.value("osago_bridge_streams_open") == 0
            assert after.value("osago_bridge_streams_closed_total", by="client") == 0
            assert after.value("process_cpu_seconds_total") > 0
            promtool_check(after.text)
        finally:
            await bridge.stop()
        texts = [after.text]
        for url in mesh.metrics.values():
            texts.append((await scrape(http, url)).text)
            promtool_check(texts[-1])
        # Every name the chart's alerts and dashboard may use is exported, with its type.
        types = {
            line.split()[2]: line.split()[3]
            for text in texts
            for line in text.splitlines()
            if line.startswith("# TYPE")
        }
        assert {name: types.get(name) for name in METRICS} == {
            name: "histogram" if name in HISTOGRAMS else "gauge" if name.endswith(("_state", "_running")) else "counter"
            for name in METRICS
        }


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, MetricsEndpoint("127.0.0.1", None)),
        ({"OSAGO_METRICS_PORT": ""}, MetricsEndpoint("127.0.0.1", None)),
        ({"OSAGO_METRICS_PORT": "0"}, MetricsEndpoint("127.0.0.1", 0)),
        ({"OSAGO_METRICS_PORT": "9464", "OSAGO_METRICS_HOST": "0.0.0.0"}, MetricsEndpoint("0.0.0.0", 9464)),
    ],
)
def test_the_metrics_endpoint_is_off_unless_a_port_is_given(env: dict[str, str], expected: MetricsEndpoint) -> None:
    assert MetricsEndpoint.from_env(env) == expected


@pytest.mark.parametrize("port", ["metrics", "-1", "65536"])
def test_a_metrics_port_that_is_no_port_is_refused_naming_the_variable(port: str) -> None:
    with pytest.raises(SettingsError, match="OSAGO_METRICS_PORT"):
        MetricsEndpoint.from_env({"OSAGO_METRICS_PORT": port})
