"""The quote session's logic with a fake clock and scripted gateways: no real waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import pytest
from osago.v1 import application_pb2, events_pb2, gateway_service_pb2, quote_pb2

from aggregator.bus import MemoryEventBus
from aggregator.live import LiveStream
from aggregator.session import QuoteSession, SessionPlan, session_started
from aggregator.store import Lease, LeaseLost, MemoryRequestStore, RequestRecord
from aggregator.writer import SessionWriter
from osago_common.clock import FakeClock

Reason = quote_pb2.FailureReason
Status = events_pb2.SessionStatus
Update = gateway_service_pb2.RequestOfferResponse

# A script per insurer: (seconds to wait, update to send, an exception to raise, or END to close
# the stream); a script that does not END keeps the stream open forever.
END = "end"
Script = Sequence[tuple[float, Update | Exception | str]]


def accepted() -> Update:
    return Update(accepted=gateway_service_pb2.OfferAccepted(insurer_application_id="app-1"))


def pending() -> Update:
    return Update(pending=gateway_service_pb2.OfferPending(polls=1))


def offer(premium: int) -> Update:
    return Update(offer=quote_pb2.Quote(offer_id=f"offer-{premium}", premium_kopecks=premium, currency="RUB"))


def failed(reason: quote_pb2.FailureReason.ValueType, message: str = "no") -> Update:
    return Update(failed=gateway_service_pb2.OfferFailed(reason=reason, message=message))


class ScriptedGateways:
    def __init__(self, clock: FakeClock, scripts: dict[str, Script]) -> None:
        self.clock = clock
        self.scripts = scripts
        self.timeouts: dict[str, float] = {}
        self.cancelled: set[str] = set()

    async def request_offer(
        self, insurer_id: str, request_id: str, application: application_pb2.Application, timeout_s: float
    ) -> AsyncIterator[Update]:
        self.timeouts[insurer_id] = timeout_s
        try:
            for delay, item in self.scripts[insurer_id]:
                await self.clock.sleep(delay)
                if isinstance(item, Exception):
                    raise item
                if isinstance(item, str):
                    return
                yield item
            await self.clock.sleep(10_000)  # a gateway that never answers
        except asyncio.CancelledError:
            self.cancelled.add(insurer_id)
            raise


class Log:
    """The real session writer over the embedded store and bus; `read` gives what was stored."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.store = MemoryRequestStore()
        self.live = LiveStream()
        self.writer: SessionWriter | None = None
        self.session: QuoteSession | None = None

    async def open(self, insurers: tuple[tuple[str, str], ...], limit: float) -> None:
        now = self.clock.now()
        record = RequestRecord("r1", now, now + timedelta(seconds=limit), insurers, "", "f")
        first = session_started("r1", insurers, self.clock, record.deadline)
        _, lease = await self.store.create(record, b"", {}, first, "here")
        assert lease is not None
        self.live.append(first)
        self.writer = SessionWriter(
            lease,
            2,
            self.store,
            MemoryEventBus(self.clock),
            self.live,
            self.clock,
            keep_until=record.deadline,
            give_up_at=self.clock.monotonic() + limit + 10,
        )

    async def append(self, event: events_pb2.QuoteEvent) -> events_pb2.QuoteEvent:
        assert self.writer is not None
        return await self.writer.append(event)

    async def append_all(self, events: Sequence[events_pb2.QuoteEvent]) -> None:
        assert self.writer is not None
        await self.writer.append_all(events)

    async def logged(self) -> list[events_pb2.QuoteEvent]:
        assert self.writer is not None
        return await self.writer.logged()

    async def read(self, request_id: str) -> list[events_pb2.QuoteEvent]:
        return await self.store.events(request_id)


async def run(
    scripts: dict[str, Script], limit: float = 60.0
) -> tuple[FakeClock, ScriptedGateways, asyncio.Task[int], Log]:
    clock = FakeClock()
    log = Log(clock)
    gateways = ScriptedGateways(clock, scripts)
    insurers = tuple((i, i.upper()) for i in scripts)
    await log.open(insurers, limit)
    plan = SessionPlan("r1", application_pb2.Application(), insurers, clock.monotonic() + limit, limit)
    log.session = QuoteSession(plan, gateways, log, clock, gateway_margin_s=0.25)
    task = asyncio.create_task(log.session.run())
    return clock, gateways, task, log


