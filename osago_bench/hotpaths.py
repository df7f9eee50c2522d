"""`osago bench hotpaths`: the CPU of the per-request steps the profiles found hot, each timed in
this process on its own (no server, no network), best of `--rounds`:

- `validate_application`: the aggregator's checks of one application (the example file);
- `untraced call`: the server interceptor of osago_common.tracing deciding that a health check
  gets no span, with the call details gRPC's asyncio server hands it;
- `poll decision`: what the polling policy knows of an insurer (`Tracker.learned`), asked before
  every poll, with 100 times-to-offer and 20 hint verdicts learned;
- `insurer body`: an insurer's JSON answer read (`dialects.parsing.load_object`);
- `gateway ask`: one ask of an Offers stream through the gateway's servicer, its flow scripted
  (accepted, ten pendings, declined; no HTTP);
- `aggregator session`: a session through the aggregator's core (create, ten insurers scripted to
  accept, say pending and make an offer at once, every event followed to the end; no gRPC).

The load benchmark cannot tell changes of a few per cent apart on a shared machine; these can.
`--code DIR` times another checkout's code with this file (run as a script, the packages are
imported from DIR), to compare two versions back to back on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from grpc._cython import cygrpc  # type: ignore[attr-defined]
from osago.v1 import application_pb2, gateway_service_pb2, quote_pb2

from aggregator.bus import MemoryEventBus
from aggregator.cache import MemoryResultCache
from aggregator.core import Aggregator
from aggregator.settings import AggregatorSettings, GatewayEndpoint
from aggregator.store import MemoryRequestStore
from insurer_gateway.dialects.parsing import load_object
from insurer_gateway.offers import Accepted, Failed, Pending, Reason
from insurer_gateway.polling import PollLearning, Tracker
from insurer_gateway.servicer import GatewayServicer
from insurer_gateway.settings import GatewaySettings
from osago_common import tracing
from osago_common.clock import SYSTEM_CLOCK
from osago_common.dates import moscow_today
from osago_common.validation import validate_application

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "moscow-young-driver.json"
INSURERS = 10
BODY = (
    b'{"status": "QUOTED", "offer": {"offerId": "of-1", "premium": {"amount": "12345.67", "currency": "RUB"},'
    b' "validUntil": "2026-01-20T09:00:00+03:00", "paymentUrl": "https://insurer.example/pay/of-1",'
    b' "coefficients": {"TB": "5000.00", "KT": "1.8", "KBM": "1.0", "KVS": "1.04", "KO": "1", "KM": "1.1",'
    b' "KS": "1", "KN": "1", "KP": "1"}}}'
)
GATEWAY_ENV = {
    "OSAGO_DEV_INSECURE": "true",
    "OSAGO_GATEWAY_INSURER": "alfa",
    "OSAGO_GATEWAY_BASE_URL": "http://127.0.0.1:9/insurers/alfa",
}


def _best(rounds: int, count: int, step: Callable[[], object]) -> float:
    """Microseconds of CPU per call of `step`, the best of `rounds` rounds of `count` calls."""
    best = float("inf")
    for _ in range(rounds):
        began = time.process_time()
        for _ in range(count):
            step()
        best = min(best, time.process_time() - began)
    return best / count * 1e6


async def _best_async(rounds: int, count: int, step: Callable[[], Awaitable[object]]) -> float:
    best = float("inf")
    for _ in range(rounds):
        began = time.process_time()
        for _ in range(count):
            await step()
        best = min(best, time.process_time() - began)
    return best / count * 1e6


class _ScriptedFlow:
    """The gateway's flow for `gateway ask`: accepted, ten pendings, declined, at once."""

    guard = None

    def prepare(self, request_id: str, application: object) -> object:
        return object()

    async def run(self, create: object, deadline: float) -> AsyncIterator[Any]:
        yield Accepted("app-1")
        for polls in range(1, 11):
            yield Pending(polls)
        yield Failed(Reason.DECLINED, "declined")


