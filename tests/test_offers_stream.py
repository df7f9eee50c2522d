"""Asks multiplexed over Offers streams between the aggregator's gateway client and real gateways
(gRPC on localhost, the simulator over HTTP): each ask's updates reach its own caller, a
cancelled ask stops the insurer's polling, an ask ends by its own time limit, a replica killed
mid-ask hands the ask to another with no second insurer application, and mTLS still holds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from osago.v1 import application_pb2, gateway_service_pb2, gateway_service_pb2_grpc, quote_pb2

from aggregator.gateways import UNIMPLEMENTED_RETRY_S, GrpcGateways
from aggregator.offer_streams import MAX_AGE_S
from aggregator.settings import GatewayEndpoint, grpc_target
from insurer_gateway.offers import Accepted, Failed, Pending, Update
from insurer_gateway.outcomes import Reason as OutcomeReason
from insurer_gateway.service import GatewayService
from insurer_gateway.servicer import GatewayServicer
from insurer_gateway.settings import GatewaySettings
from insurer_sim.config import SimConfig
from insurer_sim.profiles import profile
from insurer_sim.server import SimServer
from osago_common import tracing
from osago_common.clock import SYSTEM_CLOCK, FakeClock
from osago_common.grpc_server import MAX_RECEIVE_BYTES
from osago_common.tls import tls_from_env
from osago_mesh.devpki import make_dev_pki
from tests.test_gateway_service import make_application

pytestmark = pytest.mark.functional

Reason = quote_pb2.FailureReason
DEV_ENV = {"OSAGO_DEV_INSECURE": "true"}
FAST = "alfa"  # answers within a second or two at this time scale
SLOW = "maks"  # a 25 s median × the time scale: asks stay in flight a while


@contextlib.asynccontextmanager
async def simulator(*insurers: str, time_scale: float = 0.1) -> AsyncIterator[str]:
    sim = SimServer(SimConfig(insurers=tuple(profile(i) for i in insurers), time_scale=time_scale, seed=11))
    url = await sim.start()
    try:
        yield url
    finally:
        await sim.stop()


@contextlib.asynccontextmanager
async def gateway(sim_url: str, insurer: str, env: dict[str, str] | None = None) -> AsyncIterator[GatewayService]:
    settings = GatewaySettings.from_env(
        (env or DEV_ENV) | {"OSAGO_GATEWAY_INSURER": insurer, "OSAGO_GATEWAY_BASE_URL": f"{sim_url}/insurers/{insurer}"}
    )
    service = GatewayService(settings)
    await service.start()
    try:
        yield service
    finally:
        await service.stop(0.1)


async def sim_stats(sim_url: str, reference: str, insurer: str) -> dict[str, Any]:
    """The insurer's applications for one request id (their polls, their creates counting
    replays), its offers for it, and the applications it created in all (never a replay)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sim_url}/_sim/stats", params={"reference": reference}) as response:
            body = await response.json()
        async with http.get(f"{sim_url}/_sim/ledger", params={"reference": reference}) as response:
            ledger = await response.json()
    applications = [a for a in body["applications"] if a["insurer_id"] == insurer]
    return {
        "applications": len(applications),
        "polls": sum(a["polls"] for a in applications),
        "creates": sum(a["creates"] for a in applications),
        "created_in_all": body["insurers"][insurer]["creates"],
        "offers": len(ledger["offers"]),
        "offer_ids": ledger["offers"],
    }


async def status(port: int) -> gateway_service_pb2.GetGatewayStatusResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel)
        return await stub.GetGatewayStatus(gateway_service_pb2.GetGatewayStatusRequest(), timeout=5)


async def until_idle(port: int, asks: int = 0) -> None:
    """Waits until the gateway has no more than `asks` in flight (its status, asked every 20 ms,
    for at most ten seconds)."""
    for _ in range(500):
        if (await status(port)).in_flight <= asks:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the gateway still has asks in flight")


