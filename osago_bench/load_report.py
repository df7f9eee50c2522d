"""The load benchmark's report: what the run measured (`Measured`), put together as one JSON
document (`build_report`) with the targets checked, and printed as a table (`table`).

Sessions are counted per attempt: a customer refused at admission (RESOURCE_EXHAUSTED, "shed")
made an attempt that got no session. "Finished within the limit" means the customer received
SessionFinished before its own deadline (the session limit), out of every attempt.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from osago_bench.accounting import (
    Issued,
    Seen,
    account_offers,
    added_lags,
    detection_delays,
    lag_legs,
    percentile,
    requests_of_each_application,
    requests_per_application,
)
from osago_common.insurers import BY_ID

# The commonest status messages of failed calls reported per code.
FAILED_DETAILS = 3


@dataclass(frozen=True)
class ProcessCost:
    name: str
    cpu_s: float
    peak_rss_kib: int

    @property
    def role(self) -> str:
        return role_of(self.name)


# What each measured process is, from its name ("gateway alfa 1", "loadgen 2", ...).
ROLES = ("aggregator", "gateway", "sim", "loadgen", "backend")


def role_of(name: str) -> str:
    for role in ROLES[:-1]:
        if name.startswith(role):
            return role
    return "backend"  # Postgres, Redis, ... of a shared-backend mesh


@dataclass
class Measured:
    """Everything one run measured."""

    config: dict[str, Any]
    machine: dict[str, Any]
    started_at: str
    window_s: float
    # One result per load generator process (osago_bench.loadgen.Generator.result).
    generators: list[dict[str, Any]]
    costs: list[ProcessCost]
    # HTTP requests the simulator answered during the window (every client's).
    sim_requests: int
    ledger_offers: list[dict[str, Any]]
    applications: list[dict[str, Any]]
    # CPU seconds the whole machine was busy during the window (every process, ours or not).
    machine_busy_s: float | None = None
    load_processes: int = 1
    channels: int = 1
    grpc_baseline: dict[str, Any] | None = None
    fanout_baseline: dict[str, Any] | None = None
    profiles: dict[str, Any] = field(default_factory=dict)
    # The aggregators' own count of the sessions they shed in the window, by the signal that
    # refused (osago_sessions_shed_total); None when not scraped (a running mesh).
    shed_by_signal: dict[str, float] | None = None

    @property
    def sessions(self) -> list[dict[str, Any]]:
        return [s for g in self.generators for s in g["sessions"]]

    def admitted(self) -> int:
        return sum(1 for s in self.sessions if s["request_id"])

    def events(self) -> int:
        return sum(int(s["events"]) for s in self.sessions)

    def grpc_baseline_shape(self) -> tuple[int, int, int]:
        """Streams (the customers), messages (the events delivered) and their mean size."""
        sized = sum(int(g["sized_events"]) for g in self.generators)
        size = round(sum(int(g["sized_bytes"]) for g in self.generators) / sized) if sized else 100
        return int(self.config["customers"]), max(1, self.events()), max(1, size)


def _seen(sessions: Iterable[dict[str, Any]]) -> list[Seen]:
    return [
        Seen(s["request_id"], q[0], q[1], q[2], q[3], q[4] if len(q) > 4 else None)
        for s in sessions
        if s["request_id"]
        for q in s["quotes"]
    ]


def _issued(offers: Iterable[dict[str, Any]]) -> list[Issued]:
    return [
        Issued(
            o["reference"],
            o["insurer_id"],
            o["offer_id"],
            datetime.fromisoformat(o["ready_at"]).timestamp(),
            datetime.fromisoformat(o["issued_at"]).timestamp(),
        )
        for o in offers
    ]


def _dialect(insurer_id: str) -> str | None:
    """The insurer's API dialect in the dev catalogue ("push": it calls back), if it is there."""
    known = BY_ID.get(insurer_id)
    return known.dialect if known else None


def _ms(values: Sequence[float], *qs: float) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for q in qs:
        p = percentile(values, q)
        out[f"p{q:g}"] = None if p is None else round(p * 1000, 1)
    return out