class _ScriptedGateways:
    """The aggregator's offer source for `aggregator session`: every insurer accepts, says
    pending and makes an offer, at once."""

    async def request_offer(
        self, insurer_id: str, request_id: str, application: application_pb2.Application, timeout_s: float
    ) -> AsyncIterator[gateway_service_pb2.RequestOfferResponse]:
        yield gateway_service_pb2.RequestOfferResponse(
            accepted=gateway_service_pb2.OfferAccepted(insurer_application_id="app-1")
        )
        yield gateway_service_pb2.RequestOfferResponse(pending=gateway_service_pb2.OfferPending(polls=1))
        yield gateway_service_pb2.RequestOfferResponse(
            offer=quote_pb2.Quote(insurer_id=insurer_id, offer_id="of-1", premium_kopecks=1_234_567, currency="RUB")
        )


async def measure(rounds: int, application: application_pb2.Application) -> dict[str, float]:
    """Each step's CPU per call (µs; the session's in ms)."""
    results: dict[str, float] = {}
    today = moscow_today(SYSTEM_CLOCK)
    results["validate_application_us"] = _best(rounds, 200, lambda: validate_application(application, today))

    interceptor = tracing.server_interceptors()[0]
    # The details object gRPC's asyncio server gives interceptors (what the filter inspects).
    health = cygrpc._HandlerCallDetails("/grpc.health.v1.Health/Check", ())

    async def passed_on(_details: Any) -> None:
        return None

    results["untraced_call_us"] = await _best_async(
        rounds, 2000, lambda: interceptor.intercept_service(passed_on, health)
    )

    learning = PollLearning(GatewaySettings.from_env(GATEWAY_ENV))
    draw = random.Random(1)  # noqa: S311 - made-up times to learn from; nothing secret
    for _ in range(100):
        after = draw.uniform(5.0, 10.0)
        learning.offer_time(after, after + draw.uniform(0.0, 1.0))
    for n in range(20):
        learning.hints.record(n % 2 == 0)  # half wrong: vague hints, a schedule
    tracker = Tracker(learning)
    results["poll_decision_us"] = _best(rounds, 5000, tracker.learned)

    results["insurer_body_us"] = _best(rounds, 2000, lambda: load_object(BODY))

    flow: Any = _ScriptedFlow()
    servicer = GatewayServicer(GatewaySettings.from_env(GATEWAY_ENV), flow, SYSTEM_CLOCK, SYSTEM_CLOCK.now())
    out: asyncio.Queue[object] = asyncio.Queue()
    asks = itertools.count()

    async def ask() -> None:
        n = next(asks)
        await servicer._run_ask(
            gateway_service_pb2.OffersRequest.Ask(call_id=n, request_id=f"r{n}", application=application), out
        )
        while not out.empty():
            out.get_nowait()

    results["gateway_ask_us"] = await _best_async(rounds, 500, ask)

    settings = AggregatorSettings(
        gateways=tuple(GatewayEndpoint(f"i{k}", f"I{k}", "unused:1") for k in range(INSURERS)), session_limit_s=60.0
    )
    ids = (f"req{n:010d}" for n in itertools.count())
    source: Any = _ScriptedGateways()
    core = Aggregator(
        settings,
        source,
        MemoryRequestStore(),
        MemoryEventBus(SYSTEM_CLOCK),
        MemoryResultCache(SYSTEM_CLOCK),
        SYSTEM_CLOCK,
        new_id=lambda: next(ids),
    )

    async def session() -> None:
        record, _ = await core.create(application, "", None, fresh=True)
        async for _event in core.events(record.request_id, 0):
            pass

    async def sessions() -> None:  # fifty at once, as a busy instance runs them
        await asyncio.gather(*(session() for _ in range(50)))

    try:
        results["aggregator_session_ms"] = await _best_async(rounds, 4, sessions) / 50 / 1000
    finally:
        await core.close()
    return {name: round(value, 3) for name, value in results.items()}


def line(results: dict[str, float]) -> str:
    return "\n".join(f"{name:<26} {value:>10.3f}" for name, value in results.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--file", type=Path, default=EXAMPLE)
    arguments = parser.parse_args()
    application = json_format.Parse(arguments.file.read_text(encoding="utf-8"), application_pb2.Application())
    results = asyncio.run(measure(arguments.rounds, application))
    print(json.dumps(results) if arguments.json else line(results))  # noqa: T201 - a script's output


if __name__ == "__main__":
    main()
