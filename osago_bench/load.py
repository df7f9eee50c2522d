"""`osago bench load`: N concurrent customers on the whole mesh for a while, and what it cost.

The run, in order:
1. the mesh comes up, every service its own process as `osago up` runs them (or a running mesh
   is targeted); the simulated insurers have no quota, so the gateways' quota and bulkhead are
   raised out of the way: the benchmark measures the mesh, not an insurer's contract;
2. the load generators connect and say they are ready; every process's CPU is sampled;
3. the customers ramp up over `ramp_s`, then hold for `hold_s`; each starts a new session when
   its last one ended; then the sessions still running finish;
4. every process's CPU is sampled again (the measured window is 2–3 only), and the simulator's
   ledger and per-application counts are read;
5. the two baselines run (osago_bench.baselines) on the same machine, just after;
6. the report (osago_bench.load_report) puts it together and checks the targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from osago.v1 import application_pb2
from prometheus_client.parser import text_string_to_metric_families

from osago_bench.load_report import ROLES, Measured, ProcessCost, build_report, role_of
from osago_bench.loadgen import LoadPlan
from osago_bench.procstat import (
    ProcSample,
    machine,
    machine_busy_seconds,
    renice,
    restore_nice,
    sample,
    sample_group,
    server_processes,
)
from osago_bench.profiles import summarise
from osago_bench.workers import Worker
from osago_mesh.processes import MeshOptions, RunningMesh, process_mesh

# The simulated insurers have no quota: the gateways' own limits stay out of the measurement.
UNLIMITED_GATEWAYS = {
    "OSAGO_GATEWAY_RATE_LIMIT_PER_S": "1000000",
    "OSAGO_GATEWAY_RATE_LIMIT_BURST": "1000000",
    "OSAGO_GATEWAY_MAX_IN_FLIGHT": "100000",
}
# Customers per load generator process, and per gRPC channel, when not given.
CUSTOMERS_PER_PROCESS = 1000
CUSTOMERS_PER_CHANNEL = 500
# The bare fan-out baseline runs at most this many sessions (CPU per session needs no more).
FANOUT_SESSIONS = 500


class BenchError(Exception):
    """The benchmark cannot run as asked; the message says why."""


@dataclass(frozen=True)
class LoadConfig:
    customers: int = 200
    hold_s: float = 120.0
    ramp_s: float = 30.0
    insurers: int = 10
    time_scale: float = 1.0
    session_limit_s: float = 60.0
    backend: str = "embedded"
    aggregators: int = 1
    gateway_replicas: int = 1
    postgres_url: str | None = None
    redis_url: str | None = None
    seed: int | None = None
    # A running mesh instead of starting one: its aggregator target(s) ("a:1,b:2") and simulator.
    target: str | None = None
    sim_url: str | None = None
    # Its processes to measure, by name ("aggregator", "gateway alfa", "sim", ...).
    pids: Mapping[str, int] = field(default_factory=dict)
    # 0: chosen from the number of customers.
    load_processes: int = 0
    channels: int = 0
    baselines: bool = True
    fanout_sessions: int = FANOUT_SESSIONS
    # Where py-spy writes each service's profile (raw collapsed stacks) and their summary.
    profile_dir: Path | None = None
    # Where the services' logs go (they log as in production; default: nowhere).
    mesh_log: Path | None = None
    # Extra settings for every service of a mesh started here (OSAGO_*).
    mesh_env: Mapping[str, str] = field(default_factory=dict)
    # Nice values by role ("aggregator", "gateway", "sim", "loadgen", "backend"), set on every
    # thread of those processes before the customers start (a mesh started here or --pid's).
    nice: Mapping[str, int] = field(default_factory=dict)

    def check(self) -> None:
        if self.customers < 1:
            raise BenchError("--sessions must be at least 1")
        if self.hold_s <= 0 or self.ramp_s < 0:
            raise BenchError("--duration must be positive and --ramp not negative")
        if self.backend not in ("embedded", "shared"):
            raise BenchError("--backend must be embedded or shared")
        if (self.target is None) != (self.sim_url is None):
            raise BenchError("--target and --sim go together: both name a running mesh")
        unknown = sorted(set(self.nice) - set(ROLES))
        if unknown:
            raise BenchError(f"--nice names a role of {', '.join(ROLES)}, not {', '.join(unknown)}")
        if any(not -20 <= n <= 19 for n in self.nice.values()):
            raise BenchError("--nice takes a value from -20 to 19")

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["profile_dir"] = str(self.profile_dir) if self.profile_dir else None
        data["mesh_log"] = str(self.mesh_log) if self.mesh_log else None
        data["pids"] = dict(self.pids)
        data["mesh_env"] = dict(self.mesh_env)
        data["nice"] = dict(self.nice)
        for secret in ("postgres_url", "redis_url"):
            data[secret] = "set" if data[secret] else None
        data["fresh"] = True  # every request asks the insurers anew (never the cache of results)
        return data


@dataclass
class _Mesh:
    targets: list[str]
    sim: str
    # name -> the pids of every process measured under that name
    pids: dict[str, list[int]]
    # name -> the /metrics URL of each service of a mesh started here (none for a running one)
    metrics: dict[str, str] = field(default_factory=dict)


def mesh_options(config: LoadConfig) -> MeshOptions:
    """The options of the mesh the benchmark starts; BenchError for a combination it cannot run."""
    try:
        return MeshOptions(
            insurers=config.insurers,
            time_scale=config.time_scale,
            aggregator_port=0,
            sim_port=0,
            page_port=0,
            session_limit_s=config.session_limit_s,
            seed=config.seed,
            edge="web_bridge",
            aggregators=config.aggregators,
            gateway_replicas=config.gateway_replicas,
            backend=config.backend,
            postgres_url=config.postgres_url,
            redis_url=config.redis_url,
        )
    except ValueError as error:
        raise BenchError(str(error)) from None


def apply_nice(nice: Mapping[str, int], processes: Mapping[str, list[int]]) -> dict[int, int]:
    """Gives every process of a role in `nice` that nice value (all its threads): on one machine
    the processes share its cores equally, where a cluster weights each pod's share by its CPU
    request (docs/BENCHMARKS.md). Returns each thread's value before (`restore_nice`).
    BenchError when a role names no process of the run, or the system refuses."""
    found = {role_of(name) for name in processes}
    missing = sorted(set(nice) - found)
    if missing:
        raise BenchError(f"--nice: no {', '.join(missing)} process in this run")
    before: dict[int, int] = {}
    for name, pids in processes.items():
        role = role_of(name)
        if role not in nice:
            continue
        for pid in pids:
            try:
                before.update(renice(pid, nice[role]))
            except OSError as error:
                restore_nice(before)
                lowering = nice[role] < os.getpriority(os.PRIO_PROCESS, 0)
                why = "lowering a nice value needs root" if lowering and error.errno == errno.EACCES else error.strerror
                raise BenchError(f"--nice {role}={nice[role]}: {why}") from None
    return before


async def _shed_by_signal(http: aiohttp.ClientSession, metrics: Mapping[str, str]) -> dict[str, float] | None:
    """osago_sessions_shed_total of every aggregator, summed by signal; None when there is no
    aggregator's /metrics to read (a running mesh) or one cannot be read."""
    urls = [url for name, url in metrics.items() if role_of(name) == "aggregator"]
    if not urls:
        return None
    total: dict[str, float] = {}
    try:
        for url in urls:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
                text = await response.text()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "osago_sessions_shed_total":
                        signal = sample.labels.get("signal", "")
                        total[signal] = total.get(signal, 0.0) + sample.value
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        print(f"osago bench load: the aggregators' metrics could not be read: {error!r}", file=sys.stderr)
        return None
    return total