def _s(values: Sequence[float], *qs: float) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for q in qs:
        p = percentile(values, q)
        out[f"p{q:g}"] = None if p is None else round(p, 2)
    return out


def _per(total: float, count: int, scale: float = 1000.0, digits: int = 2) -> float | None:
    return round(total * scale / count, digits) if count else None


def build_report(run: Measured) -> dict[str, Any]:
    config = run.config
    limit_s = float(config["session_limit_s"])
    sessions = run.sessions
    references = {s["request_id"] for s in sessions if s["request_id"]}

    # --- sessions
    # Each attempt is one of: finished (SessionFinished arrived), shed, or failed (by code;
    # ENDED_EARLY: the stream closed OK without SessionFinished).
    shed = [s for s in sessions if s["code"] == "RESOURCE_EXHAUSTED"]
    admitted = [s for s in sessions if s["request_id"]]
    finished = [s for s in sessions if s["finished"]]
    within = [s for s in finished if s["finished_after"] <= limit_s]
    failed = Counter(
        s["code"] or "ENDED_EARLY" for s in sessions if not s["finished"] and s["code"] != "RESOURCE_EXHAUSTED"
    )
    late_status = Counter(s["code"] for s in finished if s["code"])
    # What the failed calls said, per code: the commonest messages (which side ended them).
    said: dict[str, Counter[str]] = {}
    for s in sessions:
        if s["code"] and not s["finished"] and s["code"] != "RESOURCE_EXHAUSTED":
            said.setdefault(s["code"], Counter())[s.get("detail", "")] += 1
    attempts = len(sessions)
    slowest = max(finished, key=lambda s: s["finished_after"], default=None)
    session_part = {
        "customers": config["customers"],
        "attempted": attempts,
        "started": len(admitted),
        "finished": len(finished),
        "finished_within_limit": len(within),
        "finished_within_limit_pct": round(100 * len(within) / attempts, 2) if attempts else None,
        "finished_within_limit_of_started_pct": round(100 * len(within) / len(admitted), 2) if admitted else None,
        "failed_by_code": dict(failed),
        "failed_details": {code: dict(c.most_common(FAILED_DETAILS)) for code, c in said.items()},
        # Calls that delivered SessionFinished, then ended with an error status (e.g. their
        # deadline passed before the final status arrived).
        "finished_then_failed_by_code": dict(late_status),
        "shed": len(shed),
        # Which signal refused them, as the aggregators counted (their refusals of the
        # benchmark's attempts and of nothing else: only the benchmark calls them).
        "shed_by_signal": run.shed_by_signal,
        # How long a refused customer waited for the refusal, and the delay it was told to wait.
        "shed_answered_after_s": _s([x["elapsed"] for x in shed], 50, 99),
        "shed_retry_after_s": _s([x["retry_after_s"] for x in shed if x.get("retry_after_s") is not None], 50, 99),
        "statuses": dict(Counter(s["finished"] for s in finished)),
        "insurer_failures": dict(sum((Counter(s["failures"]) for s in sessions), Counter())),
        "per_second": round(len(finished) / run.window_s, 2) if run.window_s else None,
        # How long calls waited to be taken and admitted (SessionStarted's arrival).
        "time_to_started_s": _s([s["started_after"] for s in sessions if s.get("started_after") is not None], 50, 99),
        "time_to_first_offer_s": _s([s["first_offer"] for s in sessions if s["first_offer"] is not None], 50, 99),
        "time_to_finished_s": {
            **_s([s["finished_after"] for s in finished], 50, 99),
            "max": round(slowest["finished_after"], 2) if slowest else None,
        },
        "slowest": None
        if slowest is None
        else {
            "request_id": slowest["request_id"],
            "seconds": round(slowest["finished_after"], 3),
            "status": slowest["finished"],
        },
    }

    # --- offers, lag, polling
    seen = _seen(sessions)
    ledger = [o for o in _issued(run.ledger_offers) if o.reference in references]
    account = account_offers(seen, ledger, references)
    lags = added_lags(seen)
    upstream, downstream = lag_legs(seen)
    delays = detection_delays(seen, ledger)
    requests = requests_per_application(run.applications, references)
    spread = requests_of_each_application(run.applications, references)
    all_delays = [d for values in delays.values() for d in values]
    apps = sum(n for n, _ in requests.values())
    http_requests = sum(r for _, r in requests.values())
    per_insurer = {
        insurer: {
            "dialect": _dialect(insurer),
            **_ms(delays.get(insurer, []), 50, 95, 99),
            "offers": len(delays.get(insurer, [])),
            "applications": requests.get(insurer, (0, 0))[0],
            "requests_per_application": round(requests[insurer][1] / requests[insurer][0], 2)
            if requests.get(insurer, (0, 0))[0]
            else None,
            # How the requests spread over the applications (nearest ranks).
            "requests_p50": percentile(spread.get(insurer, []), 50),
            "requests_p95": percentile(spread.get(insurer, []), 95),
        }
        for insurer in sorted(set(delays) | set(requests))
    }

    # --- CPU
    by_role: dict[str, float] = defaultdict(float)
    for cost in run.costs:
        by_role[cost.role] += cost.cpu_s
    started = len(admitted)
    events = run.events()
    services = by_role["aggregator"] + by_role["gateway"]
    cpu = {
        "window_s": round(run.window_s, 1),
        "processes": [
            {
                "name": c.name,
                "cpu_s": c.cpu_s,
                "cpu_pct": round(100 * c.cpu_s / run.window_s, 1),
                "peak_rss_mib": round(c.peak_rss_kib / 1024, 1),
            }
            for c in run.costs
        ],
        "by_role_s": {role: round(value, 2) for role, value in by_role.items()},
        "measured_busy_pct": round(100 * sum(by_role.values()) / run.window_s / max(1, run.machine["cores"]), 1),
        # What the rest of the machine (processes this run did not start) used meanwhile.
        "others_cpu_s": None if run.machine_busy_s is None else round(run.machine_busy_s - sum(by_role.values()), 1),
        "machine_busy_pct": None
        if run.machine_busy_s is None
        else round(100 * run.machine_busy_s / run.window_s / max(1, run.machine["cores"]), 1),
        "services_ms_per_session": _per(services, started),
        "aggregator_ms_per_session": _per(by_role["aggregator"], started),
        "gateways_ms_per_session": _per(by_role["gateway"], started),
        "backends_ms_per_session": _per(by_role["backend"], started) if by_role["backend"] else None,
        "sim_ms_per_session": _per(by_role["sim"], started),
        "loadgen_ms_per_session": _per(by_role["loadgen"], started),
        "aggregator_us_per_event": _per(by_role["aggregator"], events, 1e6, 1),
        "gateways_ms_per_http_request": _per(by_role["gateway"], http_requests, 1000, 3),
        "sim_ms_per_http_request": _per(by_role["sim"], run.sim_requests, 1000, 3),
        "events_delivered": events,
        "http_requests": http_requests,
        "sim_http_requests": run.sim_requests,
        "loadgen_loop_lag_ms": [g["loop_lag_ms"] for g in run.generators],
    }

    # --- baselines
    baselines: dict[str, Any] = {}
    if run.grpc_baseline:
        g = run.grpc_baseline
        us = _per(g["server_cpu_s"], g["messages"], 1e6, 1)
        baselines["grpc"] = {**g, "server_us_per_message": us}
        aggregator_us = cpu["aggregator_us_per_event"]
        baselines["aggregator_event_vs_grpc_message"] = round(aggregator_us / us, 2) if aggregator_us and us else None
    if run.fanout_baseline:
        f = run.fanout_baseline
        ms = _per(f["cpu_s"], f["sessions"])
        baselines["fanout"] = {
            **f,
            "ms_per_session": ms,
            "ms_per_http_request": _per(f["cpu_s"], f["requests"], 1000, 3),
        }
        ours = cpu["services_ms_per_session"]
        baselines["services_session_vs_fanout_session"] = round(ours / ms, 2) if ours and ms else None

    report: dict[str, Any] = {
        "started_at": run.started_at,
        "config": config,
        "machine": run.machine,
        "load_processes": run.load_processes,
        "channels": run.channels,
        "sessions": session_part,
        "offers": {
            "expected": account.expected,
            "delivered": account.delivered,
            "lost": account.lost,
            "duplicated": account.duplicated,
            "invented": account.invented,
            "lost_examples": [list(k) for k in account.lost_examples],
            "invented_examples": [list(k) for k in account.invented_examples],
        },
        "added_lag_ms": {
            **_ms(lags, 50, 95, 99),
            "max": round(max(lags) * 1000, 1) if lags else None,
            "gateway_to_aggregator": _ms(upstream, 50, 99),
            "aggregator_to_customer": _ms(downstream, 50, 99),
        },
        "detection_delay_ms": _ms(all_delays, 50, 95),
        "requests_per_application": round(http_requests / apps, 2) if apps else None,
        "insurers": per_insurer,
        "cpu": cpu,
        "baselines": baselines,
        "profiles": _profiles_per_session(run, started),
    }
    report["targets"] = check_targets(report)
    return report


