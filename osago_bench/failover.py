"""`osago bench failover`: many concurrent sessions over several aggregator instances and gateway
replicas on Postgres + Redis, while one aggregator is killed (SIGKILL), one gateway replica is
killed mid-call (SIGKILL) and another aggregator is stopped as a deploy stops it (SIGTERM).

Every session is a customer with the typed client (osago_client), which resumes a broken stream on
any instance. Afterwards each session's events are held against the simulator's ledger and the
store's ownership trail: offers expected vs delivered, lost, duplicated, invented, insurer
applications created twice, sessions finished after their deadline, and how long the sessions of
the stopped instances went unattended (the takeover and handover delays).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import psycopg
from osago.v1 import application_pb2, events_pb2, gateway_service_pb2, gateway_service_pb2_grpc

from osago_client import QuoteClient, QuoteError
from osago_common.grpc_guard import CUSTOMER_KEY
from osago_mesh.processes import MeshOptions, RunningMesh, process_mesh

DECLINED = 4  # osago.v1.FailureReason.FAILURE_REASON_DECLINED
# The session ends at its deadline; its last event is stamped a scheduler's tick later.
LATE_AFTER = timedelta(seconds=0.5)


@dataclass(frozen=True)
class FailoverConfig:
    sessions: int = 60
    # Customers arrive over this many seconds (the client spreads them over the instances it is
    # connected to; all at once they would land on whichever instance connected first).
    ramp_s: float = 1.0
    insurers: int = 10
    time_scale: float = 0.25
    limit_s: float = 20.0
    aggregators: int = 3
    gateway_replicas: int = 2
    # Seconds after the sessions started: SIGKILL aggregator 1, SIGKILL the replica holding a call
    # of the slowest insurer, SIGTERM aggregator 2.
    kill_aggregator_at_s: float = 1.5
    kill_gateway_at_s: float = 2.0
    drain_aggregator_at_s: float = 2.5
    # An instance's lease, and how often instances look for orphans (aggregator settings).
    lease_ttl_s: float = 2.0
    takeover_scan_s: float = 0.25
    seed: int = 5
    postgres_url: str | None = None
    redis_url: str | None = None


@dataclass
class FailoverReport:
    sessions: int = 0
    finished: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    offers_expected: int = 0
    offers_delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    invented: int = 0
    declines_expected: int = 0
    declines_delivered: int = 0
    applications_created_twice: int = 0
    finished_after_deadline: int = 0
    taken_over: int = 0
    handed_over: int = 0
    takeover_delay_p50_ms: float | None = None
    takeover_delay_p99_ms: float | None = None
    handover_delay_p50_ms: float | None = None
    handover_delay_p99_ms: float | None = None
    events: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.sessions > 0
            and self.finished == self.sessions
            and (self.lost, self.duplicated, self.invented) == (0, 0, 0)
            and self.declines_delivered == self.declines_expected
            and self.applications_created_twice == 0
            and self.finished_after_deadline == 0
            and self.taken_over > 0
            and self.handed_over > 0
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class _Session:
    events: list[events_pb2.QuoteEvent] = field(default_factory=list)
    error: str | None = None


async def _customer(
    client: QuoteClient, application: application_pb2.Application, time_limit_s: float, delay_s: float
) -> _Session:
    session = _Session()
    await asyncio.sleep(delay_s)
    try:
        async for event in client.get_quotes(application, time_limit_s=time_limit_s, fresh=True):
            session.events.append(event)
    except QuoteError as error:
        session.error = error.code
    return session


async def _slowest_call_holder(mesh: RunningMesh, insurer_id: str) -> str | None:
    """The name of a replica of the insurer's gateway with a call in flight, if any."""
    for index, address in enumerate(mesh.replicas[insurer_id], 1):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel)
            with contextlib.suppress(grpc.aio.AioRpcError):
                status = await stub.GetGatewayStatus(gateway_service_pb2.GetGatewayStatusRequest(), timeout=2)
                if status.in_flight:
                    return f"gateway {insurer_id} {index}"
    return None


async def _chaos(mesh: RunningMesh, config: FailoverConfig, started: float, moments: dict[str, datetime]) -> None:
    loop = asyncio.get_running_loop()
    slowest = list(mesh.replicas)[-1]  # the last insurer asked: the slowest of the first ten

    async def at(offset: float) -> None:
        await asyncio.sleep(max(0.0, started + offset - loop.time()))

    await at(config.kill_aggregator_at_s)
    mesh.children["aggregator 1"].process.kill()
    moments["aggregator 1 killed"] = datetime.now(UTC)
    await at(config.kill_gateway_at_s)
    holder = await _slowest_call_holder(mesh, slowest)
    if holder is not None:
        mesh.children[holder].process.kill()
        moments[f"{holder} killed"] = datetime.now(UTC)
    await at(config.drain_aggregator_at_s)
    mesh.children["aggregator 2"].process.send_signal(signal.SIGTERM)
    moments["aggregator 2 stopped"] = datetime.now(UTC)