def kinds(events: list[events_pb2.QuoteEvent]) -> list[str]:
    return [str(e.WhichOneof("payload")) for e in events]


async def test_all_insurers_answer_and_session_completes_in_arrival_order() -> None:
    clock, _, task, log = await run(
        {
            "a": [(0.1, accepted()), (3.0, offer(900_000))],
            "b": [(0.1, accepted()), (1.0, pending()), (1.0, pending()), (0.5, offer(700_000))],
            "c": [(0.2, accepted()), (9.0, failed(Reason.FAILURE_REASON_DECLINED, "declined by underwriting"))],
        }
    )
    await clock.advance(2.0)
    assert not task.done()
    await clock.advance(8.0)
    assert task.done() and task.result() == Status.SESSION_STATUS_COMPLETED
    events = await log.read("r1")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert kinds(events)[0] == "session_started" and kinds(events)[-1] == "session_finished"
    quotes = [e.quote_received.quote for e in events if e.HasField("quote_received")]
    # b answered at 2.6 s, a at 3.1 s: arrival order, each stamped with its insurer.
    assert [(q.insurer_id, q.insurer_name, q.premium_kopecks) for q in quotes] == [
        ("b", "B", 700_000),
        ("a", "A", 900_000),
    ]
    failed_events = [e.insurer_failed for e in events if e.HasField("insurer_failed")]
    assert [(f.insurer_id, f.reason, f.message) for f in failed_events] == [
        ("c", Reason.FAILURE_REASON_DECLINED, "declined by underwriting")
    ]
    finished = events[-1].session_finished
    assert (finished.insurers_asked, finished.quotes_received, finished.insurers_failed) == (3, 2, 1)
    # The session ended when the last insurer answered (9.2 s), not at the deadline.
    assert (events[-1].time.ToDatetime().timestamp() - events[0].time.ToDatetime().timestamp()) == pytest.approx(9.2)


async def test_the_finish_message_counts_offers_declines_failures_by_kind_and_the_late() -> None:
    clock, _, task, log = await run(
        {
            "a": [(1.0, offer(700_000))],
            "b": [(2.0, offer(800_000))],
            "c": [(0.5, failed(Reason.FAILURE_REASON_DECLINED))],
            "d": [(0.5, failed(Reason.FAILURE_REASON_DECLINED))],
            "e": [(0.5, failed(Reason.FAILURE_REASON_DECLINED))],
            "f": [(0.1, failed(Reason.FAILURE_REASON_UNAVAILABLE))],
            "g": [(0.1, failed(Reason.FAILURE_REASON_UNAVAILABLE))],
            "h": [(0.1, failed(Reason.FAILURE_REASON_CIRCUIT_OPEN))],
            "i": [(0.1, accepted())],  # never answers
        }
    )
    await clock.advance(60.0)
    assert task.result() == Status.SESSION_STATUS_DEADLINE_EXCEEDED
    finished = (await log.read("r1"))[-1].session_finished
    # 9 asked: a, b offered; c, d, e declined; f, g down, h's breaker open; i out of time.
    assert finished.message == (
        "2 offers from 9 insurers; 3 declined; 3 failed (2 unavailable, 1 circuit open); "
        "1 did not answer within the 60 s limit."
    )


async def test_a_session_where_some_insurers_were_down_never_says_every_insurer_answered() -> None:
    clock, _, task, log = await run(
        {
            "a": [(1.0, offer(700_000))],
            "b": [(0.5, failed(Reason.FAILURE_REASON_DECLINED))],
            "c": [(0.1, failed(Reason.FAILURE_REASON_UNAVAILABLE))],
            "d": [(0.3, failed(Reason.FAILURE_REASON_TIMEOUT))],
        }
    )
    await clock.advance(2.0)
    assert task.result() == Status.SESSION_STATUS_COMPLETED
    finished = (await log.read("r1"))[-1].session_finished
    assert finished.message == "1 offer from 4 insurers; 1 declined; 2 failed (1 timeout, 1 unavailable)."


async def test_a_session_where_every_insurer_made_an_offer_says_so() -> None:
    clock, _, task, log = await run({"a": [(1.0, offer(1))], "b": [(1.5, offer(2))]})
    await clock.advance(2.0)
    assert task.result() == Status.SESSION_STATUS_COMPLETED
    finished = (await log.read("r1"))[-1].session_finished
    assert finished.message == "2 offers from 2 insurers; every insurer made an offer."