async def test_many_concurrent_asks_over_one_stream_each_reach_their_own_caller() -> None:
    async with simulator(FAST) as sim_url, gateway(sim_url, FAST) as service:
        gateways = GrpcGateways((GatewayEndpoint(FAST, "Alfa", f"127.0.0.1:{service.port}"),), streams=1)
        asks = 40

        async def ask(n: int) -> list[gateway_service_pb2.RequestOfferResponse]:
            return [u async for u in gateways.request_offer(FAST, f"req-many-{n}", make_application(), 30.0)]

        try:
            results = await asyncio.gather(*(ask(n) for n in range(asks)))
            pool = gateways.pool(FAST)
            assert pool is not None and pool.streams == 1
        finally:
            await gateways.close()
        for n, updates in enumerate(results):
            assert updates[0].WhichOneof("update") == "accepted"
            last = updates[-1]
            stats = await sim_stats(sim_url, f"req-many-{n}", FAST)
            if last.WhichOneof("update") == "offer":
                # This caller's offer is the one the insurer issued for this caller's request.
                assert [o["offer_id"] for o in stats["offer_ids"]] == [last.offer.offer_id]
            else:
                assert last.failed.reason == Reason.FAILURE_REASON_DECLINED and stats["offers"] == 0
            assert stats["applications"] == 1
        assert sum(r[-1].WhichOneof("update") == "offer" for r in results) >= asks // 2
        assert (await status(service.port)).requests_total == asks


async def test_a_cancelled_ask_stops_the_insurer_polling_and_leaves_the_stream_open() -> None:
    async with simulator(SLOW, time_scale=0.5) as sim_url, gateway(sim_url, SLOW) as service:
        gateways = GrpcGateways((GatewayEndpoint(SLOW, "MAKS", f"127.0.0.1:{service.port}"),), streams=1)
        try:
            updates = gateways.request_offer(SLOW, "req-cancel", make_application(), 30.0)
            assert (await anext(updates)).WhichOneof("update") == "accepted"
            assert (await status(service.port)).in_flight == 1
            await updates.aclose()  # the session ended: the ask is cancelled on the stream
            await until_idle(service.port)
            polls = (await sim_stats(sim_url, "req-cancel", SLOW))["polls"]
            # The stream is still there for other asks, and the cancelled one never answers.
            pool = gateways.pool(SLOW)
            assert pool is not None and pool.streams == 1
            other = gateways.request_offer(SLOW, "req-after", make_application(), 30.0)
            assert (await anext(other)).WhichOneof("update") == "accepted"
            await other.aclose()
            await until_idle(service.port)
        finally:
            await gateways.close()
        after = await sim_stats(sim_url, "req-cancel", SLOW)
        assert after["polls"] == polls and after["offers"] == 0
        assert (await status(service.port)).requests_total == 2


async def test_an_ask_ends_by_its_own_time_limit_while_others_on_the_stream_go_on() -> None:
    async with simulator(SLOW, time_scale=0.5) as sim_url, gateway(sim_url, SLOW) as service:
        gateways = GrpcGateways((GatewayEndpoint(SLOW, "MAKS", f"127.0.0.1:{service.port}"),), streams=1)
        try:
            patient = gateways.request_offer(SLOW, "req-patient", make_application(), 30.0)
            assert (await anext(patient)).WhichOneof("update") == "accepted"
            hasty = [u async for u in gateways.request_offer(SLOW, "req-hasty", make_application(), 1.0)]
            assert hasty[-1].failed.reason == Reason.FAILURE_REASON_DEADLINE
            assert (await status(service.port)).in_flight == 1  # the patient ask still runs
            await patient.aclose()
        finally:
            await gateways.close()


