"""The two baselines the load benchmark measures in the same run, so that what our own code costs
shows as a ratio rather than an absolute that depends on the machine:

- a bare grpc.aio server streaming equally sized messages over as many concurrent streams as
  the run had customers (`grpc-server`, read by `grpc-client`): the least CPU a Python process
  can spend sending one event to a client;
- a bare asyncio fan-out (`fanout`): per session, every insurer's create and then its polls by
  the gateways' very policy (insurer_gateway.polling), over the gateways' aiohttp
  transport and dialects, against the same simulator, with no gRPC, no storage, no breaker,
  quota, retries, tracing or logging: the least CPU getting the offers can cost.

Each runs as a worker (osago_bench.workers): `python -m osago_bench.baselines MODE ... --result P`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import time
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from osago.v1 import application_pb2

from aggregator.core import normalised
from insurer_gateway.dialects import DIALECTS, Declined, Dialect, NotReady, Offer, Rejected
from insurer_gateway.exchange import HttpResponse, TransportError, retry_after_s
from insurer_gateway.polling import PollLearning, Tracker, next_poll, poll_wait
from insurer_gateway.settings import GatewaySettings
from insurer_gateway.transport import AiohttpTransport
from osago_bench.workers import announce_ready, report_result, until_released
from osago_common import loop
from osago_common.clock import SYSTEM_CLOCK
from osago_common.dates import moscow_today

STREAM_METHOD = "/osago.bench.v1.BaselineService/Stream"
_REQUEST = struct.Struct("!II")  # messages to send, bytes each


# --- (a) bare gRPC streaming ----------------------------------------------------------------------


async def _stream(request: bytes, context: Any) -> Any:
    count, size = _REQUEST.unpack(request)
    payload = b"\x2a" * size
    for _ in range(count):
        yield payload


# gRPC's C core cancels new calls once this many wait for the application to take them (1000 by
# default): thousands of streams opened at once would be cancelled, not served.
PENDING_CALLS = (
    ("grpc.server.max_pending_requests", 100_000),
    ("grpc.server.max_pending_requests_hard_limit", 100_000),
)


async def stream_server() -> tuple[grpc.aio.Server, str]:
    """A started bare server of STREAM_METHOD (raw bytes both ways), and its address."""
    server = grpc.aio.server(options=PENDING_CALLS)
    handler = grpc.method_handlers_generic_handler(
        "osago.bench.v1.BaselineService", {"Stream": grpc.unary_stream_rpc_method_handler(_stream)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


class StreamReader:
    """The bare client: `channels` channels (a connection each) to a stream server."""

    def __init__(self, target: str, channels: int) -> None:
        self._pool = [
            grpc.aio.insecure_channel(target, options=(("grpc.use_local_subchannel_pool", 1),))
            for _ in range(max(1, channels))
        ]
        self._calls: list[grpc.aio.UnaryStreamMultiCallable[bytes, bytes]] = [
            c.unary_stream(STREAM_METHOD) for c in self._pool
        ]

    async def connect(self) -> None:
        await asyncio.gather(*(asyncio.wait_for(c.channel_ready(), 30) for c in self._pool))

    async def read(self, streams: int, per_stream: int, size: int) -> int:
        """Reads `streams` concurrent streams of `per_stream` messages of `size` bytes; returns
        the messages received."""
        request = _REQUEST.pack(per_stream, size)

        async def one(n: int) -> int:
            received = 0
            async for _ in self._calls[n % len(self._calls)](request):
                received += 1
            return received

        return sum(await asyncio.gather(*(one(n) for n in range(streams))))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._pool))


async def grpc_server(result: Path) -> None:
    """The server worker: serves until stdin closes."""
    server, address = await stream_server()
    try:
        print(f"ready {address}", flush=True)
        await until_released()
    finally:
        await server.stop(0)


async def grpc_client(target: str, streams: int, per_stream: int, size: int, channels: int, result: Path) -> None:
    """The client worker: connects, then reads the streams when told to go."""
    reader = StreamReader(target, channels)
    await reader.connect()
    await announce_ready()
    began = time.monotonic()
    messages = await reader.read(streams, per_stream, size)
    elapsed = time.monotonic() - began
    await reader.close()
    await report_result(result, {"messages": messages, "streams": streams, "size": size, "seconds": elapsed})


# --- (b) bare fan-out -----------------------------------------------------------------------------


class _Insurer:
    def __init__(self, insurer_id: str, dialect: str, base_url: str) -> None:
        self.settings = GatewaySettings(
            insurer_id=insurer_id, insurer_name=insurer_id, dialect=dialect, base_url=base_url
        )
        self.dialect: Dialect = DIALECTS[dialect]
        self.learning = PollLearning(self.settings)
        connector = aiohttp.TCPConnector(limit=self.settings.http_max_connections)
        self.http = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        self.transport = AiohttpTransport(self.http, base_url)


class FanOut:
    """Sessions of create-then-poll to every insurer at once, nothing else."""

    def __init__(self, insurers: list[_Insurer], application: application_pb2.Application, limit_s: float) -> None:
        self.insurers = insurers
        self.application = normalised(application, moscow_today(SYSTEM_CLOCK))
        self.limit_s = limit_s
        self.requests = 0
        self.outcomes: dict[str, int] = {}

    async def _call(self, insurer: _Insurer, call: Any, deadline: float) -> HttpResponse | None:
        timeout = min(insurer.settings.http_timeout_s, deadline - time.monotonic())
        if timeout <= 0:
            return None
        self.requests += 1
        try:
            return await insurer.transport(call, timeout)
        except TransportError:
            return None

    async def _ask(self, insurer: _Insurer, request_id: str, deadline: float) -> str:
        s, dialect = insurer.settings, insurer.dialect
        start = self.application.policy_start_date
        create = dialect.create_request(
            request_id, f"{request_id}:{s.insurer_id}", self.application, date.fromisoformat(start)
        )
        response = await self._call(insurer, create, deadline)
        if response is None or response.status >= 400:
            return "failed"
        created = dialect.parse_create(response)
        if isinstance(created, Rejected):
            return "declined"
        retry_after = retry_after_s(response.headers, SYSTEM_CLOCK.now())
        hint, hintless, final_used = created.poll_hint_s, 0, False
        poll = dialect.poll_request(created.application_id)
        accepted_at = time.monotonic()
        track = Tracker(insurer.learning)
        track.start(hint)
        while True:
            now = time.monotonic()
            wait, floor = poll_wait(s, track.learned(), hint, retry_after, hintless, now - accepted_at)
            step = next_poll(s, wait, floor, deadline - now, final_used)  # the gateways' last poll too
            if step is None:
                return "deadline"
            wait, final_used = step
            await asyncio.sleep(wait)
            sent_at = time.monotonic()
            response = await self._call(insurer, poll, deadline)
            if response is None or response.status >= 400:
                return "failed"
            outcome = dialect.parse_poll(response)
            retry_after = retry_after_s(response.headers, SYSTEM_CLOCK.now())
            hint = outcome.poll_hint_s if isinstance(outcome, NotReady) else None
            ready = isinstance(outcome, Offer | Declined)
            now = time.monotonic()
            track.answered(sent_at - accepted_at, now - accepted_at, ready, hint, isinstance(outcome, Offer))
            if isinstance(outcome, NotReady):
                hintless = 0 if hint is not None or retry_after is not None else hintless + 1
                continue
            if isinstance(outcome, Offer):
                return "offer"
            return type(outcome).__name__.lower()

    async def run(self, sessions: int, concurrency: int, spread_s: float) -> dict[str, Any]:
        """`sessions` sessions, at most `concurrency` at once, their starts spread over `spread_s`;
        returns what they made: requests, outcomes by kind, seconds, and the request ids' prefix."""
        gate = asyncio.Semaphore(concurrency)
        run_id = f"bare-{int(time.time() * 1000):x}"
        began = time.monotonic()

        async def one(n: int) -> None:
            await asyncio.sleep(spread_s * n / max(1, sessions))
            async with gate:
                await self.session(f"{run_id}-{n}")

        await asyncio.gather(*(one(n) for n in range(sessions)))
        return {
            "sessions": sessions,
            "requests": self.requests,
            "outcomes": dict(self.outcomes),
            "seconds": time.monotonic() - began,
            "run_id": run_id,
        }

    async def close(self) -> None:
        await asyncio.gather(*(i.http.close() for i in self.insurers))

    async def session(self, request_id: str) -> None:
        deadline = time.monotonic() + self.limit_s
        outcomes = await asyncio.gather(
            *(self._ask(i, request_id, deadline) for i in self.insurers), return_exceptions=True
        )
        for outcome in outcomes:
            key = outcome if isinstance(outcome, str) else "error"
            self.outcomes[key] = self.outcomes.get(key, 0) + 1