def mesh_processes(running: RunningMesh) -> dict[str, list[int]]:
    """Every process of a mesh started here, by name ("sim", "gateway alfa 1", "aggregator 1",
    and with the shared backend "backend postgres" and "backend redis": each server's processes,
    found by the port it listens on)."""
    named = {name: [child.process.pid] for name, child in running.children.items()}
    for name, url in (("backend postgres", running.postgres_url), ("backend redis", running.redis_url)):
        port = urllib.parse.urlsplit(url).port if url else None
        if port is not None:
            named[name] = server_processes(port)
    return {name: pids for name, pids in named.items() if pids}


@contextlib.contextmanager
def _stderr_to(path: Path | None) -> Iterator[None]:
    """Children spawned meanwhile write their logs to `path` (default: nowhere)."""
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.dup2(target, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)


@contextlib.asynccontextmanager
async def _mesh(config: LoadConfig) -> AsyncIterator[_Mesh]:
    if config.target is not None and config.sim_url is not None:
        pids = {name: [pid] for name, pid in config.pids.items()}
        yield _Mesh([t.strip() for t in config.target.split(",") if t.strip()], config.sim_url, pids)
        return
    options = mesh_options(config)
    env = {**UNLIMITED_GATEWAYS, **config.mesh_env}
    stack = contextlib.AsyncExitStack()
    async with stack:
        with _stderr_to(config.mesh_log):
            running = await stack.enter_async_context(process_mesh(options, web=False, env=env))
        yield _Mesh(running.aggregators or [running.aggregator], running.sim, mesh_processes(running), running.metrics)