def _profiles_per_session(run: Measured, started: int) -> dict[str, Any]:
    """Each profiled process's summary, with its components in CPU milliseconds per session."""
    cpu = {c.name: c.cpu_s for c in run.costs}
    out: dict[str, Any] = {}
    for name, summary in run.profiles.items():
        ms = _per(cpu.get(name, 0.0), started)
        components = [[part, round(pct * ms / 100, 2)] for part, pct in summary["components_pct"]] if ms else []
        out[name] = {**summary, "cpu_ms_per_session": ms, "components_ms_per_session": components}
    return out


# --- the targets of the load benchmark -----------------------------------------------------------


def _target(name: str, goal: str, measured: Any, ok: bool | None, miss: str = "") -> dict[str, Any]:
    return {"name": name, "goal": goal, "measured": measured, "ok": ok, "miss": "" if ok else miss}


def _at_most(name: str, goal: float, measured: float | None, unit: str) -> dict[str, Any]:
    text = f"≤ {goal:g} {unit}".rstrip()
    if measured is None:
        return _target(name, text, None, None, "not measured")
    ok = measured <= goal
    return _target(name, text, measured, ok, f"{measured / goal:.1f}× the goal" if goal else "")


def check_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    s, o, cpu, b = report["sessions"], report["offers"], report["cpu"], report["baselines"]
    insurers = int(report["config"]["insurers"])
    missed = s["attempted"] - s["finished_within_limit"]
    targets = [
        _target(
            f"{s['customers']} customers: every session finished within {report['config']['session_limit_s']:g} s",
            "100 %",
            s["finished_within_limit_pct"],
            missed == 0 and s["attempted"] > 0,
            f"{missed} of {s['attempted']} attempts did not ({s['shed']} shed, "
            f"{sum(s['failed_by_code'].values())} failed)",
        ),
        _target("offers lost", "0", o["lost"], o["lost"] == 0, f"{o['lost']} of {o['expected']}"),
        _target("offers duplicated", "0", o["duplicated"], o["duplicated"] == 0, f"{o['duplicated']}"),
        _target("offers invented", "0", o["invented"], o["invented"] == 0, f"{o['invented']}"),
        _at_most("added lag p99", 50, report["added_lag_ms"]["p99"], "ms"),
        # 13 ms for a 10-insurer session: the goal scales with the insurers asked.
        _at_most("our services' CPU per session", round(13 * insurers / 10, 2), cpu["services_ms_per_session"], "ms"),
        _at_most(
            "aggregator CPU per event ÷ bare gRPC's per message", 3, b.get("aggregator_event_vs_grpc_message"), "×"
        ),
        _at_most("our services' CPU per session ÷ bare fan-out's", 2, b.get("services_session_vs_fanout_session"), "×"),
        _at_most("simulator CPU per HTTP request", 0.15, cpu["sim_ms_per_http_request"], "ms"),
    ]
    polled = {i: v for i, v in report["insurers"].items() if v.get("dialect") != "push"}
    p95s = {i: v["p95"] for i, v in polled.items() if v["p95"] is not None}
    worst = max(p95s, key=lambda i: p95s[i], default=None)
    targets.append(
        _at_most(
            f"detection delay p95, worst polled insurer ({worst})" if worst else "detection delay p95",
            1000,
            p95s[worst] if worst else None,
            "ms",
        )
    )
    apps = sum(v["applications"] for v in polled.values())
    requests = sum(v["applications"] * (v["requests_per_application"] or 0) for v in polled.values())
    targets.append(
        _at_most("HTTP requests per polled insurer application", 3, round(requests / apps, 2) if apps else None, "")
    )
    # The insurers that call back: the create and the callback, and the offer at once.
    for insurer, v in report["insurers"].items():
        if v.get("dialect") == "push":
            targets.append(
                _at_most(f"{insurer} (callbacks): HTTP requests per application", 2, v["requests_per_application"], "")
            )
            targets.append(_at_most(f"{insurer} (callbacks): detection delay p99", 50, v["p99"], "ms"))
    return targets


