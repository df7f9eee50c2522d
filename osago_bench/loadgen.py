"""The load generator: a number of customers, each asking for quotes over GetQuotes and starting
a new session the moment the last one ended (a closed loop), for a set time. Lean on purpose —
a plain grpc.aio stub per channel, a few channels, nothing but the arrival times and ids noted
per event — so that it does not take the CPU the system under test needs; it measures its own
event loop's lag, so the report can tell a late client from a late mesh.

Every request sets `fresh`: the insurers are asked every time, never the cache of results.
Every call carries the customer's deadline (the session limit): a session that has not
finished by then ends DEADLINE_EXCEEDED, as it would for a real customer.

Run as a worker (osago_bench.workers): `python -m osago_bench.loadgen PLAN.json --result PATH`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_status import rpc_status
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import aggregator_service_pb2_grpc, application_pb2, events_pb2, quote_pb2

from osago_bench.accounting import percentile
from osago_bench.workers import announce_ready, report_result
from osago_common import gc_policy, loop
from osago_common.grpc_errors import retry_delay_s
from osago_common.grpc_guard import CUSTOMER_KEY

# Each channel its own connection (channels to one target would otherwise share one).
CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)
# Waits after a failed call other than a refusal (which says how long), so that a mesh that is
# down is not hammered in a tight loop.
ERROR_PAUSE_S = 1.0
SHED_PAUSE_S = 1.0
# How often the generator samples its own event loop's lag.
LAG_SAMPLE_S = 0.1
# One response in this many is weighed (its serialized size), for the gRPC baseline's messages.
SIZE_SAMPLE_EVERY = 7
# A failed call's status message is kept up to this many characters.
DETAIL_CHARS = 200


@dataclass(frozen=True)
class LoadPlan:
    """What one load generator process does. Customers are numbered across every process, so
    their ramp spreads evenly whatever the number of processes."""

    targets: list[str]
    # This process's customers: first_customer, first_customer + 1, ... (of total_customers).
    first_customer: int
    customers: int
    total_customers: int
    ramp_s: float
    hold_s: float
    limit_s: float
    channels_per_target: int
    application: str  # the Application, serialized, hex

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SessionRecord:
    """One session as its customer saw it. Times: `start` wall clock (Unix seconds); the others
    seconds after it: `finished_after` when SessionFinished arrived, `elapsed` when the call
    ended. `quotes` are [insurer id, offer id, arrival, obtained_at or None, the event's time
    (when the aggregator logged it)], wall-clock seconds."""

    customer: int
    start: float
    request_id: str = ""
    elapsed: float | None = None
    first_offer: float | None = None
    # When SessionStarted arrived: how long the call waited to be taken and admitted.
    started_after: float | None = None
    finished: str = ""  # the SessionStatus name once SessionFinished arrived
    finished_after: float | None = None
    # The gRPC status name when the call failed (after SessionFinished, too: a call may still
    # end DEADLINE_EXCEEDED if its final status comes too late).
    code: str = ""
    # The failed call's status message, as the client saw it (the gRPC library's or the server's).
    detail: str = ""
    retry_after_s: float | None = None
    events: int = 0
    quotes: list[list[Any]] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)


class Generator:
    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.channels = [
            grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
            for target in plan.targets
            for _ in range(plan.channels_per_target)
        ]
        self.stubs = [aggregator_service_pb2_grpc.AggregatorServiceStub(c) for c in self.channels]
        application = application_pb2.Application.FromString(bytes.fromhex(plan.application))
        self.request = pb.GetQuotesRequest(application=application, fresh=True)
        self.records: list[SessionRecord] = []
        self.sized_bytes = 0
        self.sized_events = 0
        self.lags: list[float] = []
        self._events_seen = 0

    async def connect(self) -> None:
        await asyncio.gather(*(asyncio.wait_for(c.channel_ready(), 30) for c in self.channels))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.channels))

    async def run(self, start_wall: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time() + (start_wall - time.time())
        stop = start + self.plan.ramp_s + self.plan.hold_s
        sampler = asyncio.create_task(self._sample_lag())
        try:
            await asyncio.gather(
                *(self._customer(self.plan.first_customer + i, start, stop) for i in range(self.plan.customers))
            )
        finally:
            sampler.cancel()

    async def _sample_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(LAG_SAMPLE_S)
            self.lags.append(loop.time() - asked - LAG_SAMPLE_S)

    async def _customer(self, number: int, start: float, stop: float) -> None:
        loop = asyncio.get_running_loop()
        stub = self.stubs[number % len(self.stubs)]
        # Each customer named, as core-app names the customer it calls for: the aggregator's
        # per-customer limits then apply to each, not to the one address every customer shares.
        metadata = ((CUSTOMER_KEY, f"bench-customer-{number}"),)
        await asyncio.sleep(max(0.0, start + self.plan.ramp_s * number / self.plan.total_customers - loop.time()))
        while loop.time() < stop:
            record = await self._session(stub, number, metadata)
            self.records.append(record)
            if record.code == "RESOURCE_EXHAUSTED":
                await asyncio.sleep(record.retry_after_s if record.retry_after_s is not None else SHED_PAUSE_S)
            elif record.code and record.code != "DEADLINE_EXCEEDED":
                await asyncio.sleep(ERROR_PAUSE_S)

    async def _session(self, stub: Any, customer: int, metadata: tuple[tuple[str, str], ...]) -> SessionRecord:
        record = SessionRecord(customer=customer, start=time.time())
        began = time.monotonic()
        failures: Counter[str] = Counter()
        call = stub.GetQuotes(self.request, timeout=self.plan.limit_s, metadata=metadata)
        try:
            async for response in call:
                event = response.event
                record.events += 1
                self._events_seen += 1
                if self._events_seen % SIZE_SAMPLE_EVERY == 0:
                    self.sized_bytes += response.ByteSize()
                    self.sized_events += 1
                kind = event.WhichOneof("payload")
                if kind == "quote_received":
                    arrived = time.time()
                    quote = event.quote_received.quote
                    obtained = _seconds(quote.obtained_at) if quote.HasField("obtained_at") else None
                    # event.time: when the aggregator logged it, having just received it.
                    record.quotes.append([quote.insurer_id, quote.offer_id, arrived, obtained, _seconds(event.time)])
                    if record.first_offer is None:
                        record.first_offer = arrived - record.start
                elif kind == "session_started":
                    record.request_id = event.request_id
                    record.started_after = time.monotonic() - began
                elif kind == "insurer_failed":
                    failures[_reason(event.insurer_failed.reason)] += 1
                elif kind == "session_finished":
                    record.finished = _status(event.session_finished.status)
                    record.finished_after = time.monotonic() - began
        except grpc.aio.AioRpcError as error:
            code = error.code()
            record.code = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
            record.detail = (error.details() or "")[:DETAIL_CHARS]
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                status = rpc_status.from_call(error)
                record.retry_after_s = retry_delay_s(status) if status is not None else None
        record.elapsed = time.monotonic() - began
        record.failures = dict(failures)
        return record

    def result(self) -> dict[str, Any]:
        lag_ms = [x * 1000 for x in self.lags]
        return {
            "sessions": [asdict(r) for r in self.records],
            "sized_bytes": self.sized_bytes,
            "sized_events": self.sized_events,
            "loop_lag_ms": {
                "p50": percentile(lag_ms, 50),
                "p99": percentile(lag_ms, 99),
                "max": max(lag_ms, default=None),
            },
        }


def _seconds(timestamp: Any) -> float:
    return float(timestamp.seconds) + float(timestamp.nanos) / 1e9


def _reason(reason: quote_pb2.FailureReason.ValueType) -> str:
    try:
        return str(quote_pb2.FailureReason.Name(reason)).removeprefix("FAILURE_REASON_").lower()
    except ValueError:
        return str(reason)


def _status(status: events_pb2.SessionStatus.ValueType) -> str:
    try:
        return str(events_pb2.SessionStatus.Name(status)).removeprefix("SESSION_STATUS_").lower()
    except ValueError:
        return str(status)


async def main(plan_path: Path, result_path: Path) -> None:
    plan = LoadPlan(**json.loads(plan_path.read_text()))
    generator = Generator(plan)
    try:
        await generator.connect()
        start_wall = float(await announce_ready())
        await generator.run(start_wall)
        result = generator.result()
    finally:
        await generator.close()
    await report_result(result_path, result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("plan", type=Path)
    parser.add_argument("--result", type=Path, required=True)
    arguments = parser.parse_args()
    gc_policy.install()  # the generator holds every record in memory: no full-heap pauses either
    loop.run(main(arguments.plan, arguments.result))