def _plans(config: LoadConfig, targets: list[str], application: bytes) -> list[LoadPlan]:
    processes = config.load_processes or max(1, math.ceil(config.customers / CUSTOMERS_PER_PROCESS))
    processes = min(processes, config.customers)
    plans = []
    first = 0
    for n in range(processes):
        count = config.customers // processes + (1 if n < config.customers % processes else 0)
        channels = config.channels or max(1, math.ceil(count / CUSTOMERS_PER_CHANNEL / len(targets)))
        plans.append(
            LoadPlan(
                targets=targets,
                first_customer=first,
                customers=count,
                total_customers=config.customers,
                ramp_s=config.ramp_s,
                hold_s=config.hold_s,
                limit_s=config.session_limit_s,
                channels_per_target=channels,
                application=application.hex(),
            )
        )
        first += count
    return plans


def _samples(pids: Mapping[str, list[int]]) -> dict[str, ProcSample | None]:
    return {name: sample_group(group) for name, group in pids.items()}


def _costs(before: Mapping[str, ProcSample | None], after: Mapping[str, ProcSample | None]) -> list[ProcessCost]:
    costs = []
    for name, start in before.items():
        end = after.get(name)
        if start is None or end is None:
            continue
        costs.append(ProcessCost(name, round(end.cpu_s - start.cpu_s, 3), end.peak_rss_kib))
    return costs


async def _sim_json(http: aiohttp.ClientSession, sim: str, path: str, **params: str) -> Any:
    timeout = aiohttp.ClientTimeout(total=300)
    async with http.get(f"{sim}{path}", params=params, timeout=timeout) as response:
        response.raise_for_status()
        return await response.json()


async def _sim_requests(http: aiohttp.ClientSession, sim: str) -> int:
    """Every HTTP request the simulated insurers have made so far: answered (creates, replays,
    polls) and sent (callback delivery attempts)."""
    stats = await _sim_json(http, sim, "/_sim/stats", reference="\x00none")
    return sum(i["creates"] + i["replays"] + i["polls"] + i.get("callbacks", 0) for i in stats["insurers"].values())