@contextlib.asynccontextmanager
async def gateway_process(sim_url: str, insurer: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """A gateway in a process of its own, so that it can be killed (SIGKILL: no goodbye)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from osago_cli.main import main; main()",
        "gateway",
        "--insurer",
        insurer,
        "--base-url",
        f"{sim_url}/insurers/{insurer}",
        "--bind",
        "127.0.0.1:0",
        env={**os.environ, **DEV_ENV},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        while True:
            line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
            assert line, "the gateway exited before listening"
            if line.startswith("listening "):
                break
        yield process, int(line.rsplit(":", 1)[1])
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()


async def test_a_replica_killed_mid_ask_hands_the_ask_to_another_with_no_second_application() -> None:
    async with (
        simulator(SLOW, time_scale=0.2) as sim_url,
        gateway_process(sim_url, SLOW) as (first, first_port),
        gateway_process(sim_url, SLOW) as (second, second_port),
    ):
        target = grpc_target(f"127.0.0.1:{first_port}|127.0.0.1:{second_port}")
        gateways = GrpcGateways((GatewayEndpoint(SLOW, "MAKS", target),), streams=2)
        try:
            updates = gateways.request_offer(SLOW, "req-killed", make_application(), 30.0)
            assert (await anext(updates)).WhichOneof("update") == "accepted"
            holders = [p for p, port in ((first, first_port), (second, second_port)) if (await status(port)).in_flight]
            assert len(holders) == 1
            holders[0].send_signal(signal.SIGKILL)
            rest = [u async for u in updates]
        finally:
            await gateways.close()
        assert rest[-1].WhichOneof("update") == "offer"
        stats = await sim_stats(sim_url, "req-killed", SLOW)
        # One insurer application, created once and resumed (a replayed create) by the other
        # replica; one offer.
        assert (stats["applications"], stats["created_in_all"], stats["offers"]) == (1, 1, 1)
        assert stats["creates"] == 2
        assert [o["offer_id"] for o in stats["offer_ids"]] == [rest[-1].offer.offer_id]


async def test_asks_over_mtls_reach_the_gateway_and_other_identities_are_refused(tmp_path: Path) -> None:
    pki = make_dev_pki(tmp_path)
    gateway_env = pki.env("gateway") | {"OSAGO_TLS_ALLOWED_PEERS": "aggregator"}
    async with simulator(FAST) as sim_url, gateway(sim_url, FAST, gateway_env) as service:
        target = f"localhost:{service.port}"
        for identity, expected in (("aggregator", {"offer", "failed"}), ("core-app", {"failed"})):
            tls = tls_from_env(pki.env(identity))
            gateways = GrpcGateways((GatewayEndpoint(FAST, "Alfa", target),), tls=tls, streams=2)
            try:
                updates = [u async for u in gateways.request_offer(FAST, f"req-{identity}", make_application(), 30.0)]
            finally:
                await gateways.close()
            assert updates[-1].WhichOneof("update") in expected
            if identity == "aggregator":
                assert updates[0].WhichOneof("update") == "accepted"
            else:
                # PERMISSION_DENIED on the stream: the ask fails without reaching the insurer.
                assert len(updates) == 1 and updates[0].failed.reason == Reason.FAILURE_REASON_INTERNAL
        assert (await sim_stats(sim_url, "req-core-app", FAST))["applications"] == 0


async def test_the_gateway_s_spans_of_an_ask_are_children_of_the_caller_s_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.set_tracer_provider_for_tests(provider)
    try:
        async with simulator(FAST) as sim_url, gateway(sim_url, FAST) as service:
            gateways = GrpcGateways((GatewayEndpoint(FAST, "Alfa", f"127.0.0.1:{service.port}"),), streams=1)
            try:
                with tracing.tracer(__name__).start_as_current_span("request_offer") as parent:
                    async for _ in gateways.request_offer(FAST, "req-traced", make_application(), 30.0):
                        pass
            finally:
                await gateways.close()
    finally:
        tracing.set_tracer_provider_for_tests(None)
    served = [s for s in exporter.get_finished_spans() if s.name == "RequestOffer"]
    assert len(served) == 1
    assert served[0].parent is not None
    assert served[0].parent.span_id == parent.get_span_context().span_id
    assert served[0].context.trace_id == parent.get_span_context().trace_id


async def rest(call: Any) -> list[gateway_service_pb2.OffersResponse]:
    return [response async for response in call]


async def test_a_bad_ask_fails_alone_and_a_drain_ends_the_stream_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    async with simulator(SLOW, time_scale=0.5) as sim_url, gateway(sim_url, SLOW) as service:
        outgoing: asyncio.Queue[gateway_service_pb2.OffersRequest] = asyncio.Queue()

        async def requests() -> AsyncIterator[gateway_service_pb2.OffersRequest]:
            while True:
                yield await outgoing.get()

        def ask(call_id: int, request_id: str) -> gateway_service_pb2.OffersRequest:
            return gateway_service_pb2.OffersRequest(
                ask=gateway_service_pb2.OffersRequest.Ask(
                    call_id=call_id, request_id=request_id, application=make_application()
                )
            )

        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            call = gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel).Offers(requests())
            outgoing.put_nowait(ask(1, "bad request id"))  # a space: not a request id
            outgoing.put_nowait(ask(2, "req-good"))
            outgoing.put_nowait(ask(2, "req-good"))  # the same call_id again: ignored
            outgoing.put_nowait(
                gateway_service_pb2.OffersRequest(cancel=gateway_service_pb2.OffersRequest.Cancel(call_id=99))
            )
            got: dict[int, list[str]] = {}
            async for response in call:
                got.setdefault(response.call_id, []).append(str(response.update.WhichOneof("update")))
                if response.call_id == 1:
                    assert response.update.failed.reason == Reason.FAILURE_REASON_INTERNAL
                if got.get(2) == ["accepted"] and 1 in got:
                    break
            assert got == {1: ["failed"], 2: ["accepted"]}
            assert (await status(service.port)).in_flight == 1
            await service.drain()
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await rest(call)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        await until_idle(service.port)
        assert (await sim_stats(sim_url, "req-good", SLOW))["applications"] == 1
    # The drain is the gateway's own doing, not a stream it could not read: no warning of that.
    assert not [r for r in caplog.records if "unreadable" in r.getMessage()]


async def test_bytes_that_are_not_an_offers_request_end_the_stream_invalid_argument() -> None:
    async with simulator(FAST) as sim_url, gateway(sim_url, FAST) as service:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            offers: Any = channel.stream_stream("/osago.v1.InsurerGatewayService/Offers")

            async def garbage() -> AsyncIterator[bytes]:
                yield b"\xff\xff\xff\xff"  # a field number 0x1fffffff of a wire type that does not exist

            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await rest(offers(garbage()))
        assert ended.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (await status(service.port)).requests_total == 0


async def test_an_old_stream_takes_no_new_asks_and_closes_once_its_asks_are_answered() -> None:
    clock = FakeClock()
    async with simulator(SLOW, time_scale=0.5) as sim_url, gateway(sim_url, SLOW) as service:
        endpoint = GatewayEndpoint(SLOW, "MAKS", f"127.0.0.1:{service.port}")
        gateways = GrpcGateways((endpoint,), clock=clock, streams=1)
        pool = gateways.pool(SLOW)
        assert pool is not None
        try:
            first = gateways.request_offer(SLOW, "req-old", make_application(), 30.0)
            assert (await anext(first)).WhichOneof("update") == "accepted"
            await clock.advance(MAX_AGE_S)
            second = gateways.request_offer(SLOW, "req-new", make_application(), 30.0)
            assert (await anext(second)).WhichOneof("update") == "accepted"
            # The old stream still carries its ask; the new one takes every new ask.
            assert pool.streams == 1 and (await status(service.port)).in_flight == 2
            assert pool.retiring == 1
            await first.aclose()  # cancelled on the old stream, which then closes
            await until_idle(service.port, asks=1)
            for _ in range(500):
                if not pool.retiring:
                    break
                await asyncio.sleep(0.02)
            assert pool.retiring == 0 and pool.streams == 1
            await second.aclose()
            await until_idle(service.port)
        finally:
            await gateways.close()


class ScriptedFlow:
    """An insurer flow that says accepted, pending three times, then declines (no HTTP)."""

    guard = None

    def prepare(self, request_id: str, application: object) -> object:
        return object()

    async def run(self, create: object, deadline: float) -> AsyncIterator[Update]:
        yield Accepted("app-1")
        for polls in (1, 2, 3):
            yield Pending(polls)
        yield Failed(OutcomeReason.DECLINED, "declined")


async def test_an_offers_ask_gets_one_pending_where_request_offer_repeats_it() -> None:
    settings = GatewaySettings.from_env(
        DEV_ENV | {"OSAGO_GATEWAY_INSURER": FAST, "OSAGO_GATEWAY_BASE_URL": "http://127.0.0.1:9/insurers/alfa"}
    )
    flow: Any = ScriptedFlow()
    servicer = GatewayServicer(settings, flow, SYSTEM_CLOCK, SYSTEM_CLOCK.now())
    server = grpc.aio.server()
    gateway_service_pb2_grpc.add_InsurerGatewayServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        kinds = {}
        for streams in (0, 1):
            gateways = GrpcGateways((GatewayEndpoint(FAST, "Alfa", f"127.0.0.1:{port}"),), streams=streams)
            try:
                updates = gateways.request_offer(FAST, f"req-{streams}", make_application(), 5.0)
                kinds[streams] = [str(u.WhichOneof("update")) async for u in updates]
            finally:
                await gateways.close()
    finally:
        await server.stop(0)
    assert kinds[0] == ["accepted", "pending", "pending", "pending", "failed"]
    assert kinds[1] == ["accepted", "pending", "failed"]


class OlderGateway(gateway_service_pb2_grpc.InsurerGatewayServiceServicer):
    """A gateway of a version before Offers: RequestOffer only (Offers answers UNIMPLEMENTED)."""

    async def RequestOffer(
        self, request: gateway_service_pb2.RequestOfferRequest, context: Any
    ) -> AsyncIterator[gateway_service_pb2.RequestOfferResponse]:
        yield gateway_service_pb2.RequestOfferResponse(
            failed=gateway_service_pb2.OfferFailed(reason=Reason.FAILURE_REASON_DECLINED, message="declined")
        )


class MethodLog(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        self.methods.append(details.method.rsplit("/", 1)[1])
        return await continuation(details)


async def test_a_gateway_without_offers_is_asked_with_request_offer_calls_for_a_while() -> None:
    called = MethodLog()
    server = grpc.aio.server(interceptors=[called])
    gateway_service_pb2_grpc.add_InsurerGatewayServiceServicer_to_server(OlderGateway(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    clock = FakeClock()
    gateways = GrpcGateways((GatewayEndpoint(FAST, "Alfa", f"127.0.0.1:{port}"),), clock=clock, streams=2)
    try:
        for n in range(3):
            updates = [u async for u in gateways.request_offer(FAST, f"req-old-{n}", make_application(), 5.0)]
            assert [u.failed.reason for u in updates] == [Reason.FAILURE_REASON_DECLINED]
        assert called.methods == ["Offers", "RequestOffer", "RequestOffer", "RequestOffer"]
        await clock.advance(UNIMPLEMENTED_RETRY_S)
        [u async for u in gateways.request_offer(FAST, "req-old-later", make_application(), 5.0)]
        assert called.methods[4:] == ["Offers", "RequestOffer"]  # tried again once the while passed
    finally:
        await gateways.close()
        await server.stop(0)


def ask_message(call_id: int, request_id: str) -> gateway_service_pb2.OffersRequest:
    return gateway_service_pb2.OffersRequest(
        ask=gateway_service_pb2.OffersRequest.Ask(
            call_id=call_id, request_id=request_id, application=make_application()
        )
    )


@contextlib.asynccontextmanager
async def scripted_gateway() -> AsyncIterator[int]:
    """A gateway whose every ask says accepted, pending, then declined at once (no insurer)."""
    settings = GatewaySettings.from_env(
        DEV_ENV | {"OSAGO_GATEWAY_INSURER": FAST, "OSAGO_GATEWAY_BASE_URL": "http://127.0.0.1:9/insurers/alfa"}
    )
    flow: Any = ScriptedFlow()
    server = grpc.aio.server()
    gateway_service_pb2_grpc.add_InsurerGatewayServiceServicer_to_server(
        GatewayServicer(settings, flow, SYSTEM_CLOCK, SYSTEM_CLOCK.now()), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(0)


def unbatched(responses: list[gateway_service_pb2.OffersResponse]) -> list[tuple[int, str]]:
    """Every (call_id, update kind) in the order a reader of `more` takes them."""
    return [
        (r.call_id, str(r.update.WhichOneof("update"))) for response in responses for r in (response, *response.more)
    ]


@pytest.mark.parametrize("batch_header", [True, False])
async def test_a_gateway_batches_waiting_updates_only_for_a_caller_that_reads_them(batch_header: bool) -> None:
    asks = 40
    async with scripted_gateway() as port, grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        metadata = (("x-osago-offers-batch", "1"),) if batch_header else ()

        async def requests() -> AsyncIterator[gateway_service_pb2.OffersRequest]:
            for n in range(1, asks + 1):
                yield ask_message(n, f"req-batch-{n}")

        call = gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel).Offers(requests(), metadata=metadata)
        responses = await rest(call)
        headers = await call.initial_metadata()
    assert ("x-osago-offers-batch", "1") in tuple(headers)  # it says it reads batched asks
    got = unbatched(responses)
    # Every ask's own updates, in its own order, once each: accepted, one pending, declined.
    assert sorted(got) == sorted((n, kind) for n in range(1, asks + 1) for kind in ("accepted", "pending", "failed"))
    for n in range(1, asks + 1):
        assert [kind for call_id, kind in got if call_id == n] == ["accepted", "pending", "failed"]
    if batch_header:
        # The asks all run at once, so updates wait while a message is written: fewer messages.
        assert len(responses) < len(got)
    else:
        assert len(responses) == len(got)
        assert not any(r.more for r in responses)


async def test_a_gateway_takes_every_ask_and_cancel_of_a_batched_message_in_order() -> None:
    async with simulator(SLOW, time_scale=0.5) as sim_url, gateway(sim_url, SLOW) as service:
        outgoing: asyncio.Queue[gateway_service_pb2.OffersRequest] = asyncio.Queue()

        async def requests() -> AsyncIterator[gateway_service_pb2.OffersRequest]:
            while True:
                yield await outgoing.get()

        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            call = gateway_service_pb2_grpc.InsurerGatewayServiceStub(channel).Offers(requests())
            batch = ask_message(1, "req-first")
            batch.more.extend([ask_message(2, "req-second"), ask_message(3, "req-third")])
            # Cancelled in the same message, after its ask: it never reaches the insurer's poll.
            batch.more.append(
                gateway_service_pb2.OffersRequest(cancel=gateway_service_pb2.OffersRequest.Cancel(call_id=3))
            )
            outgoing.put_nowait(batch)
            accepted: set[int] = set()
            async for response in call:
                for r in (response, *response.more):
                    assert r.update.WhichOneof("update") == "accepted"
                    accepted.add(r.call_id)
                if accepted == {1, 2}:
                    break
            await until_idle(service.port, asks=2)
            assert (await status(service.port)).requests_total == 2  # the third never started
            call.cancel()
        await until_idle(service.port)
        assert [(await sim_stats(sim_url, r, SLOW))["applications"] for r in ("req-first", "req-second")] == [1, 1]
        assert (await sim_stats(sim_url, "req-third", SLOW))["applications"] == 0


class RecordingGateway(gateway_service_pb2_grpc.InsurerGatewayServiceServicer):
    """An Offers peer at the protocol level: records how many asks each message carried, and
    declines every ask (several answers in one message when it says it batches)."""

    def __init__(self, batches: bool) -> None:
        self.batches = batches
        self.asks_per_message: list[int] = []

    async def Offers(self, request_iterator: Any, context: Any) -> AsyncIterator[gateway_service_pb2.OffersResponse]:
        await context.send_initial_metadata((("x-osago-offers-batch", "1"),) if self.batches else ())
        async for message in request_iterator:
            carried = [m for m in (message, *message.more) if m.WhichOneof("kind") == "ask"]
            self.asks_per_message.append(len(carried))
            answers = [
                gateway_service_pb2.OffersResponse(
                    call_id=m.ask.call_id,
                    update=gateway_service_pb2.RequestOfferResponse(
                        failed=gateway_service_pb2.OfferFailed(reason=Reason.FAILURE_REASON_DECLINED, message="no")
                    ),
                )
                for m in carried
            ]
            if self.batches:
                first, *more = answers
                first.more.extend(more)
                yield first
            else:
                for answer in answers:
                    yield answer


def large_application(n: int) -> application_pb2.Application:
    """An application of about 3 KB (long names and cities); a gateway takes 64 KiB a message."""
    application = make_application()
    application.owner.registration_city = f"{n} " + "Petropavlovsk-Kamchatsky " * 100
    return application


@pytest.mark.parametrize(("batches", "large"), [(True, False), (False, False), (True, True)])
async def test_the_aggregator_batches_asks_only_to_a_gateway_that_reads_them(batches: bool, large: bool) -> None:
    peer = RecordingGateway(batches)
    # The gateway's own limit on a message it receives (osago_common.grpc_server).
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)])
    gateway_service_pb2_grpc.add_InsurerGatewayServiceServicer_to_server(peer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    gateways = GrpcGateways((GatewayEndpoint(FAST, "Alfa", f"127.0.0.1:{port}"),), streams=1)

    async def ask(n: int) -> list[int]:
        application = large_application(n) if large else make_application()
        updates = gateways.request_offer(FAST, f"req-peer-{n}", application, 5.0)
        return [u.failed.reason async for u in updates]

    try:
        assert await ask(0) == [Reason.FAILURE_REASON_DECLINED]  # the stream is open, its headers read
        answers = await asyncio.gather(*(ask(n) for n in range(1, 51)))  # all queued at once
    finally:
        await gateways.close()
        await server.stop(0)
    assert answers == [[Reason.FAILURE_REASON_DECLINED]] * 50  # each its own answer, even batched
    assert sum(peer.asks_per_message) == 51
    if batches:
        assert max(peer.asks_per_message) > 1
    else:
        assert max(peer.asks_per_message) == 1
    if large:  # fifty of them would be 150 KB: several messages, each within the gateway's limit
        assert len(peer.asks_per_message) > 2
        assert max(peer.asks_per_message) * large_application(0).ByteSize() < MAX_RECEIVE_BYTES