async def open_fanout(sim: str, insurers: int, application: application_pb2.Application, limit_s: float) -> FanOut:
    """A bare fan-out to the simulator's first `insurers` insurers (close it with `close`)."""
    async with aiohttp.ClientSession() as control, control.get(f"{sim}/_sim/insurers") as response:
        listed = (await response.json())[:insurers]
    pool = [_Insurer(i["insurer_id"], i["dialect"], i["base_url"]) for i in listed]
    return FanOut(pool, application, limit_s)


async def fanout(
    sim: str,
    insurers: int,
    sessions: int,
    concurrency: int,
    spread_s: float,
    limit_s: float,
    application: str,
    result: Path,
) -> None:
    """The fan-out worker: `sessions` sessions when told to go."""
    bare = await open_fanout(sim, insurers, application_pb2.Application.FromString(bytes.fromhex(application)), limit_s)
    try:
        await announce_ready()
        outcome = await bare.run(sessions, concurrency, spread_s)
    finally:
        await bare.close()
    await report_result(result, outcome)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("grpc-server", "grpc-client", "fanout"))
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--params", default="{}", help="JSON of the mode's parameters")
    arguments = parser.parse_args()
    params = json.loads(arguments.params)
    if arguments.mode == "grpc-server":
        loop.run(grpc_server(arguments.result))
    elif arguments.mode == "grpc-client":
        loop.run(grpc_client(result=arguments.result, **params))
    else:
        loop.run(fanout(result=arguments.result, **params))


if __name__ == "__main__":
    main()
