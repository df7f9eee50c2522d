"""The fault matrix: for each way an insurer can fail, run sessions over the whole mesh with some
insurers in that fault and measure what the customer gets.

Per mode it reports: sessions finished within their limit (must be 100 %), healthy insurers'
offers delivered against the simulator's ledger (must be 100 %), duplicates and invented offers
(0), the failure reasons seen for the faulty insurers, how long a session spends on an insurer
whose breaker is open (p99, target ≤ 50 ms), and whether each breaker closed again after `heal`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from google.protobuf import duration_pb2
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import application_pb2, events_pb2, gateway_service_pb2, quote_pb2

from osago_mesh.client import Mesh, connect
from osago_mesh.local import start_mesh
from osago_mesh.processes import MeshOptions, process_mesh

CLOSED = gateway_service_pb2.BreakerState.BREAKER_STATE_CLOSED
OPEN = gateway_service_pb2.BreakerState.BREAKER_STATE_OPEN


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: dict[str, Any]
    # The reasons a customer may see for the faulty insurers (an open breaker may answer for any).
    reasons: frozenset[str]
    # Insurers put in the fault; empty means every insurer (a shared outage).
    faulty: tuple[str, ...] = ("alfa", "ingos", "reso")


_OPEN = "circuit_open"
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("down", {"mode": "down"}, frozenset({"unavailable", _OPEN})),
    Scenario("blackhole", {"mode": "blackhole"}, frozenset({"timeout", "deadline", _OPEN})),
    Scenario("slow", {"mode": "slow", "delay_s": 8.0}, frozenset({"timeout", "deadline", _OPEN})),
    Scenario("error", {"mode": "error", "status": 503, "rate": 1.0}, frozenset({"insurer_error", _OPEN})),
    Scenario("ratelimit", {"mode": "ratelimit", "retry_after_s": 1}, frozenset({"rate_limited", "deadline"})),
    Scenario("malformed", {"mode": "malformed", "variant": "random"}, frozenset({"bad_response", _OPEN})),
    # Healthy half the time: then the insurer's ordinary answers, declines included.
    Scenario("flapping", {"mode": "flapping", "period_s": 1.0}, frozenset({"insurer_error", "declined", _OPEN})),
    Scenario("decline", {"mode": "decline"}, frozenset({"declined"})),
    # A shared outage: the sessions finish UPSTREAM_OUTAGE, one condition instead of ten errors.
    Scenario("outage", {"mode": "error", "status": 503, "rate": 1.0}, frozenset({"insurer_error", _OPEN}), faulty=()),
)


@dataclass(frozen=True)
class MatrixConfig:
    insurers: int = 10
    time_scale: float = 0.01
    # Each session's time limit; every session must finish within it.
    limit_s: float = 8.0
    sessions_per_wave: int = 4
    waves: int = 3
    # The gateways' per-call HTTP timeout (5 s in production); the slow fault answers after 8 s.
    http_timeout_s: float = 5.0
    breaker_min_calls: int = 3
    breaker_open_s: float = 3.0
    # Slack allowed over the limit for the last event to cross the network.
    finish_slack_s: float = 0.25
    # Every service its own process, as `osago up` runs them (else all in one event loop).
    processes: bool = True


@dataclass
class ModeReport:
    mode: str
    faulty: list[str]
    sessions: int
    finished_within_limit: int
    finished_within_limit_pct: float
    max_session_s: float
    healthy_offers_issued: int
    healthy_offers_delivered: int
    healthy_delivered_pct: float
    duplicates: int
    invented: int
    failure_reasons: dict[str, int]
    # Reasons seen that the fault does not explain (must be empty).
    unexpected_reasons: list[str]
    # p99 over sessions of when the last healthy insurer's offer arrived (seconds after start):
    # a faulty insurer must not hold the healthy ones back.
    healthy_last_offer_p99_s: float | None
    # How the sessions run during the fault finished.
    statuses: dict[str, int]
    # Answers for insurers whose breaker was open when the session began, and how long after the
    # session started each came.
    breaker_open_answers: int
    breaker_open_p99_ms: float | None
    breakers_opened: list[str] = field(default_factory=list)
    breakers_closed_after_heal: bool | None = None

    @property
    def ok(self) -> bool:
        return (
            self.finished_within_limit == self.sessions
            and self.healthy_offers_delivered == self.healthy_offers_issued
            and self.duplicates == 0
            and self.invented == 0
            and not self.unexpected_reasons
            and (self.breaker_open_p99_ms is None or self.breaker_open_p99_ms <= 50.0)
            and self.breakers_closed_after_heal is not False
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _ts(event: events_pb2.QuoteEvent) -> float:
    return float(event.time.ToDatetime().timestamp())


def p99(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


@dataclass
class _Session:
    events: list[events_pb2.QuoteEvent]
    elapsed_s: float
    # Insurers whose gateway breaker was already open when the session's wave began.
    open_at_start: frozenset[str] = frozenset()
    # False for the sessions run after `heal`.
    during_fault: bool = True


async def _one_session(mesh: Mesh, application: application_pb2.Application, limit_s: float) -> _Session:
    loop = asyncio.get_running_loop()
    started = loop.time()
    limit = duration_pb2.Duration()
    limit.FromMilliseconds(int(limit_s * 1000))
    call = mesh.stub.GetQuotes(
        pb.GetQuotesRequest(application=application, time_limit=limit, fresh=True), timeout=limit_s + 10
    )
    events = [response.event async for response in call]
    return _Session(events, loop.time() - started)


async def _wave(
    mesh: Mesh, application: application_pb2.Application, config: MatrixConfig, watched: tuple[str, ...]
) -> list[_Session]:
    open_now = frozenset([i for i in watched if (await mesh.gateway_status(i)).breaker_state == OPEN])
    sessions = await asyncio.gather(
        *(_one_session(mesh, application, config.limit_s) for _ in range(config.sessions_per_wave))
    )
    for session in sessions:
        session.open_at_start = open_now
    return list(sessions)


@contextlib.asynccontextmanager
async def _mesh(config: MatrixConfig) -> AsyncIterator[Mesh]:
    """The mesh a scenario runs on: separate processes (as deployed), or one event loop."""
    gateway = {
        "http_timeout_s": config.http_timeout_s,
        "breaker_min_calls": config.breaker_min_calls,
        "breaker_window": 10,
        "breaker_open_s": config.breaker_open_s,
    }
    if not config.processes:
        async with start_mesh(
            n=config.insurers, time_scale=config.time_scale, seed=None, gateway_overrides=gateway
        ) as local:
            yield local
        return
    options = MeshOptions(
        insurers=config.insurers, time_scale=config.time_scale, aggregator_port=0, sim_port=0, page_port=0
    )
    env = {f"OSAGO_GATEWAY_{name.upper()}": str(value) for name, value in gateway.items()}
    async with (
        process_mesh(options, web=False, env=env) as running,
        connect(running.sim, running.gateways, running.aggregator) as remote,
    ):
        yield remote


async def run_scenario(
    scenario: Scenario, application: application_pb2.Application, config: MatrixConfig
) -> ModeReport:
    async with _mesh(config) as mesh:
        everyone = tuple(mesh.gateway_targets)
        faulty = scenario.faulty or everyone
        for insurer_id in faulty:
            await mesh.set_fault(insurer_id, **scenario.fault)
        sessions: list[_Session] = []
        for _ in range(config.waves):
            sessions += await _wave(mesh, application, config, faulty)
        opened = []
        for insurer_id in faulty:
            status = await mesh.gateway_status(insurer_id)
            if status.rejected_by_breaker_total > 0 or status.breaker_state != CLOSED:
                opened.append(insurer_id)
        closed_after_heal: bool | None = None
        if scenario.fault["mode"] != "decline":
            for insurer_id in faulty:
                await mesh.heal(insurer_id)
            await asyncio.sleep(config.breaker_open_s)  # the breakers' open time runs out
            healed = await _wave(mesh, application, config, faulty)
            for session in healed:
                session.during_fault = False
            sessions += healed
            states = [(await mesh.gateway_status(i)).breaker_state for i in faulty]
            closed_after_heal = all(state == CLOSED for state in states)
        return await _report(mesh, scenario, set(faulty), sessions, opened, closed_after_heal, config)


async def _report(
    mesh: Mesh,
    scenario: Scenario,
    faulty: set[str],
    sessions: list[_Session],
    opened: list[str],
    closed_after_heal: bool | None,
    config: MatrixConfig,
) -> ModeReport:
    within = 0
    issued = delivered = duplicates = invented = 0
    reasons: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[str] = collections.Counter()
    open_ms: list[float] = []
    healthy_last: list[float] = []
    for session in sessions:
        events = session.events
        finished = events[-1].session_finished if events and events[-1].HasField("session_finished") else None
        if finished is not None and session.elapsed_s <= config.limit_s + config.finish_slack_s:
            within += 1
        if finished is not None and session.during_fault:
            statuses[events_pb2.SessionStatus.Name(finished.status)] += 1
        start = _ts(events[0])
        got = [
            (e.quote_received.quote.insurer_id, e.quote_received.quote.offer_id)
            for e in events
            if e.HasField("quote_received")
        ]
        duplicates += len(got) - len(set(got))
        ledger = {(o["insurer_id"], o["offer_id"]) for o in await mesh.ledger(events[0].request_id)}
        invented += len(set(got) - ledger)
        healthy = {entry for entry in ledger if entry[0] not in faulty}
        healthy_times = [
            _ts(e) - start
            for e in events
            if e.HasField("quote_received") and e.quote_received.quote.insurer_id not in faulty
        ]
        if healthy_times:
            healthy_last.append(max(healthy_times))
        issued += len(healthy)
        delivered += len(healthy & set(got))
        for event in events if session.during_fault else ():
            if event.HasField("insurer_failed") and event.insurer_failed.insurer_id in faulty:
                reason = event.insurer_failed.reason
                reasons[quote_pb2.FailureReason.Name(reason).removeprefix("FAILURE_REASON_").lower()] += 1
                breaker_open = event.insurer_failed.insurer_id in session.open_at_start
                if breaker_open and reason == quote_pb2.FailureReason.FAILURE_REASON_CIRCUIT_OPEN:
                    open_ms.append((_ts(event) - start) * 1000)
    open_p99 = p99(open_ms)
    last_p99 = p99(healthy_last)
    unexpected = sorted(set(reasons) - scenario.reasons)
    return ModeReport(
        mode=scenario.name,
        faulty=sorted(faulty),
        sessions=len(sessions),
        finished_within_limit=within,
        finished_within_limit_pct=round(100.0 * within / len(sessions), 1),
        max_session_s=round(max(s.elapsed_s for s in sessions), 3),
        healthy_offers_issued=issued,
        healthy_offers_delivered=delivered,
        healthy_delivered_pct=round(100.0 * delivered / issued, 1) if issued else 100.0,
        duplicates=duplicates,
        invented=invented,
        failure_reasons=dict(reasons),
        unexpected_reasons=unexpected,
        healthy_last_offer_p99_s=None if last_p99 is None else round(last_p99, 3),
        statuses=dict(statuses),
        breaker_open_answers=len(open_ms),
        breaker_open_p99_ms=None if open_p99 is None else round(open_p99, 2),
        breakers_opened=sorted(opened),
        breakers_closed_after_heal=closed_after_heal,
    )


async def run_matrix(
    application: application_pb2.Application, config: MatrixConfig, modes: Sequence[str] | None = None
) -> list[ModeReport]:
    chosen = [s for s in SCENARIOS if modes is None or s.name in modes]
    return [await run_scenario(s, application, config) for s in chosen]
