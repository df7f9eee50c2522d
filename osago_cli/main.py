"""The `osago` command: run the mesh or any one service, and ask for quotes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from osago_common import gc_policy, loop
from osago_common.env import SettingsError
from osago_common.insurers import CATALOGUE
from osago_common.logs import configure_logging
from osago_common.tracing import configure_tracing
from osago_mesh.defaults import AGGREGATOR_PORT, AGGREGATOR_TARGET, EDGES, PAGE_PORT, SIM_PORT, SIM_URL

# Where `osago up` puts the aggregator and the simulator when those ports are free.
DEFAULT_TARGET = AGGREGATOR_TARGET
DEFAULT_SIM_URL = SIM_URL
FAULT_MODES = (
    "down, blackhole, slow, error, ratelimit, malformed, flapping, decline; for insurers that call back: "
    "callback_never, callback_twice, callback_late, callback_bad_signature, callback_target_down"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="osago", description="OSAGO quote aggregator")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the whole mesh on this machine")
    up.add_argument(
        "--insurers",
        type=int,
        default=len(CATALOGUE),
        help="the first N insurers of the catalogue (default: all %(default)s)",
    )
    up.add_argument("--time-scale", type=float, default=1.0, help="multiplies every simulated delay")
    up.add_argument("--host", default="127.0.0.1", help="interface every service binds")
    up.add_argument(
        "--aggregator-port",
        type=int,
        default=AGGREGATOR_PORT,
        help="default %(default)s (a free one if taken); 0 picks a free port",
    )
    up.add_argument(
        "--sim-port",
        type=int,
        default=SIM_PORT,
        help="default %(default)s, where `osago sim fault` looks (a free one if taken); 0 picks a free port",
    )
    up.add_argument(
        "--page-port",
        type=int,
        default=PAGE_PORT,
        help="the page and grpc-web; default %(default)s (a free one if taken); 0 picks a free port",
    )
    up.add_argument(
        "--edge",
        choices=EDGES,
        default="auto",
        help="who serves the page and grpc-web: Envoy, web_bridge, or auto (Envoy when installed)",
    )
    up.add_argument("--session-limit", type=float, default=None, help="seconds (default 60)")
    up.add_argument("--seed", type=int, default=None, help="simulator random seed")
    up.add_argument(
        "--backend",
        choices=("embedded", "shared"),
        default="embedded",
        help="sessions in each aggregator's memory, or shared in Postgres + Redis (default %(default)s)",
    )
    up.add_argument("--aggregators", type=int, default=1, help="aggregator instances (more than one: --backend shared)")
    up.add_argument("--gateway-replicas", type=int, default=1, help="gateway processes per insurer")
    up.add_argument(
        "--secure",
        action="store_true",
        help="TLS on every gRPC link and mTLS, with a CA made for this run (default: the dev mode, plaintext)",
    )
    up.add_argument(
        "--postgres-url",
        default=os.environ.get("OSAGO_POSTGRES_URL") or None,
        help="the shared backend's Postgres (OSAGO_POSTGRES_URL; default: a private server, installed binaries)",
    )
    up.add_argument(
        "--redis-url",
        default=os.environ.get("OSAGO_REDIS_URL") or None,
        help="the shared backend's Redis (OSAGO_REDIS_URL; default: a private server from the installed binaries)",
    )

    commands.add_parser("aggregator", help="run the aggregator (OSAGO_AGGREGATOR_*, OSAGO_GATEWAYS)")
    commands.add_parser(
        "bridge", help="run web_bridge: the page, the REST + WebSocket API and grpc-web (OSAGO_BRIDGE_*)"
    )

    gateway = commands.add_parser("gateway", help="run one insurer's gateway (OSAGO_GATEWAY_*)")
    gateway.add_argument("--insurer", help="insurer id (OSAGO_GATEWAY_INSURER)")
    gateway.add_argument("--base-url", help="insurer API base URL (OSAGO_GATEWAY_BASE_URL)")
    gateway.add_argument("--bind", help="host:port (OSAGO_GATEWAY_BIND)")

    sim = commands.add_parser("sim", help="run the insurer simulator (OSAGO_SIM_*)")
    sim.add_argument("--insurers", type=int, help="simulated insurers (OSAGO_SIM_INSURERS)")
    sim.add_argument("--time-scale", type=float, help="delay multiplier (OSAGO_SIM_TIME_SCALE)")
    sim.add_argument("--port", type=int, help="port (OSAGO_SIM_PORT)")
    sim.add_argument("--host", help="interface (OSAGO_SIM_HOST)")
    sim.add_argument("--seed", type=int, help="random seed (OSAGO_SIM_SEED)")
    sim.add_argument(
        "--insurer-ports",
        action="store_true",
        default=None,
        help="also serve each insurer on its own port, so `down` refuses connections (OSAGO_SIM_INSURER_PORTS)",
    )
    _add_sim_control(sim)

    bench = commands.add_parser("bench", help="benchmarks over the whole mesh")
    benches = bench.add_subparsers(dest="bench", required=True)
    faults = benches.add_parser("faults", help="the fault matrix: every fault mode on some insurers")
    faults.add_argument("--json", action="store_true", help="one JSON object per fault mode")
    faults.add_argument("--modes", nargs="+", help="only these modes (default: all)")
    faults.add_argument("--sessions", type=int, default=4, help="concurrent sessions per wave")
    faults.add_argument("--waves", type=int, default=3, help="waves of sessions while the fault is on")
    faults.add_argument("--limit", type=float, default=8.0, help="each session's time limit, seconds")
    faults.add_argument("--in-process", action="store_true", help="run every service in one event loop")
    faults.add_argument("--file", help="application JSON (default: examples/moscow-young-driver.json)")

    failover = benches.add_parser(
        "failover",
        help="sessions over several aggregators and gateway replicas on Postgres + Redis while instances die and stop",
    )
    failover.add_argument("--json", action="store_true", help="the report as one JSON object")
    failover.add_argument("--sessions", type=int, default=60, help="concurrent sessions (default %(default)s)")
    failover.add_argument(
        "--aggregators", type=int, default=3, help="aggregator instances, at least 3 (default %(default)s)"
    )
    failover.add_argument("--gateway-replicas", type=int, default=2, help="replicas per gateway (default %(default)s)")
    failover.add_argument(
        "--time-scale", type=float, default=0.25, help="simulated delays × this (default %(default)s)"
    )
    failover.add_argument(
        "--limit", type=float, default=20.0, help="each session's time limit, seconds (default %(default)s)"
    )
    failover.add_argument("--postgres-url", default=None, help="Postgres to use (default: a private server)")
    failover.add_argument("--redis-url", default=None, help="Redis to use (default: a private server)")
    failover.add_argument("--file", help="application JSON (default: examples/moscow-young-driver.json)")

    fuzz = benches.add_parser(
        "fuzz",
        help="malformed input on every entry point of a secure mesh; fails on a crash, a 5xx, UNKNOWN or INTERNAL",
    )
    fuzz.add_argument("--json", action="store_true", help="the report as one JSON object")
    fuzz.add_argument("--seconds", type=float, default=60.0, help="how long to send (default %(default)s)")
    fuzz.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    fuzz.add_argument("--concurrency", type=int, default=8, help="senders at once (default %(default)s)")

    _add_bench_load(benches)

    polling = benches.add_parser(
        "polling",
        help="offline: the polling policy's requests per application against detection delay, per simulated insurer",
    )
    polling.add_argument("--insurers", type=int, default=10, help="simulated insurers (default %(default)s)")
    polling.add_argument(
        "--applications", type=int, default=2000, help="applications counted per insurer (default %(default)s)"
    )
    polling.add_argument(
        "--warmup", type=int, default=100, help="applications learned from first (default %(default)s)"
    )
    polling.add_argument("--rtt", type=float, default=0.002, help="an HTTP round trip, seconds (default %(default)s)")
    polling.add_argument("--seed", type=int, default=1, help="random seed (default %(default)s)")
    polling.add_argument("--json", action="store_true", help="one JSON object per insurer and policy choice")

    simcost = benches.add_parser("sim", help="the insurer simulator's CPU per HTTP request under a fixed request mix")
    simcost.add_argument("--seconds", type=float, default=15.0, help="how long to drive it (default %(default)s)")
    simcost.add_argument("--concurrency", type=int, default=100, help="clients at once (default %(default)s)")
    simcost.add_argument("--polls", type=int, default=10, help="polls per application (default %(default)s)")
    simcost.add_argument("--sim", help="a running simulator's URL (with --pid)")
    simcost.add_argument("--pid", type=int, help="the running simulator's process id")
    simcost.add_argument(
        "--shared-port",
        action="store_true",
        help="the simulator it starts serves the insurers on its shared port (aiohttp), not each on its own",
    )
    simcost.add_argument("--file", help="application JSON (default: examples/moscow-young-driver.json)")
    simcost.add_argument("--json", action="store_true", help="the result as one JSON object")

    hotpaths = benches.add_parser(
        "hotpaths", help="the CPU of the per-request steps the profiles found hot, each timed on its own"
    )
    hotpaths.add_argument("--rounds", type=int, default=5, help="rounds, the best one counts (default %(default)s)")
    hotpaths.add_argument("--code", help="time another checkout's code (its directory), to compare two versions")
    hotpaths.add_argument("--file", help="application JSON (default: examples/moscow-young-driver.json)")
    hotpaths.add_argument("--json", action="store_true", help="the result as one JSON object")

    storecost = benches.add_parser(
        "store", help="the aggregator's CPU per event appended to the Postgres store, binary against text parameters"
    )
    storecost.add_argument("--requests", type=int, default=200, help="requests a round and form (default %(default)s)")
    storecost.add_argument("--events", type=int, default=10, help="events appended to each (default %(default)s)")
    storecost.add_argument("--rounds", type=int, default=3, help="rounds, each form once (default %(default)s)")
    storecost.add_argument("--postgres", help="a Postgres URL (default: a private server started for the run)")
    storecost.add_argument("--json", action="store_true", help="the result as one JSON object")

    health = commands.add_parser("health", help="check a gRPC service's grpc.health.v1 status (exit 0 when SERVING)")
    health.add_argument("--target", required=True, help="host:port, or any gRPC target such as dns:///name:port")
    health.add_argument("--service", default="", help="service name to check (default: the server as a whole)")
    health.add_argument("--timeout", type=float, help="seconds the check may take (default 5)")

    quote = commands.add_parser("quote", help="ask for quotes and watch them arrive")
    quote.add_argument("--file", required=True, help="application JSON (protobuf JSON mapping)")
    quote.add_argument(
        "--target",
        default=os.environ.get("OSAGO_TARGET", DEFAULT_TARGET),
        help="aggregator host:port, or several instances host:port,host:port",
    )
    quote.add_argument("--json", action="store_true", help="print one JSON object per event")
    quote.add_argument("--time-limit", type=float, default=None, help="ask for a shorter session (seconds)")
    quote.add_argument(
        "--fresh",
        action="store_true",
        help="ask every insurer anew, even if the same application was quoted minutes ago",
    )
    return parser


def _add_bench_load(benches: Any) -> None:
    """`osago bench load`: concurrent customers on the whole mesh, and what it cost."""
    load = benches.add_parser(
        "load",
        help="N concurrent customers over the whole mesh: sessions, offers against the ledger, lag, CPU, baselines",
    )
    load.add_argument("--sessions", type=int, default=200, help="concurrent customers (default %(default)s)")
    load.add_argument("--duration", type=float, default=120.0, help="seconds held after the ramp (default %(default)s)")
    load.add_argument(
        "--ramp", type=float, default=30.0, help="seconds over which customers start (default %(default)s)"
    )
    load.add_argument("--insurers", type=int, default=10, help="simulated insurers (default %(default)s)")
    load.add_argument("--time-scale", type=float, default=1.0, help="multiplies every simulated delay")
    load.add_argument("--session-limit", type=float, default=60.0, help="each customer's deadline, seconds")
    load.add_argument("--backend", choices=("embedded", "shared"), default="embedded", help="shared: Postgres + Redis")
    load.add_argument("--aggregators", type=int, default=1, help="aggregator instances")
    load.add_argument("--gateway-replicas", type=int, default=1, help="gateway replicas per insurer")
    load.add_argument("--postgres-url", default=os.environ.get("OSAGO_POSTGRES_URL"), help="shared backend's Postgres")
    load.add_argument("--redis-url", default=os.environ.get("OSAGO_REDIS_URL"), help="shared backend's Redis")
    load.add_argument("--target", help="a running mesh's aggregator(s), host:port[,host:port] (with --sim)")
    load.add_argument("--sim", help="a running mesh's simulator URL (with --target)")
    load.add_argument(
        "--pid", action="append", default=[], metavar="NAME=PID", help="a running mesh's process to measure"
    )
    load.add_argument("--load-processes", type=int, default=0, help="load generator processes (default: 1 per 1000)")
    load.add_argument("--channels", type=int, default=0, help="gRPC channels per process and target (default: auto)")
    load.add_argument("--no-baselines", action="store_true", help="skip the bare gRPC and bare fan-out baselines")
    load.add_argument("--seed", type=int, default=None, help="simulator random seed")
    load.add_argument("--profile", metavar="DIR", help="py-spy the aggregator, the simulator and a gateway into DIR")
    load.add_argument("--mesh-log", metavar="FILE", help="where the services' logs go (default: nowhere)")
    load.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every service of the mesh started here, e.g. OSAGO_MAX_SESSIONS=500",
    )
    load.add_argument(
        "--nice",
        action="append",
        default=[],
        metavar="ROLE=N",
        help="a nice value for the aggregator, gateway, sim, loadgen or backend processes, e.g. aggregator=-4",
    )
    load.add_argument("--json", action="store_true", help="print the report as one JSON document")
    load.add_argument("--file", help="application JSON (default: examples/moscow-young-driver.json)")


def _add_sim_control(sim: argparse.ArgumentParser) -> None:
    """`osago sim fault|heal`, steering a running simulator (plain `osago sim` serves one)."""
    control = sim.add_subparsers(dest="sim_command", metavar="{fault,heal}")
    sim_url = os.environ.get("OSAGO_SIM_URL", DEFAULT_SIM_URL)
    fault = control.add_parser("fault", help="switch a fault on for one insurer")
    fault.add_argument("insurer", help="insurer id")
    fault.add_argument("mode", help=FAULT_MODES)
    fault.add_argument("--rate", type=float, help="error: share of requests failing, 0..1 (1.0)")
    fault.add_argument("--status", type=int, help="error, flapping: the 5xx status (503)")
    fault.add_argument("--body", choices=("json", "text"), help="error: body of the 5xx (json)")
    fault.add_argument("--delay", type=float, help="slow, callback_late: seconds before answering or calling back (8)")
    fault.add_argument(
        "--scaled", action="store_true", default=None, help="slow, flapping, callback_late: times × time scale"
    )
    fault.add_argument("--retry-after", type=int, help="ratelimit: Retry-After seconds (1)")
    fault.add_argument("--limit-per-s", type=int, help="ratelimit: 429 only beyond this many requests a second")
    fault.add_argument("--variant", choices=("json", "html", "schema", "random"), help="malformed (json)")
    fault.add_argument("--period", type=float, help="flapping: seconds of one failing + healthy cycle (2)")
    fault.add_argument("--sim", default=sim_url, help="simulator URL (OSAGO_SIM_URL, default %(default)s)")
    heal = control.add_parser("heal", help="heal one insurer, or every one with --all")
    which = heal.add_mutually_exclusive_group(required=True)
    which.add_argument("insurer", nargs="?", help="insurer id")
    which.add_argument("--all", action="store_true", help="heal every insurer")
    heal.add_argument("--sim", default=sim_url, help="simulator URL (OSAGO_SIM_URL, default %(default)s)")


def _run(args: argparse.Namespace) -> int:
    env = os.environ
    if args.command == "up":
        from osago_cli.up import run_mesh
        from osago_mesh.processes import MeshOptions

        shared = args.backend == "shared"
        try:
            options = MeshOptions(
                insurers=args.insurers,
                time_scale=args.time_scale,
                host=args.host,
                aggregator_port=args.aggregator_port,
                sim_port=args.sim_port,
                page_port=args.page_port,
                session_limit_s=args.session_limit,
                seed=args.seed,
                edge=args.edge,
                backend=args.backend,
                aggregators=args.aggregators,
                gateway_replicas=args.gateway_replicas,
                postgres_url=args.postgres_url if shared else None,
                redis_url=args.redis_url if shared else None,
                secure=args.secure,
            )
        except ValueError as error:
            print(f"osago up: {error}", file=sys.stderr)
            return 2
        return loop.run(run_mesh(options))
    if args.command == "aggregator":
        from aggregator.service import serve_forever as serve_aggregator
        from aggregator.settings import AggregatorSettings

        configure_tracing(SERVICE_NAMES["aggregator"], env)
        gc_policy.install(env)
        loop.run(serve_aggregator(AggregatorSettings.from_env(env)))
        return 0
    if args.command == "bridge":
        from web_bridge.service import serve_forever as serve_bridge
        from web_bridge.settings import BridgeSettings

        configure_tracing(SERVICE_NAMES["bridge"], env)
        gc_policy.install(env)
        loop.run(serve_bridge(BridgeSettings.from_env(env)))
        return 0
    if args.command == "gateway":
        from insurer_gateway.service import serve_forever as serve_gateway
        from insurer_gateway.settings import GatewaySettings

        given = {
            "OSAGO_GATEWAY_INSURER": args.insurer,
            "OSAGO_GATEWAY_BASE_URL": args.base_url,
            "OSAGO_GATEWAY_BIND": args.bind,
        }
        gateway_env = dict(env) | {name: value for name, value in given.items() if value}
        configure_tracing(SERVICE_NAMES["gateway"], gateway_env)
        gc_policy.install(gateway_env)
        loop.run(serve_gateway(GatewaySettings.from_env(gateway_env)))
        return 0
    if args.command == "sim" and args.sim_command is not None:
        from osago_cli.simctl import run_simctl

        return run_simctl(args)
    if args.command == "sim":
        from insurer_sim.config import SimConfig
        from insurer_sim.server import serve_forever as serve_sim

        sim_env = dict(env)
        for name, value in (
            ("OSAGO_SIM_INSURERS", args.insurers),
            ("OSAGO_SIM_TIME_SCALE", args.time_scale),
            ("OSAGO_SIM_PORT", args.port),
            ("OSAGO_SIM_HOST", args.host),
            ("OSAGO_SIM_SEED", args.seed),
            ("OSAGO_SIM_INSURER_PORTS", args.insurer_ports),
        ):
            if value is not None:
                sim_env[name] = str(value)
        configure_tracing(SERVICE_NAMES["sim"], sim_env)
        gc_policy.install(sim_env)
        loop.run(serve_sim(SimConfig.from_env(sim_env)))
        return 0
    if args.command == "bench" and args.bench == "sim":
        from pathlib import Path

        from osago_bench.cli import DEFAULT_APPLICATION, load_application, run_simcost
        from osago_bench.simcost import SimCostConfig

        if (args.sim is None) != (args.pid is None) or args.seconds <= 0 or args.concurrency < 1 or args.polls < 0:
            print("osago bench sim: --sim and --pid go together; --seconds, --concurrency positive", file=sys.stderr)
            return 2
        simcost_config = SimCostConfig(
            seconds=args.seconds,
            concurrency=args.concurrency,
            polls=args.polls,
            sim=args.sim,
            pid=args.pid,
            own_ports=not args.shared_port,
        )
        sim_application = load_application(Path(args.file) if args.file else DEFAULT_APPLICATION)
        return run_simcost(simcost_config, sim_application, args.json)
    if args.command == "bench" and args.bench == "store":
        import asyncio
        import json

        from osago_bench.storecost import StoreCostConfig, line, measure

        if args.requests < 1 or args.events < 1 or args.rounds < 1:
            print("osago bench store: --requests, --events and --rounds must be positive", file=sys.stderr)
            return 2
        store_config = StoreCostConfig(args.requests, args.events, args.rounds, args.postgres)
        store_result = asyncio.run(measure(store_config))
        print(json.dumps(store_result) if args.json else line(store_result))
        return 0
    if args.command == "bench" and args.bench == "hotpaths":
        from osago_bench.cli import run_hotpaths_command

        return run_hotpaths_command(args)
    if args.command == "bench" and args.bench == "polling":
        from osago_bench.cli import run_polling_command

        return run_polling_command(args)
    if args.command == "bench" and args.bench == "load":
        from osago_bench.cli import run_load_command

        return loop.run(run_load_command(args))
    if args.command == "bench":
        from pathlib import Path

        from osago_bench.cli import DEFAULT_APPLICATION, run_faults
        from osago_bench.faults import MatrixConfig

        if args.bench == "fuzz":
            from osago_bench.fuzz import FuzzConfig, run_fuzz_command

            fuzz_config = FuzzConfig(seconds=args.seconds, seed=args.seed, concurrency=args.concurrency)
            return loop.run(run_fuzz_command(fuzz_config, as_json=args.json))
        application = Path(args.file) if args.file else DEFAULT_APPLICATION
        if args.bench == "failover":
            from osago_bench.cli import run_failover_command
            from osago_bench.failover import FailoverConfig

            failover_config = FailoverConfig(
                sessions=args.sessions,
                aggregators=args.aggregators,
                gateway_replicas=args.gateway_replicas,
                time_scale=args.time_scale,
                limit_s=args.limit,
                postgres_url=args.postgres_url,
                redis_url=args.redis_url,
            )
            return loop.run(run_failover_command(failover_config, application, as_json=args.json))
        config = MatrixConfig(
            sessions_per_wave=args.sessions, waves=args.waves, limit_s=args.limit, processes=not args.in_process
        )
        return loop.run(run_faults(as_json=args.json, modes=args.modes, config=config, application=application))
    if args.command == "health":
        from osago_cli.health import run_health

        return loop.run(run_health(args.target, args.service, args.timeout))
    if args.command == "quote":
        from osago_cli.quote import run_quote

        return loop.run(run_quote(args.file, args.target, args.json, time_limit_s=args.time_limit, fresh=args.fresh))
    raise AssertionError(args.command)


# The name each service gives itself in logs and traces (the chart's OTEL_SERVICE_NAME values).
SERVICE_NAMES = {
    "aggregator": "osago-aggregator",
    "gateway": "osago-gateway",
    "bridge": "osago-bridge",
    "sim": "osago-sim",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        service = SERVICE_NAMES.get(args.command, "osago")
        configure_logging(os.environ.get("OSAGO_LOG_LEVEL", "INFO"), service=service, env=os.environ)
        return _run(args)
    except SettingsError as error:
        print(f"osago {args.command}: configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