async def _sim(http: aiohttp.ClientSession, sim: str, path: str, reference: str) -> Any:
    async with http.get(f"{sim}{path}", params={"reference": reference}) as response:
        response.raise_for_status()
        return await response.json()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def account(
    mesh: RunningMesh, sessions: list[_Session], moments: dict[str, datetime], report: FailoverReport
) -> None:
    """Holds every session's events against the ledger and the ownership trail."""
    ids = []
    async with aiohttp.ClientSession() as http:
        for session in sessions:
            if session.error is not None or not session.events:
                report.failed[session.error or "no events"] = report.failed.get(session.error or "no events", 0) + 1
                continue
            events = session.events
            request_id = events[0].request_id
            ids.append(request_id)
            finished = events[-1].HasField("session_finished")
            report.finished += finished
            deadline = events[0].session_started.deadline.ToDatetime(tzinfo=UTC)
            if finished and events[-1].time.ToDatetime(tzinfo=UTC) > deadline + LATE_AFTER:
                report.finished_after_deadline += 1
            ledger = await _sim(http, mesh.sim, "/_sim/ledger", request_id)
            expected = Counter((o["insurer_id"], o["offer_id"]) for o in ledger["offers"])
            delivered = Counter(
                (e.quote_received.quote.insurer_id, e.quote_received.quote.offer_id)
                for e in events
                if e.HasField("quote_received")
            )
            report.offers_expected += sum(expected.values())
            report.offers_delivered += sum(delivered.values())
            report.lost += sum((expected - delivered).values())
            report.invented += sum(n for key, n in delivered.items() if key not in expected)
            # Each insurer answers once per session: an offer or a failure given twice is a duplicate.
            answers = Counter(
                e.quote_received.quote.insurer_id or e.insurer_failed.insurer_id
                for e in events
                if e.HasField("quote_received") or e.HasField("insurer_failed")
            )
            report.duplicated += sum(n - 1 for n in answers.values() if n > 1)
            report.declines_expected += len(ledger["declines"])
            report.declines_delivered += sum(
                1 for e in events if e.HasField("insurer_failed") and e.insurer_failed.reason == DECLINED
            )
            applications = Counter(
                a["insurer_id"] for a in (await _sim(http, mesh.sim, "/_sim/stats", request_id))["applications"]
            )
            report.applications_created_twice += sum(n - 1 for n in applications.values() if n > 1)
    report.events = {name: moment.isoformat() for name, moment in moments.items()}
    assert mesh.postgres_url is not None
    async with await psycopg.AsyncConnection.connect(mesh.postgres_url) as conn:
        cursor = await conn.execute(
            "SELECT claimed_from, claimed_at FROM osago_requests WHERE id = ANY(%s) AND claimed_at IS NOT NULL", (ids,)
        )
        rows = await cursor.fetchall()
    takeovers = [
        (claimed_at - moments["aggregator 1 killed"]).total_seconds() * 1000
        for source, claimed_at in rows
        if str(source).startswith("aggregator-1-")
    ]
    handovers = [
        (claimed_at - moments["aggregator 2 stopped"]).total_seconds() * 1000
        for source, claimed_at in rows
        if str(source).startswith("aggregator-2-")
    ]
    report.taken_over, report.handed_over = len(takeovers), len(handovers)
    report.takeover_delay_p50_ms = _percentile(takeovers, 50)
    report.takeover_delay_p99_ms = _percentile(takeovers, 99)
    report.handover_delay_p50_ms = _percentile(handovers, 50)
    report.handover_delay_p99_ms = _percentile(handovers, 99)


async def run_failover(application: application_pb2.Application, config: FailoverConfig) -> FailoverReport:
    options = MeshOptions(
        insurers=config.insurers,
        time_scale=config.time_scale,
        aggregator_port=0,
        sim_port=0,
        page_port=0,
        seed=config.seed,
        session_limit_s=config.limit_s,
        backend="shared",
        aggregators=config.aggregators,
        gateway_replicas=config.gateway_replicas,
        postgres_url=config.postgres_url,
        redis_url=config.redis_url,
    )
    env = {"OSAGO_LEASE_TTL_S": str(config.lease_ttl_s), "OSAGO_TAKEOVER_SCAN_S": str(config.takeover_scan_s)}
    report = FailoverReport(sessions=config.sessions)
    moments: dict[str, datetime] = {}
    async with process_mesh(options, web=False, env=env) as mesh:
        async with contextlib.AsyncExitStack() as clients:
            # A client per customer, naming it as core-app names the customer it calls for, so the
            # per-customer limits on creation and streams apply to each, not to all of them at once.
            customers = [
                await clients.enter_async_context(
                    QuoteClient(
                        mesh.target,
                        timeout_s=config.limit_s + 30,
                        max_resumes=20,
                        resume_backoff_s=0.1,
                        metadata=[(CUSTOMER_KEY, f"failover-customer-{n}")],
                    )
                )
                for n in range(config.sessions)
            ]
            started = asyncio.get_running_loop().time()
            tasks = [
                asyncio.create_task(_customer(client, application, config.limit_s, n * config.ramp_s / config.sessions))
                for n, client in enumerate(customers)
            ]
            chaos = asyncio.create_task(_chaos(mesh, config, started, moments))
            sessions = await asyncio.gather(*tasks)
            await chaos
        await account(mesh, sessions, moments, report)
    return report


def table(report: FailoverReport) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} ms"

    rows = [
        ("sessions finished", f"{report.finished} / {report.sessions}"),
        ("failed", ", ".join(f"{k} {v}" for k, v in sorted(report.failed.items())) or "0"),
        ("offers expected / delivered", f"{report.offers_expected} / {report.offers_delivered}"),
        ("lost / duplicated / invented", f"{report.lost} / {report.duplicated} / {report.invented}"),
        ("declines expected / delivered", f"{report.declines_expected} / {report.declines_delivered}"),
        ("insurer applications created twice", str(report.applications_created_twice)),
        ("finished after their deadline", str(report.finished_after_deadline)),
        (
            "taken over (killed instance)",
            f"{report.taken_over}: p50 {ms(report.takeover_delay_p50_ms)}, p99 {ms(report.takeover_delay_p99_ms)}",
        ),
        (
            "handed over (SIGTERM)",
            f"{report.handed_over}: p50 {ms(report.handover_delay_p50_ms)}, p99 {ms(report.handover_delay_p99_ms)}",
        ),
        ("verdict", "ok" if report.ok else "FAILED"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
