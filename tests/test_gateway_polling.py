"""The polling policy (insurer_gateway.polling): the pure functions with hand-computed schedules,
then the offer flow on a FakeClock against a modelled insurer (ready at a set moment after each
create, hinting honestly or vaguely), so the learning from one application to the next shows."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from insurer_gateway.dialects import DIALECTS, Offer
from insurer_gateway.exchange import HttpCall, HttpResponse
from insurer_gateway.offers import Failed, OfferFlow
from insurer_gateway.polling import (
    HintRecord,
    Learned,
    PollLearning,
    Tracker,
    Trust,
    bracket_quantiles,
    fill_gaps,
    next_poll,
    poll_wait,
    scheduled_wait,
)
from insurer_gateway.settings import GatewaySettings
from osago_common.clock import FakeClock
from osago_common.env import SettingsError
from tests.test_gateway_offers import CREATE, DEV_ENV, QUOTED, SETTINGS, created, processing

# --- the distribution learned ---------------------------------------------------------------


def test_exact_times_give_nearest_rank_quantiles() -> None:
    points = [(2.0, 2.0), (3.0, 3.0), (4.0, 4.0)]
    assert bracket_quantiles(points, (0.2, 0.5, 0.95)) == [2.0, 3.0, 4.0]


def test_each_bracketed_time_is_spread_evenly_over_its_bracket() -> None:
    # Two brackets side by side make one uniform distribution over [0, 4]: F(x) = x / 4.
    assert bracket_quantiles([(0.0, 2.0), (2.0, 4.0)], (0.2, 0.5, 0.8)) == pytest.approx([0.8, 2.0, 3.2])
    # A point at 1 and a bracket [0, 4]: F(x) = x/8 below 1, jumps by 1/2 at 1, then 1/2 + x/8.
    assert bracket_quantiles([(1.0, 1.0), (0.0, 4.0)], (0.1, 0.3, 0.75)) == pytest.approx([0.8, 1.0, 2.0])


def test_hints_are_unknown_until_three_verdicts_then_vague_when_over_a_quarter_were_wrong() -> None:
    record = HintRecord(20)
    record.record(True)
    record.record(True)
    assert record.trust() is Trust.UNKNOWN
    record.record(False)
    assert record.trust() is Trust.VAGUE  # 1 of 3 wrong
    record.record(True)
    assert record.trust() is Trust.TRUSTED  # 1 of 4: not over a quarter


def test_the_first_poll_at_or_after_a_promise_judges_the_hint_once_per_application() -> None:
    learning = PollLearning(SETTINGS)
    track = Tracker(learning)
    track.start(1.0)  # the create said: ready in 1 s
    track.answered(0.5, 0.51, False, 1.0, False)  # before the promise: no verdict; promises 1.51
    track.answered(1.0, 1.01, False, 1.0, False)  # at the first promise, not ready: wrong
    track.answered(2.0, 2.01, True, None, True)  # judged already; the offer came in [1.01, 2.0]
    assert learning.hints.trust() is Trust.UNKNOWN  # one verdict
    assert learning.ready_times.quantiles((0.5,)) == pytest.approx([1.505])
    for _ in range(2):
        other = Tracker(learning)
        other.start(1.0)
        other.answered(1.0, 1.01, True, None, True)
    assert learning.hints.trust() is Trust.VAGUE  # 1 of 3 wrong


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("time"), st.floats(0, 30), st.floats(0, 30)),
            st.tuples(st.just("verdict"), st.booleans(), st.just(0.0)),
            st.tuples(st.just("ask"), st.just(0.0), st.just(0.0)),
        ),
        max_size=300,
    )
)
def test_what_is_learned_follows_every_new_time_and_verdict_however_often_it_is_asked(
    steps: list[tuple[str, object, float]],
) -> None:
    """The median and the trust are kept between polls: each answer must still be what the last
    `ready_window` times and last 20 verdicts say, computed here from scratch."""
    learning = PollLearning(SETTINGS)
    middles: list[float] = []
    verdicts: list[bool] = []
    for kind, a, b in steps:
        if kind == "time":
            assert isinstance(a, float)
            learning.offer_time(a, b)
            lo = min(a, b)
            middles.append((lo + max(lo, b)) / 2)
        elif kind == "verdict":
            assert isinstance(a, bool)
            learning.hints.record(a)
            verdicts.append(a)
        learned = learning.learned()
        recent = middles[-SETTINGS.ready_window :]
        assert learned.median == (statistics.median(recent) if recent else None)
        last = verdicts[-20:]
        expected = (
            Trust.UNKNOWN if len(last) < 3 else Trust.VAGUE if last.count(False) > len(last) / 4 else Trust.TRUSTED
        )
        assert learned.trust is expected


# --- the schedule -----------------------------------------------------------------------------

SCHEDULE = (3.0, 4.0, 5.5, 7.0)
# The quartile-like choice, without a limit on gaps.
QUARTILES = dataclasses.replace(SETTINGS, vague_poll_quantiles=(0.2, 0.5, 0.8, 0.95), vague_poll_max_gap_s=0.0)
# Twenty applications to learn from (the fewest a schedule is drawn from): ready at 2.5, 3.5, ...
# 6.5 s, four times over.
TEACHING = (2.5, 3.5, 4.5, 5.5, 6.5) * 4


def test_the_vague_schedule_polls_at_its_points_then_at_its_last_gap_backing_off() -> None:
    s = QUARTILES  # min 0.01 s, max 5 s, backoff 1.5, no limit on gaps
    assert scheduled_wait(SCHEDULE, 0.0, s) == 3.0
    assert scheduled_wait(SCHEDULE, 3.005, s) == pytest.approx(0.995)  # just polled at 3: next 4
    # Past 7: gaps of 1.5 (the last one), 2.25, 3.375, then 5 (capped): 8.5, 10.75, 14.125, 19.125.
    assert scheduled_wait(SCHEDULE, 7.02, s) == pytest.approx(1.48)
    assert scheduled_wait(SCHEDULE, 12.03, s) == pytest.approx(2.095)
    assert scheduled_wait(SCHEDULE, 14.2, s) == pytest.approx(4.925)
    # One point alone: its own length is the gap.
    assert scheduled_wait((2.0,), 2.05, s) == pytest.approx(1.95)
    # With a limit on gaps (1 s), the tail keeps to it.
    assert scheduled_wait(SCHEDULE, 7.02, SETTINGS) == pytest.approx(0.98)


def test_poll_wait_follows_trusted_hints_uncapped_and_unknown_ones_capped() -> None:
    s = SETTINGS
    assert poll_wait(s, Learned(trust=Trust.TRUSTED), 23.4, None, 0, 0.0) == (23.4, None)
    assert poll_wait(s, Learned(trust=Trust.UNKNOWN), 23.4, None, 0, 0.0) == (5.0, None)
    # Retry-After alone is honoured as is, whatever the trust.
    assert poll_wait(s, Learned(trust=Trust.UNKNOWN), None, 8.0, 0, 0.0) == (8.0, 8.0)


def test_poll_wait_ignores_vague_hints_once_a_schedule_is_learned() -> None:
    s = SETTINGS
    vague = Learned(trust=Trust.VAGUE, schedule=SCHEDULE)
    assert poll_wait(s, vague, 1.0, None, 0, 0.0) == (3.0, None)
    assert poll_wait(s, vague, 1.0, None, 0, 4.01) == pytest.approx((1.49, None))
    # A Retry-After later than the schedule's next point is still the earliest next poll.
    assert poll_wait(s, vague, 1.0, 1.0, 0, 3.5) == (1.0, 1.0)
    # No schedule yet (too few times known): the hint, clamped, as for an unknown insurer.
    assert poll_wait(s, Learned(trust=Trust.VAGUE), 1.0, None, 0, 0.0) == (1.0, None)


def test_a_poll_that_would_come_too_late_becomes_one_last_poll_before_the_deadline() -> None:
    s = SETTINGS  # final_poll_lead_s 0.25
    assert next_poll(s, 2.0, None, 10.0, False) == (2.0, False)
    assert next_poll(s, 12.0, None, 10.0, False) == (9.75, True)
    assert next_poll(s, 12.0, None, 10.0, True) is None  # the last one was made
    assert next_poll(s, 12.0, 11.0, 10.0, False) is None  # the insurer asked us not to come by then


def test_the_vague_quantiles_are_a_setting() -> None:
    env = {**DEV_ENV, "OSAGO_GATEWAY_INSURER": "alfa", "OSAGO_GATEWAY_BASE_URL": "http://x"}
    default = GatewaySettings.from_env(env)
    assert (default.vague_poll_quantiles, default.vague_poll_max_gap_s) == ((0.05, 0.95), 1.0)
    chosen = GatewaySettings.from_env(
        {**env, "OSAGO_GATEWAY_VAGUE_POLL_QUANTILES": "0.5, 0.9", "OSAGO_GATEWAY_VAGUE_POLL_MAX_GAP_S": "2"}
    )
    assert (chosen.vague_poll_quantiles, chosen.vague_poll_max_gap_s) == ((0.5, 0.9), 2.0)
    for bad in ("0.5,1.5", "half"):
        with pytest.raises(SettingsError):
            GatewaySettings.from_env({**env, "OSAGO_GATEWAY_VAGUE_POLL_QUANTILES": bad})


# --- the flow, learning across applications ---------------------------------------------------


@dataclass
class Modelled:
    """An insurer whose current application is ready `ready` seconds after its create; its hint
    is the time really left (honest) or always 1 s (vague)."""

    clock: FakeClock
    honest: bool
    ready: float = 0.0
    created_at: float = 0.0
    polls: list[float] = field(default_factory=list)

    def hint_ms(self) -> int:
        left = self.ready - (self.clock.monotonic() - self.created_at)
        return round(1000 * left) if self.honest else 1000

    async def __call__(self, call: HttpCall, timeout: float) -> HttpResponse:
        if call.method == "POST":
            self.created_at = self.clock.monotonic()
            self.polls = []
            return created(self.hint_ms())
        self.polls.append(round(self.clock.monotonic() - self.created_at, 6))
        if self.clock.monotonic() - self.created_at >= self.ready:
            return QUOTED
        return processing(self.hint_ms())


async def apply(flow: OfferFlow, clock: FakeClock, insurer: Modelled, ready: float) -> list[float]:
    """One application ready `ready` s after its create; the moments it was polled."""
    insurer.ready = ready
    offers: list[Offer] = []

    async def consume() -> None:
        async for update in flow.run(CREATE, clock.monotonic() + 60.0):
            if isinstance(update, Offer):
                offers.append(update)

    task = asyncio.create_task(consume())
    await clock.advance(70.0)
    await task
    assert len(offers) == 1
    return insurer.polls


def modelled(honest: bool, settings: GatewaySettings = SETTINGS) -> tuple[OfferFlow, FakeClock, Modelled]:
    clock = FakeClock()
    insurer = Modelled(clock, honest)
    return OfferFlow(settings, DIALECTS["rest"], insurer, clock), clock, insurer


async def test_hints_that_proved_right_are_followed_beyond_the_cap() -> None:
    flow, clock, insurer = modelled(honest=True)
    for ready in (2.0, 3.0, 4.0):
        assert await apply(flow, clock, insurer, ready) == [ready]  # at the hint: right
    assert flow.learning.hints.trust() is Trust.TRUSTED
    # "Ready in 23.5 s" is now taken at its word: one poll, not one every 5 s.
    assert await apply(flow, clock, insurer, 23.5) == [23.5]


async def test_until_then_a_long_hint_is_capped() -> None:
    flow, clock, insurer = modelled(honest=True)
    assert await apply(flow, clock, insurer, 23.5) == [5.0, 10.0, 15.0, 20.0, 23.5]


async def test_a_long_trusted_hint_past_the_deadline_gets_the_last_poll_before_it() -> None:
    flow, clock, insurer = modelled(honest=True)
    for ready in (2.0, 3.0, 4.0):
        await apply(flow, clock, insurer, ready)
    insurer.ready = 75.0
    task = asyncio.create_task(_drain(flow, clock))
    await clock.advance(70.0)
    assert await task == "DEADLINE"
    assert insurer.polls == [59.75]


async def _drain(flow: OfferFlow, clock: FakeClock) -> str:
    last = ""
    async for update in flow.run(CREATE, clock.monotonic() + 60.0):
        last = update.reason.name if isinstance(update, Failed) else type(update).__name__
    return last


async def test_vague_hints_give_way_to_polls_at_the_learned_quantiles() -> None:
    flow, clock, insurer = modelled(honest=False, settings=QUARTILES)
    # While too few times are known (twenty), every second, as the insurer says; each
    # application's first poll (at 1 s, as promised) finds nothing: the hints are wrong.
    for ready in TEACHING:
        polls = await apply(flow, clock, insurer, ready)
        assert polls == [float(n) for n in range(1, int(ready) + 2)]
    assert flow.learning.hints.trust() is Trust.VAGUE
    # Learned: ready in [2, 3], [3, 4], ... [6, 7] (each four times): uniform over [2, 7], F(x) = (x - 2) / 5, so
    # p20 = 3, p50 = 4.5, p80 = 6, p95 = 6.75.
    assert flow.learning.learned().schedule == pytest.approx((3.0, 4.5, 6.0, 6.75))
    # Ready at 5.2 s: polled at 3, 4.5 and 6 (found 0.8 s late), not at 1, 2, ... 6.
    assert await apply(flow, clock, insurer, 5.2) == pytest.approx([3.0, 4.5, 6.0])


async def test_the_chosen_quantiles_shape_the_schedule() -> None:
    settings = dataclasses.replace(QUARTILES, vague_poll_quantiles=(0.5, 0.95))
    flow, clock, insurer = modelled(honest=False, settings=settings)
    for ready in TEACHING:
        await apply(flow, clock, insurer, ready)
    assert flow.learning.learned().schedule == pytest.approx((4.5, 6.75))
    assert await apply(flow, clock, insurer, 5.2) == pytest.approx([4.5, 6.75])


async def taught_vague() -> tuple[OfferFlow, FakeClock, Modelled]:
    """A vague insurer's flow after twenty applications ready at 2.5, 3.5, ... 6.5 s four times
    (polled every second, so each known within a second: uniform over [2, 7] together)."""
    flow, clock, insurer = modelled(honest=False)
    for ready in TEACHING:
        await apply(flow, clock, insurer, ready)
    return flow, clock, insurer


async def test_by_default_vague_hints_give_way_to_polls_a_second_apart_from_p5_to_p95() -> None:
    flow, clock, insurer = await taught_vague()
    # p5 = 2.25, p95 = 6.75; 4.5 s between them, split into 5 gaps of 0.9 s.
    assert flow.learning.learned().schedule == pytest.approx((2.25, 3.15, 4.05, 4.95, 5.85, 6.75))
    assert await apply(flow, clock, insurer, 5.2) == pytest.approx([2.25, 3.15, 4.05, 4.95, 5.85])


async def test_past_the_schedule_the_polls_go_on_at_its_last_gap() -> None:
    flow, clock, insurer = await taught_vague()
    # On at the last gap (0.9 s), then ×1.5 capped at 1 s: 7.65, 8.65.
    assert await apply(flow, clock, insurer, 8.0) == pytest.approx([2.25, 3.15, 4.05, 4.95, 5.85, 6.75, 7.65, 8.65])


def schedule_of(settings: GatewaySettings, times: Sequence[float]) -> tuple[float, ...]:
    learning = PollLearning(settings)
    for t in times:
        learning.offer_time(t, t)
    for _ in range(3):
        learning.hints.record(False)
    return learning.learned().schedule


def test_the_schedule_needs_twenty_times() -> None:
    times = (1.0, 2.0, 3.0, 4.0, 5.0) * 4
    assert schedule_of(QUARTILES, times[:19]) == ()
    assert schedule_of(QUARTILES, times) == (1.0, 3.0, 4.0, 5.0)  # nearest ranks
    # The default: p5 = 1 and p95 = 5 (nearest ranks), 4 s between them in gaps of at most 1 s.
    assert schedule_of(SETTINGS, times) == (1.0, 2.0, 3.0, 4.0, 5.0)


def test_the_schedule_is_drawn_again_after_a_tenth_of_the_times_is_new() -> None:
    learning = PollLearning(SETTINGS)
    for _ in range(3):
        learning.hints.record(False)
    for _ in range(20):
        learning.offer_time(2.0, 2.0)
    assert learning.learned().schedule == (2.0,)
    learning.offer_time(9.0, 9.0)  # one new of 21: not yet (a tenth is 2)
    assert learning.learned().schedule == (2.0,)
    learning.offer_time(9.0, 9.0)  # two: p5 = 2, p95 = 9 (nearest rank 21 of 22), gaps of 7/7 = 1 s
    assert learning.learned().schedule == (2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)


def test_gaps_wider_than_the_maximum_are_split_evenly() -> None:
    assert fill_gaps((1.0, 3.5, 4.0), 1.0) == pytest.approx((1.0, 1.8333333, 2.6666667, 3.5, 4.0))
    assert fill_gaps((1.0, 3.0), 1.0) == (1.0, 2.0, 3.0)  # exactly two gaps of 1 s
    assert fill_gaps((1.0, 9.0), 0.0) == (1.0, 9.0)  # no limit


def test_an_application_keeps_the_first_schedule_it_got() -> None:
    learning = PollLearning(SETTINGS)
    for _ in range(3):
        learning.hints.record(False)
    for _ in range(20):
        learning.offer_time(2.0, 2.0)
    track = Tracker(learning)
    assert track.learned().schedule == (2.0,)
    for _ in range(2):  # drawn anew for applications starting now: 2 to 9 in gaps of 1 s
        learning.offer_time(9.0, 9.0)
    assert learning.learned().schedule == (2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
    assert track.learned().schedule == (2.0,)
    assert Tracker(learning).learned().schedule == (2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