async def test_repeated_pending_updates_log_only_changes_of_state() -> None:
    clock, _, task, log = await run({"a": [(0.1, accepted())] + [(1.0, pending())] * 5 + [(1.0, offer(1))]})
    await clock.advance(10)
    events = await log.read("r1")
    states = [e.insurer_progress.state for e in events if e.HasField("insurer_progress")]
    assert states == [
        events_pb2.InsurerProgressState.INSURER_PROGRESS_STATE_ACCEPTED,
        events_pb2.InsurerProgressState.INSURER_PROGRESS_STATE_PENDING,
    ]
    assert task.result() == Status.SESSION_STATUS_COMPLETED


async def test_slow_insurer_gets_deadline_and_session_finishes_at_the_deadline() -> None:
    clock, gateways, task, log = await run(
        {"fast": [(1.0, offer(500_000))], "slow": [(0.1, accepted()), (90.0, offer(400_000))]}, limit=60.0
    )
    await clock.advance(59.9)
    assert not task.done()
    await clock.advance(0.1)
    assert task.done() and task.result() == Status.SESSION_STATUS_DEADLINE_EXCEEDED
    assert "slow" in gateways.cancelled  # nothing runs on past the deadline
    # The gateway was told to finish a margin before the session deadline.
    assert gateways.timeouts["slow"] == pytest.approx(59.75)
    events = await log.read("r1")
    late = [e.insurer_failed for e in events if e.HasField("insurer_failed")]
    assert [(f.insurer_id, f.reason) for f in late] == [("slow", Reason.FAILURE_REASON_DEADLINE)]
    assert "60 s" in late[0].message
    finished = events[-1]
    assert finished.session_finished.status == Status.SESSION_STATUS_DEADLINE_EXCEEDED
    assert finished.time.ToDatetime().timestamp() - events[0].time.ToDatetime().timestamp() == pytest.approx(60.0)


async def test_gateway_that_errors_is_reported_and_others_are_not_held_back() -> None:
    clock, _, task, log = await run(
        {
            "broken": [(0.5, RuntimeError("boom"))],
            "down": [(0.01, failed(Reason.FAILURE_REASON_UNAVAILABLE, "the insurer's service is unavailable"))],
            "ok": [(2.0, offer(600_000))],
        }
    )
    await clock.advance(2.0)
    assert task.done()
    events = await log.read("r1")
    failures = {e.insurer_failed.insurer_id: e.insurer_failed for e in events if e.HasField("insurer_failed")}
    assert failures["broken"].reason == Reason.FAILURE_REASON_INTERNAL
    assert failures["broken"].message == "internal error"  # no internal text leaks
    assert failures["down"].reason == Reason.FAILURE_REASON_UNAVAILABLE
    assert events[-1].session_finished.quotes_received == 1


async def test_gateway_stream_ending_without_answer_is_a_bad_response() -> None:
    clock, _, task, log = await run({"a": [(0.1, accepted()), (0.1, END)], "b": [(0.5, offer(1))]})
    await clock.advance(1.0)
    assert task.result() == Status.SESSION_STATUS_COMPLETED
    failures = [e.insurer_failed for e in await log.read("r1") if e.HasField("insurer_failed")]
    assert [(f.insurer_id, f.reason) for f in failures] == [("a", Reason.FAILURE_REASON_BAD_RESPONSE)]


async def test_everyone_failing_at_once_is_one_outage_condition() -> None:
    scripts: dict[str, Script] = {
        name: [(0.2, failed(Reason.FAILURE_REASON_INSURER_ERROR, "registry unavailable"))] for name in "abcde"
    }
    clock, _, task, log = await run(scripts)
    await clock.advance(1.0)
    assert task.result() == Status.SESSION_STATUS_UPSTREAM_OUTAGE
    finished = (await log.read("r1"))[-1].session_finished
    assert finished.status == Status.SESSION_STATUS_UPSTREAM_OUTAGE
    assert "shared outage" in finished.message
    assert finished.insurers_failed == 5