# --- the table ------------------------------------------------------------------------------------


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"
    else:
        text = str(value)
    return f"{text} {unit}".rstrip()


def table(report: dict[str, Any]) -> str:
    c, s, o, cpu, b = report["config"], report["sessions"], report["offers"], report["cpu"], report["baselines"]
    lag, first, done = report["added_lag_ms"], s["time_to_first_offer_s"], s["time_to_finished_s"]
    started = s.get("time_to_started_s") or {"p50": None, "p99": None}
    header = (
        f"osago bench load: {c['customers']} customers × {c['insurers']} insurers, {c['ramp_s']:g} s ramp + "
        f"{c['hold_s']:g} s, time scale {c['time_scale']:g}, {c['backend']} backend, "
        f"{c['aggregators']} aggregator(s), fresh requests"
    )
    machine = (
        f"machine: {report['machine']['cores']} cores, {report['machine']['cpu_model']}; "
        f"load generators: {report['load_processes']} process(es), {report['channels']} channel(s)"
    )
    counts = (
        f"sessions   attempted {s['attempted']}, started {s['started']}, finished {s['finished']} "
        f"({_fmt(s['per_second'])}/s), within {c['session_limit_s']:g} s {s['finished_within_limit']} "
        f"({_fmt(s['finished_within_limit_pct'])} %), shed {s['shed']}, failed {s['failed_by_code'] or 0}"
        + (f", finished then failed {s['finished_then_failed_by_code']}" if s["finished_then_failed_by_code"] else "")
    )
    if s["shed"]:
        refused, retry = s.get("shed_answered_after_s") or {}, s.get("shed_retry_after_s") or {}
        counts += (
            f"; the shed were answered after p50 {_fmt(refused.get('p50'), 's')} p99 "
            f"{_fmt(refused.get('p99'), 's')}, told to retry after p50 {_fmt(retry.get('p50'), 's')} "
            f"p99 {_fmt(retry.get('p99'), 's')}"
        )
        by_signal = {k: int(v) for k, v in (s.get("shed_by_signal") or {}).items() if v}
        if by_signal:
            counts += "; refused on " + ", ".join(f"{k} {v}" for k, v in by_signal.items())
    times = (
        f"           started p50 {_fmt(started['p50'], 's')} p99 {_fmt(started['p99'], 's')}; "
        f"first offer p50 {_fmt(first['p50'], 's')} p99 {_fmt(first['p99'], 's')}; finished p50 "
        f"{_fmt(done['p50'], 's')} p99 {_fmt(done['p99'], 's')} max {_fmt(done['max'], 's')}"
    )
    offers = (
        f"offers     expected {o['expected']}, delivered {o['delivered']}, lost {o['lost']}, "
        f"duplicated {o['duplicated']}, invented {o['invented']}"
    )
    up, down = lag["gateway_to_aggregator"], lag["aggregator_to_customer"]
    lag_line = (
        f"added lag  p50 {_fmt(lag['p50'], 'ms')}  p95 {_fmt(lag['p95'], 'ms')}  p99 {_fmt(lag['p99'], 'ms')}  "
        f"max {_fmt(lag['max'], 'ms')}; gateway → aggregator p50 {_fmt(up['p50'], 'ms')} p99 {_fmt(up['p99'], 'ms')}, "
        f"aggregator → customer p50 {_fmt(down['p50'], 'ms')} p99 {_fmt(down['p99'], 'ms')}"
    )
    polling = (
        f"polling    detection delay p50 {_fmt(report['detection_delay_ms']['p50'], 'ms')} p95 "
        f"{_fmt(report['detection_delay_ms']['p95'], 'ms')}; {_fmt(report['requests_per_application'])} "
        "HTTP requests per application"
    )
    lines = [header, machine, "", counts]
    for code, details in s.get("failed_details", {}).items():
        said = "; ".join(f"{detail or '(no message)'!r} ×{n}" for detail, n in details.items())
        lines.append(f"           {code} said: {said}")
    lines += [times, offers, lag_line, polling, ""]
    lines.append(
        f"{'insurer':<10} {'dialect':<7} {'detect p50':>11} {'detect p95':>11} {'detect p99':>11} "
        f"{'req/app':>8} {'offers':>7}"
    )
    for insurer, v in report["insurers"].items():
        lines.append(
            f"{insurer:<10} {v.get('dialect') or '?':<7} {_fmt(v['p50'], 'ms'):>11} {_fmt(v['p95'], 'ms'):>11} "
            f"{_fmt(v.get('p99'), 'ms'):>11} {_fmt(v['requests_per_application']):>8} {v['offers']:>7}"
        )
    lines += ["", f"{'process':<18} {'CPU s':>8} {'CPU %':>7} {'peak RSS':>10}"]
    for p in cpu["processes"]:
        lines.append(f"{p['name']:<18} {p['cpu_s']:>8.2f} {p['cpu_pct']:>6.1f}% {p['peak_rss_mib']:>7.1f} MiB")
    per_session = (
        f"per session: services {_fmt(cpu['services_ms_per_session'], 'ms')} (aggregator "
        f"{_fmt(cpu['aggregator_ms_per_session'], 'ms')}, gateways {_fmt(cpu['gateways_ms_per_session'], 'ms')}), "
        f"simulator {_fmt(cpu['sim_ms_per_session'], 'ms')}, load generator {_fmt(cpu['loadgen_ms_per_session'], 'ms')}"
    )
    per_unit = (
        f"aggregator {_fmt(cpu['aggregator_us_per_event'], 'µs')} per event; gateways "
        f"{_fmt(cpu['gateways_ms_per_http_request'], 'ms')} and simulator {_fmt(cpu['sim_ms_per_http_request'], 'ms')} "
        f"per HTTP request; machine {_fmt(cpu['machine_busy_pct'])} % busy (this run "
        f"{_fmt(cpu['measured_busy_pct'])} %, others {_fmt(cpu['others_cpu_s'], 'CPU s')})"
    )
    lines += [per_session, per_unit]
    if "grpc" in b:
        g = b["grpc"]
        lines.append(
            f"baseline gRPC: {g['messages']} messages of {g['size']} B over {g['streams']} streams, "
            f"{_fmt(g['server_us_per_message'], 'µs')} per message → aggregator "
            f"{_fmt(b['aggregator_event_vs_grpc_message'])}×"
        )
    if "fanout" in b:
        f = b["fanout"]
        lines.append(
            f"baseline fan-out: {f['sessions']} sessions, {f['requests']} HTTP requests, "
            f"{_fmt(f['ms_per_session'], 'ms')} per session ({_fmt(f['ms_per_http_request'], 'ms')} per request) "
            f"→ our services {_fmt(b['services_session_vs_fanout_session'])}×"
        )
    for name, profile in report["profiles"].items():
        parts = ", ".join(f"{part} {ms:g}" for part, ms in profile["components_ms_per_session"][:6])
        lines.append(f"profile {name} ({_fmt(profile['cpu_ms_per_session'], 'ms')}/session): {parts}")
    lines += ["", f"{'target':<58} {'goal':>9} {'measured':>10}  result"]
    for t in report["targets"]:
        verdict = {True: "pass", False: f"MISS: {t['miss']}", None: "not measured"}[t["ok"]]
        lines.append(f"{t['name'][:58]:<58} {t['goal']:>9} {_fmt(t['measured']):>10}  {verdict}")
    return "\n".join(lines)


def passed(report: dict[str, Any]) -> bool:
    """Whether no target was missed (one not measured is not a miss)."""
    return all(t["ok"] is not False for t in report["targets"])