@contextlib.asynccontextmanager
async def _profiling(config: LoadConfig, pids: Mapping[str, list[int]]) -> AsyncIterator[dict[str, Path]]:
    """py-spy recording the aggregator(s), the simulator and one gateway meanwhile (raw
    collapsed stacks), when asked for."""
    if config.profile_dir is None:
        yield {}
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise BenchError("--profile needs py-spy (pip install py-spy)")
    config.profile_dir.mkdir(parents=True, exist_ok=True)
    gateways = [n for n in pids if n.startswith("gateway")][:1]
    chosen = [n for n in pids if n.startswith("aggregator") or n == "sim"] + gateways
    outputs = {name: config.profile_dir / f"{name.replace(' ', '-')}.txt" for name in chosen}
    spies = []
    for name in chosen:
        options = ["--native", "--rate", "100", "--format", "raw", "-o", str(outputs[name])]
        spies.append(
            await asyncio.create_subprocess_exec(
                spy,
                "record",
                *options,
                "-p",
                str(pids[name][0]),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        )
    try:
        yield outputs
    finally:
        for process in spies:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
        await asyncio.gather(*(p.wait() for p in spies))


async def _grpc_baseline(workdir: Path, streams: int, messages: int, size: int, channels: int) -> dict[str, Any]:
    server = await Worker.spawn("grpc-baseline-server", "osago_bench.baselines", ["grpc-server"], workdir)
    client: Worker | None = None
    try:
        await server.ready()
        per_stream = max(1, math.ceil(messages / max(1, streams)))
        params = {
            "target": server.address,
            "streams": streams,
            "per_stream": per_stream,
            "size": size,
            "channels": channels,
        }
        client = await Worker.spawn(
            "grpc-baseline-client", "osago_bench.baselines", ["grpc-client", "--params", json.dumps(params)], workdir
        )
        await client.ready()
        before = sample(server.pid), sample(client.pid)
        await client.go()
        outcome: dict[str, Any] = await client.result()
        after = sample(server.pid), sample(client.pid)
        assert before[0] and before[1] and after[0] and after[1]
        outcome["server_cpu_s"] = round(after[0].cpu_s - before[0].cpu_s, 3)
        outcome["client_cpu_s"] = round(after[1].cpu_s - before[1].cpu_s, 3)
        return outcome
    finally:
        if client is not None:
            await client.stop()
        await server.stop()


async def _fanout_baseline(
    workdir: Path, config: LoadConfig, sim: str, sessions: int, application: bytes
) -> dict[str, Any]:
    params = {
        "sim": sim,
        "insurers": config.insurers,
        "sessions": sessions,
        "concurrency": min(config.customers, sessions),
        "spread_s": min(config.ramp_s, 10.0),
        "limit_s": config.session_limit_s,
        "application": application.hex(),
    }
    worker = await Worker.spawn(
        "fanout-baseline", "osago_bench.baselines", ["fanout", "--params", json.dumps(params)], workdir
    )
    try:
        await worker.ready()
        before = sample(worker.pid)
        await worker.go()
        outcome: dict[str, Any] = await worker.result()
        after = sample(worker.pid)
        assert before and after
        outcome["cpu_s"] = round(after.cpu_s - before.cpu_s, 3)
        return outcome
    finally:
        await worker.stop()


async def _failing_soft(name: str, baseline: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any] | None:
    """A baseline's result; None (and a line on stderr) when it fails: the run's own
    measurements are reported all the same."""
    try:
        return await baseline
    except Exception as error:  # noqa: BLE001 - a failed baseline must not lose the run
        print(f"osago bench load: the {name} baseline failed: {error}", file=sys.stderr)
        return None


async def run_load(config: LoadConfig, application: application_pb2.Application) -> dict[str, Any]:
    """Runs the benchmark; returns the report (osago_bench.load_report)."""
    config.check()
    serialized = application.SerializeToString()
    host = machine()
    started_at = datetime.now().astimezone().isoformat(timespec="seconds")
    workdir = Path(tempfile.mkdtemp(prefix="osago-bench-load-"))
    try:
        async with _mesh(config) as mesh, aiohttp.ClientSession() as http:
            plans = _plans(config, mesh.targets, serialized)
            generators: list[Worker] = []
            reniced: dict[int, int] = {}
            try:
                for n, plan in enumerate(plans):
                    path = workdir / f"plan-{n}.json"
                    path.write_text(json.dumps(plan.to_json()))
                    generators.append(
                        await Worker.spawn(f"loadgen {n + 1}", "osago_bench.loadgen", [str(path)], workdir)
                    )
                await asyncio.gather(*(g.ready() for g in generators))
                measured = {**mesh.pids, **{g.name: [g.pid] for g in generators}}
                reniced = apply_nice(config.nice, measured)
                async with _profiling(config, mesh.pids) as profiles:
                    requests_before = await _sim_requests(http, mesh.sim)
                    shed_before = await _shed_by_signal(http, mesh.metrics)
                    busy_before = machine_busy_seconds()
                    before = _samples(measured)
                    sampled_at = time.time()
                    start_wall = sampled_at + 0.2
                    await asyncio.gather(*(g.go(repr(start_wall)) for g in generators))
                    results = await asyncio.gather(*(g.result() for g in generators))
                    after = _samples(measured)
                    busy_after = machine_busy_seconds()
                    window_s = time.time() - sampled_at
                    requests_after = await _sim_requests(http, mesh.sim)
                    shed_after = await _shed_by_signal(http, mesh.metrics)
            finally:
                restore_nice(reniced)  # for the baselines, and a running mesh's processes as they were
                await asyncio.gather(*(g.stop() for g in generators), return_exceptions=True)
            ledger = await _sim_json(http, mesh.sim, "/_sim/ledger")
            stats = await _sim_json(http, mesh.sim, "/_sim/stats")
            run = Measured(
                config=config.to_json(),
                machine=host,
                started_at=started_at,
                window_s=window_s,
                generators=results,
                costs=_costs(before, after),
                sim_requests=requests_after - requests_before,
                machine_busy_s=busy_after - busy_before,
                ledger_offers=ledger["offers"],
                applications=stats["applications"],
                load_processes=len(plans),
                channels=sum(p.channels_per_target * len(p.targets) for p in plans),
                shed_by_signal=None
                if shed_before is None or shed_after is None
                else {k: v - shed_before.get(k, 0.0) for k, v in shed_after.items()},
            )
            if config.baselines:
                streams, events, size = run.grpc_baseline_shape()
                run.grpc_baseline = await _failing_soft(
                    "gRPC", _grpc_baseline(workdir, streams, events, size, run.channels)
                )
                fanout_sessions = min(config.fanout_sessions, max(1, run.admitted()))
                run.fanout_baseline = await _failing_soft(
                    "fan-out", _fanout_baseline(workdir, config, mesh.sim, fanout_sessions, serialized)
                )
            run.profiles = {name: summarise(path) for name, path in profiles.items() if path.exists()}
            run.machine["load_average_after"] = machine()["load_average"]
        return build_report(run)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
