"""`osago bench faults` (the fault matrix over the whole mesh) and `osago bench load` (concurrent
customers and what they cost), printed as a table or JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from google.protobuf import json_format
from osago.v1 import application_pb2

from osago_bench.failover import FailoverConfig, run_failover
from osago_bench.failover import table as failover_table
from osago_bench.faults import SCENARIOS, MatrixConfig, ModeReport, run_matrix
from osago_bench.hotpaths import line as hotpaths_line
from osago_bench.load import BenchError, LoadConfig, run_load
from osago_bench.load_report import passed
from osago_bench.load_report import table as load_table
from osago_bench.polling import PollingConfig, run_polling
from osago_bench.polling import table as polling_table
from osago_bench.simcost import SimCostConfig, measure
from osago_bench.simcost import line as simcost_line

DEFAULT_APPLICATION = Path(__file__).resolve().parent.parent / "examples" / "moscow-young-driver.json"


def load_application(path: Path) -> application_pb2.Application:
    application = application_pb2.Application()
    json_format.Parse(path.read_text(encoding="utf-8"), application)
    return application


def table(reports: list[ModeReport]) -> str:
    header = f"{'mode':<10} {'finished':>9} {'healthy':>9} {'dup':>4} {'inv':>4} {'open p99':>9} {'healed':>7}  reasons"
    lines = [header, "-" * len(header)]
    for r in reports:
        open_p99 = "-" if r.breaker_open_p99_ms is None else f"{r.breaker_open_p99_ms:.1f} ms"
        healed = {None: "-", True: "yes", False: "NO"}[r.breakers_closed_after_heal]
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r.failure_reasons.items()))
        lines.append(
            f"{r.mode:<10} {r.finished_within_limit_pct:>8.1f}% {r.healthy_delivered_pct:>8.1f}% {r.duplicates:>4} "
            f"{r.invented:>4} {open_p99:>9} {healed:>7}  {reasons}{'' if r.ok else '  <- FAILED'}"
        )
    return "\n".join(lines)


async def run_faults(
    *, as_json: bool, modes: list[str] | None, config: MatrixConfig, application: Path, out: TextIO = sys.stdout
) -> int:
    unknown = sorted(set(modes or ()) - {s.name for s in SCENARIOS})
    if unknown:
        print(f"osago bench faults: unknown mode(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    if not application.is_file():
        # The default is the checkout's example, which an installed package does not carry.
        print(f"osago bench faults: no application file at {application}; pass --file", file=sys.stderr)
        return 2
    reports = await run_matrix(load_application(application), config, modes)
    if as_json:
        for report in reports:
            print(json.dumps(report.to_json(), ensure_ascii=False), file=out, flush=True)
    else:
        print(table(reports), file=out)
    return 0 if all(r.ok for r in reports) else 1


def load_config(args: argparse.Namespace) -> LoadConfig:
    """The benchmark's config from `osago bench load`'s arguments; BenchError names a bad one."""
    pids = {}
    for item in args.pid:
        name, sep, pid = item.rpartition("=")
        if not sep or not name or not pid.isdigit():
            raise BenchError(f"--pid takes NAME=PID, not {item!r}")
        pids[name] = int(pid)
    env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("OSAGO_"):
            raise BenchError(f"--env takes OSAGO_NAME=VALUE, not {item!r}")
        env[name] = value
    nice = {}
    for item in args.nice:
        role, _, value = item.partition("=")
        try:
            nice[role] = int(value)
        except ValueError:
            raise BenchError(f"--nice takes ROLE=N, not {item!r}") from None
    return LoadConfig(
        customers=args.sessions,
        hold_s=args.duration,
        ramp_s=args.ramp,
        insurers=args.insurers,
        time_scale=args.time_scale,
        session_limit_s=args.session_limit,
        backend=args.backend,
        aggregators=args.aggregators,
        gateway_replicas=args.gateway_replicas,
        postgres_url=args.postgres_url,
        redis_url=args.redis_url,
        seed=args.seed,
        target=args.target,
        sim_url=args.sim,
        pids=pids,
        load_processes=args.load_processes,
        channels=args.channels,
        baselines=not args.no_baselines,
        profile_dir=Path(args.profile) if args.profile else None,
        mesh_log=Path(args.mesh_log) if args.mesh_log else None,
        mesh_env=env,
        nice=nice,
    )


async def run_load_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """`osago bench load`: 0 when every target is met, 1 when one is missed, 2 when it cannot run."""
    application = Path(args.file) if args.file else DEFAULT_APPLICATION
    if not application.is_file():
        print(f"osago bench load: no application file at {application}; pass --file", file=sys.stderr)
        return 2
    try:
        report = await run_load(load_config(args), load_application(application))
    except BenchError as error:
        print(f"osago bench load: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1), file=out)
    else:
        print(load_table(report), file=out)
    return 0 if passed(report) else 1


async def run_failover_command(
    config: FailoverConfig, application: Path, *, as_json: bool, out: TextIO = sys.stdout
) -> int:
    """`osago bench failover`: exits 0 when nothing was lost, repeated, made twice or late."""
    if config.aggregators < 3:
        print("osago bench failover: at least 3 aggregators (one is killed, one stopped)", file=sys.stderr)
        return 2
    if not application.is_file():
        print(f"osago bench failover: no application file at {application}; pass --file", file=sys.stderr)
        return 2
    report = await run_failover(load_application(application), config)
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=False), file=out, flush=True)
    else:
        print(failover_table(report), file=out)
    return 0 if report.ok else 1


def run_polling_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """`osago bench polling`: the trade-off table (or JSON lines); always 0, it checks no target."""
    if args.insurers < 1 or args.applications < 1 or args.warmup < 0 or args.rtt < 0:
        print(
            "osago bench polling: --insurers and --applications at least 1, --warmup and --rtt not negative",
            file=sys.stderr,
        )
        return 2
    config = PollingConfig(
        insurers=args.insurers, applications=args.applications, warmup=args.warmup, rtt_s=args.rtt, seed=args.seed
    )
    points = run_polling(config)
    if args.json:
        for point in points:
            print(json.dumps(point.to_json(), ensure_ascii=False), file=out)
    else:
        print(polling_table(points, config), file=out)
    return 0


def run_simcost(
    config: SimCostConfig, application: application_pb2.Application, as_json: bool, out: TextIO = sys.stdout
) -> int:
    """`osago bench sim`: one line (or JSON object) of the simulator's CPU per HTTP request."""
    result = asyncio.run(measure(config, application))
    print(json.dumps(result) if as_json else simcost_line(result), file=out)
    return 0


def run_hotpaths_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """`osago bench hotpaths`: osago_bench/hotpaths.py run as a script in a process of its own,
    importing the packages of this checkout or of `--code DIR`."""
    code = Path(args.code).resolve() if args.code else Path(__file__).resolve().parent.parent
    application = Path(args.file) if args.file else DEFAULT_APPLICATION
    if args.rounds < 1:
        print("osago bench hotpaths: --rounds must be positive", file=sys.stderr)
        return 2
    if not (code / "aggregator").is_dir() or not (code / "generated").is_dir():
        print(f"osago bench hotpaths: {code} is not a checkout of this project", file=sys.stderr)
        return 2
    if not application.is_file():
        print(f"osago bench hotpaths: no application file at {application}; pass --file", file=sys.stderr)
        return 2
    script = Path(__file__).with_name("hotpaths.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(code), str(code / "generated"))))
    command = [sys.executable, str(script), "--rounds", str(args.rounds), "--json", "--file", str(application)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603 - our own script
    if done.returncode != 0:
        print(f"osago bench hotpaths: the timing failed:\n{done.stderr}", file=sys.stderr)
        return 1
    results = json.loads(done.stdout)
    print(json.dumps(results) if args.json else hotpaths_line(results), file=out)
    return 0