async def test_declines_everywhere_are_not_an_outage() -> None:
    clock, _, task, _ = await run({n: [(0.2, failed(Reason.FAILURE_REASON_DECLINED))] for n in "ab"})
    await clock.advance(1.0)
    assert task.result() == Status.SESSION_STATUS_COMPLETED


async def test_cancelled_session_stops_every_insurer_and_logs_cancelled() -> None:
    clock, gateways, task, log = await run({"a": [(5.0, offer(1))], "b": [(0.1, offer(2))]})
    await clock.advance(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gateways.cancelled == {"a"}
    events = await log.read("r1")
    assert events[-1].session_finished.status == Status.SESSION_STATUS_CANCELLED
    assert [e.insurer_failed.reason for e in events if e.HasField("insurer_failed")] == [
        Reason.FAILURE_REASON_CANCELLED
    ]


# Sessions resumed on another instance, answered from the cache, handed over, or taken over.


def quote_event(insurer_id: str, premium: int, seq: int) -> events_pb2.QuoteEvent:
    event = events_pb2.QuoteEvent(request_id="r1", seq=seq)
    event.quote_received.quote.CopyFrom(quote_pb2.Quote(insurer_id=insurer_id, premium_kopecks=premium))
    return event


async def test_a_resumed_session_asks_only_the_insurers_that_had_not_answered_and_numbers_on() -> None:
    clock = FakeClock()
    log = Log(clock)
    insurers = (("a", "A"), ("b", "B"), ("c", "C"))
    await log.open(insurers, 60.0)
    # What the instance that died had logged: a's offer, and b accepted.
    await log.append(quote_event("a", 500_000, 0))
    progress = events_pb2.QuoteEvent(request_id="r1")
    progress.insurer_progress.CopyFrom(
        events_pb2.InsurerProgress(
            insurer_id="b", state=events_pb2.InsurerProgressState.INSURER_PROGRESS_STATE_ACCEPTED
        )
    )
    await log.append(progress)
    history = await log.read("r1")
    gateways = ScriptedGateways(
        clock, {"a": [(0.0, offer(1))], "b": [(0.1, accepted()), (1.0, offer(600_000))], "c": [(2.0, offer(700_000))]}
    )
    # Resumed 20 s into the session: it still ends by the original deadline.
    plan = SessionPlan("r1", application_pb2.Application(), insurers, clock.monotonic() + 40.0, 60.0)
    task = asyncio.create_task(QuoteSession(plan, gateways, log, clock, gateway_margin_s=0.25, history=history).run())
    await clock.advance(3.0)
    assert task.result() == Status.SESSION_STATUS_COMPLETED
    events = await log.read("r1")
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert set(gateways.timeouts) == {"b", "c"}  # a answered before: not asked again
    assert gateways.timeouts["c"] == pytest.approx(40.0 - 0.25)
    # b's "accepted" was logged already: not logged twice.
    assert kinds(events[3:]) == ["quote_received", "quote_received", "session_finished"]
    assert events[-1].session_finished.quotes_received == 3


async def test_cached_offers_are_logged_at_once_and_those_insurers_not_asked() -> None:
    clock = FakeClock()
    log = Log(clock)
    insurers = (("a", "A"), ("b", "B"))
    await log.open(insurers, 60.0)
    gateways = ScriptedGateways(clock, {"a": [(0.0, offer(1))], "b": [(5.0, offer(800_000))]})
    cached = quote_pb2.Quote(insurer_id="a", premium_kopecks=650_000, from_cache=True)
    plan = SessionPlan("r1", application_pb2.Application(), insurers, clock.monotonic() + 60, 60, cached={"a": cached})
    task = asyncio.create_task(QuoteSession(plan, gateways, log, clock, gateway_margin_s=0.25).run())
    await clock.settle()
    first = (await log.read("r1"))[1]
    assert first.quote_received.quote.premium_kopecks == 650_000 and first.quote_received.quote.from_cache
    assert first.time.ToDatetime(tzinfo=clock.now().tzinfo) == clock.now()  # no waiting
    await clock.advance(5.0)
    assert task.result() == Status.SESSION_STATUS_COMPLETED
    assert set(gateways.timeouts) == {"b"}


async def test_a_detached_session_stops_asking_and_writes_nothing_more() -> None:
    clock, gateways, task, log = await run({"a": [(1.0, accepted())], "b": [(30.0, offer(1))]})
    await clock.advance(2.0)
    before = await log.read("r1")
    # The instance hands the session over (drain): detach, then cancel.
    assert log.session is not None
    log.session.detach()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gateways.cancelled == {"a", "b"}
    assert await log.read("r1") == before  # no CANCELLED failures, no session_finished


async def test_a_session_whose_lease_was_taken_stops_without_finishing() -> None:
    clock, gateways, task, log = await run({"a": [(1.0, offer(500_000))], "b": [(30.0, offer(1))]})
    await clock.advance(0.5)
    assert log.writer is not None
    # Another instance takes the session over: the store raises the epoch.
    later = clock.now() + timedelta(seconds=10)
    await log.store.heartbeat("other", later, 5.0)
    [claim] = await log.store.claim_orphans("other", later, 10)
    await clock.advance(1.0)  # a's offer: the write is refused
    assert task.done()
    with pytest.raises(LeaseLost):
        task.result()
    assert gateways.cancelled == {"b"}
    assert [e.seq for e in await log.read("r1")] == [1]  # nothing written after the takeover
    assert claim.lease.epoch == 2


async def test_a_session_resumed_after_its_deadline_asks_nobody_and_finishes_at_once() -> None:
    clock = FakeClock()
    log = Log(clock)
    insurers = (("a", "A"), ("b", "B"))
    await log.open(insurers, 60.0)
    await log.append(quote_event("a", 500_000, 0))
    history = await log.read("r1")
    gateways = ScriptedGateways(clock, {"a": [(0.0, offer(1))], "b": [(0.0, offer(2))]})
    plan = SessionPlan("r1", application_pb2.Application(), insurers, clock.monotonic() - 5.0, 60.0)
    status = await QuoteSession(plan, gateways, log, clock, gateway_margin_s=0.25, history=history).run()
    assert status == Status.SESSION_STATUS_DEADLINE_EXCEEDED
    assert gateways.timeouts == {}  # nobody asked
    events = await log.read("r1")
    assert kinds(events[2:]) == ["insurer_failed", "session_finished"]
    assert events[2].insurer_failed.insurer_id == "b"
    assert events[2].insurer_failed.reason == Reason.FAILURE_REASON_DEADLINE


async def test_an_answer_being_written_when_the_deadline_comes_is_kept_and_not_also_failed_late() -> None:
    clock, _, task, log = await run({"a": [(59.9, offer(500_000))], "b": [(0.1, accepted())]}, limit=60.0)
    gate = asyncio.Event()
    plain = log.store.append

    async def held(lease: Lease, events: Sequence[events_pb2.QuoteEvent]) -> None:
        if any(e.HasField("quote_received") for e in events):
            await gate.wait()
        await plain(lease, events)

    log.store.append = held  # type: ignore[method-assign]
    await clock.advance(59.9)  # a's offer is being written...
    await clock.advance(0.1)  # ...when the deadline stops a's task
    assert not task.done()  # the session waits for the write before it counts the answers
    gate.set()
    assert await task == Status.SESSION_STATUS_DEADLINE_EXCEEDED
    events = await log.read("r1")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.quote_received.quote.insurer_id for e in events if e.HasField("quote_received")] == ["a"]
    failures = [(e.insurer_failed.insurer_id, e.insurer_failed.reason) for e in events if e.HasField("insurer_failed")]
    assert failures == [("b", Reason.FAILURE_REASON_DEADLINE)]
    finished = events[-1].session_finished
    assert (finished.quotes_received, finished.insurers_failed) == (1, 1)


async def test_the_late_failures_and_the_end_are_written_together() -> None:
    clock, _, task, log = await run({i: [(0.1, accepted())] for i in "abcde"}, limit=60.0)
    writes: list[list[str]] = []
    plain = log.store.append

    async def recorded(lease: Lease, events: Sequence[events_pb2.QuoteEvent]) -> None:
        writes.append([str(e.WhichOneof("payload")) for e in events])
        await plain(lease, events)

    log.store.append = recorded  # type: ignore[method-assign]
    await clock.advance(60.0)
    assert task.result() == Status.SESSION_STATUS_DEADLINE_EXCEEDED
    # Five insurers out of time and the session's end: one write, not six.
    assert writes[-1] == ["insurer_failed"] * 5 + ["session_finished"]
