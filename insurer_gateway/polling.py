"""When to poll an insurer next: the policy, as pure functions of what was learned about the
insurer and where one application stands, so that the gateway's offer flow, the load benchmark's
bare fan-out and the offline polling benchmark (`osago bench polling`) poll by the very same
rules, and tests can compute every schedule by hand.

What is learned per insurer (`PollLearning`, kept across its applications):

- its times-to-offer (`ReadyTimes`): each offer's time after the create is known only to lie
  between the last "not ready" and the poll that found it (exactly, when a callback said so);
- whether its hints can be trusted (`HintRecord`): a hint "ready in h seconds" promises the
  outcome at that moment, and the first poll at or after the promise either finds the outcome
  (the hint was right) or does not (wrong). An insurer whose recent hints were mostly right is
  *trusted*; one with more than `VAGUE_SHARE` of them wrong is *vague* (a fixed cadence such as
  "ask again in 1 s", or an estimate that means nothing); too few verdicts: *unknown*.

The policy (`poll_wait`):

- trusted hints are followed as given, however long (the session's remaining time bounds them:
  the flow makes one last poll just before the deadline instead of one past it);
- unknown hints are followed, clamped to [min_poll_interval_s, max_poll_interval_s] (as every
  hint was before trust was learned);
- vague hints are ignored once enough times-to-offer are known: the polls come at the learned
  quantiles of the insurer's time-to-offer (`vague_poll_quantiles` of `GatewaySettings`, e.g. its
  p20, p50, p80 and p95), then at the schedule's last gap, backing off by `poll_backoff` up to
  max_poll_interval_s; no two polls of the schedule further apart than `vague_poll_max_gap_s`
  (when set: a gap wider is split evenly); a Retry-After is still honoured as the earliest next
  poll;
- Retry-After without a more precise hint in the body is honoured as is (not capped);
- no hint at all: the insurer's median time-to-offer (or the default interval), growing by
  `poll_backoff` per hintless poll, clamped.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from insurer_gateway.settings import GatewaySettings

__all__ = [
    "HintRecord",
    "Learned",
    "PollLearning",
    "ReadyTimes",
    "Tracker",
    "Trust",
    "next_poll",
    "poll_wait",
    "scheduled_wait",
]

# Hints are vague when more than this share of the recent verdicts on them were wrong.
VAGUE_SHARE = 0.25
# Verdicts needed before hints are trusted or found vague, and how many recent ones count.
MIN_VERDICTS = 3
VERDICTS = 20
# A poll this close before a promised moment counts as at it (float rounding of clock readings).
PROMISE_SLACK_S = 1e-6
# Times-to-offer needed before the vague-hint schedule is drawn from them (the first offers of a
# cold start are the fastest: fewer would give a schedule too early). Once drawn, it is drawn
# again after every tenth of the window's times is new.
MIN_TIMES = 20


class Trust(enum.Enum):
    UNKNOWN = "unknown"
    TRUSTED = "trusted"
    VAGUE = "vague"


class ReadyTimes:
    """How long the insurer's recent offers took from its accepting the application.

    Each time is known to lie in a bracket: after the last "not ready" and no later than the
    poll that found the offer (a callback gives it exactly: a bracket of width 0). The median
    paces hintless first polls from the brackets' middles (first polls that always find the
    offer pull it down, first polls that come too early push it up, so it settles near the
    insurer's real time). The quantiles spread each time evenly over its bracket: the share of
    offers ready by any poll moment of a past schedule is then counted exactly, and the learned
    distribution does not collapse onto the moments polls happened to be made at.
    """

    def __init__(self, size: int) -> None:
        self._brackets: deque[tuple[float, float]] = deque(maxlen=size)
        # The median, kept until the next time is recorded: asked before every poll, it sorted
        # up to `size` times each time (a tenth of a polled gateway's CPU in a profile).
        self._median: float | None = None

    def record(self, seconds: float) -> None:
        """A time known exactly."""
        self.record_bracket(seconds, seconds)

    def record_bracket(self, after: float, by: float) -> None:
        """A time known to lie in [after, by]."""
        lo = max(0.0, min(after, by))
        self._brackets.append((lo, max(lo, by)))
        self._median = None

    def __len__(self) -> int:
        return len(self._brackets)

    def median(self) -> float | None:
        if self._median is None and self._brackets:
            self._median = statistics.median((lo + hi) / 2 for lo, hi in self._brackets)
        return self._median

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0 < q <= 1) of the recent times (with exact times: the nearest rank)."""
        found = self.quantiles((q,))
        return found[0] if found else None

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        """The qs-quantiles, each time spread evenly over its bracket ([] when none is known)."""
        return bracket_quantiles(list(self._brackets), qs)


def bracket_quantiles(brackets: Sequence[tuple[float, float]], qs: Sequence[float]) -> list[float]:
    """The qs-quantiles (smallest x with F(x) >= q) of the mixture of uniform distributions over
    `brackets` (a bracket of width 0 is a point). F is piecewise linear between the brackets'
    ends, jumping at the points: one sweep over the ends, in order, finds every quantile."""
    n = len(brackets)
    if n == 0:
        return []
    changes: dict[float, list[float]] = {}  # at x: [jump of F, change of its slope]
    for lo, hi in brackets:
        if hi > lo:
            w = 1.0 / (hi - lo) / n
            changes.setdefault(lo, [0.0, 0.0])[1] += w
            changes.setdefault(hi, [0.0, 0.0])[1] -= w
        else:
            changes.setdefault(lo, [0.0, 0.0])[0] += 1.0 / n
    wanted = sorted((q - 1e-12, k) for k, q in enumerate(qs))
    out = [0.0] * len(qs)
    f = slope = 0.0
    at = prev = min(changes)
    i = 0
    for at in sorted(changes):
        left = f + slope * (at - prev)  # F just before `at`
        while i < len(wanted) and wanted[i][0] <= left:
            goal, k = wanted[i]
            out[k] = min(at, prev + max(0.0, goal + 1e-12 - f) / slope) if slope > 0 else prev
            i += 1
        jump, turn = changes[at]
        f, slope, prev = left + jump, slope + turn, at
        while i < len(wanted) and wanted[i][0] <= f:
            out[wanted[i][1]] = at
            i += 1
    for _, k in wanted[i:]:  # rounding left F a hair under 1 at the end
        out[k] = at
    return out


class HintRecord:
    """Whether the insurer's recent hints came true (one verdict per application at most)."""

    def __init__(self, size: int) -> None:
        self._verdicts: deque[bool] = deque(maxlen=size)
        self._trust: Trust | None = None  # kept until the next verdict

    def record(self, right: bool) -> None:
        self._verdicts.append(right)
        self._trust = None

    def trust(self) -> Trust:
        if self._trust is None:
            if len(self._verdicts) < MIN_VERDICTS:
                self._trust = Trust.UNKNOWN
            else:
                wrong = sum(1 for v in self._verdicts if not v)
                self._trust = Trust.VAGUE if wrong > VAGUE_SHARE * len(self._verdicts) else Trust.TRUSTED
        return self._trust


@dataclass(frozen=True)
class Learned:
    """What the policy knows of the insurer: its median time-to-offer (brackets' middles), whether
    its hints are trusted, and the vague-hint schedule (seconds after the create, ascending;
    empty until MIN_TIMES times are known)."""

    median: float | None = None
    trust: Trust = Trust.UNKNOWN
    schedule: tuple[float, ...] = ()


class PollLearning:
    """What one insurer's applications teach the policy (see the module's docstring)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._quantiles = settings.vague_poll_quantiles
        self._max_gap = settings.vague_poll_max_gap_s
        self.ready_times = ReadyTimes(settings.ready_window)
        self.hints = HintRecord(VERDICTS)
        self._schedule: tuple[float, ...] = ()
        self._new = 0  # times recorded since the schedule was drawn
        self._drawn = False
        self._learned = Learned()  # the last answer, given again while nothing changed

    def learned(self) -> Learned:
        trust = self.hints.trust()
        known = len(self.ready_times)
        if trust is Trust.VAGUE and known >= MIN_TIMES and (not self._drawn or self._new >= max(1, known // 10)):
            self._drawn, self._new = True, 0
            points = self.ready_times.quantiles(self._quantiles)
            self._schedule = fill_gaps(sorted(set(points)), self._max_gap)
        median, last = self.ready_times.median(), self._learned
        schedule = self._schedule if trust is Trust.VAGUE else ()
        if last.median != median or last.trust is not trust or last.schedule is not schedule:
            self._learned = Learned(median, trust, schedule)
        return self._learned

    def offer_time(self, after: float, by: float) -> None:
        self.ready_times.record_bracket(after, by)
        self._new += 1


class Tracker:
    """One application's polls, for learning: times in seconds after the create was answered.

    `start(hint)` with the create's hint; `learned()` before each poll: what the policy knows,
    with the first vague-hint schedule this application got kept for the rest of it (a schedule
    drawn anew meanwhile shifts its points: following each new one made polls come a fraction of
    a gap after the last); `answered(sent, received, ready, hint, offer)` for each poll's answer
    (`ready`: it carried the outcome, an offer or a decline).
    """

    def __init__(self, learning: PollLearning) -> None:
        self._learning = learning
        self._promised: float | None = None
        self._judged = False
        self._schedule: tuple[float, ...] = ()
        self.not_ready_at = 0.0
        # The insurer's last answer and this application's form of it (its own schedule).
        self._seen: Learned | None = None
        self._kept = Learned()

    def learned(self) -> Learned:
        learned = self._learning.learned()
        if learned is not self._seen:
            if not self._schedule:
                self._schedule = learned.schedule
            self._seen = learned
            keep = self._schedule and learned.schedule is not self._schedule
            self._kept = dataclasses.replace(learned, schedule=self._schedule) if keep else learned
        return self._kept

    def start(self, hint: float | None) -> None:
        if hint is not None:
            self._promised = hint

    def answered(self, sent: float, received: float, ready: bool, hint: float | None, offer: bool) -> None:
        if not self._judged and self._promised is not None and sent >= self._promised - PROMISE_SLACK_S:
            self._judged = True
            self._learning.hints.record(ready)
        if ready:
            if offer:
                self._learning.offer_time(self.not_ready_at, sent)
            return
        self.not_ready_at = received
        if hint is not None and not self._judged:
            promise = received + hint
            self._promised = promise if self._promised is None else min(self._promised, promise)


def fill_gaps(points: Sequence[float], max_gap: float) -> tuple[float, ...]:
    """The points, with gaps wider than `max_gap` (0: no limit) split evenly."""
    if max_gap <= 0 or not points:
        return tuple(points)
    out = [points[0]]
    for point in points[1:]:
        start = out[-1]
        pieces = math.ceil((point - start) / max_gap - 1e-9)
        out += [start + (point - start) * k / pieces for k in range(1, pieces)]
        out.append(point)
    return tuple(out)


def scheduled_wait(schedule: Sequence[float], elapsed: float, s: GatewaySettings) -> float:
    """The pause from `elapsed` (seconds after the create) to the next point of the vague-hint
    schedule later than min_poll_interval_s from now. Past its last point the polls go on at its
    last gap (the last point itself when it is alone), growing by poll_backoff, at most
    max_poll_interval_s apart."""
    soon = elapsed + s.min_poll_interval_s
    for point in schedule:
        if point > soon:
            return point - elapsed
    at = schedule[-1]
    gap = at - schedule[-2] if len(schedule) > 1 else at
    cap = min(s.max_poll_interval_s, s.vague_poll_max_gap_s) if s.vague_poll_max_gap_s > 0 else s.max_poll_interval_s
    gap = max(min(gap, cap), s.min_poll_interval_s)
    for _ in range(10_000):  # bounded: each step is at least min_poll_interval_s
        gap = min(gap, cap)
        at += gap
        if at > soon:
            break
        gap *= s.poll_backoff
    return max(at - elapsed, s.min_poll_interval_s)


def poll_wait(
    s: GatewaySettings,
    learned: Learned,
    hint: float | None,
    retry_after: float | None,
    hintless: int,
    elapsed: float,
) -> tuple[float, float | None]:
    """The pause before the next poll, and the insurer's Retry-After when it sets the pause (the
    earliest moment the insurer allows)."""
    if learned.trust is Trust.VAGUE and learned.schedule and (hint is not None or retry_after is not None):
        wait = scheduled_wait(learned.schedule, elapsed, s)
        if retry_after is not None and retry_after > wait:
            return max(retry_after, s.min_poll_interval_s), retry_after
        return wait, None
    if hint is not None and hint != retry_after:
        if learned.trust is Trust.TRUSTED:
            return max(hint, s.min_poll_interval_s), None
        return min(max(hint, s.min_poll_interval_s), s.max_poll_interval_s), None
    if retry_after is not None:
        return max(retry_after, s.min_poll_interval_s), retry_after
    base = learned.median if learned.median is not None else s.default_poll_interval_s
    growth = s.poll_backoff ** min(hintless, 64)  # bounded: a float power can overflow
    return min(max(base * growth, s.min_poll_interval_s), s.max_poll_interval_s), None


def next_poll(
    s: GatewaySettings, wait: float, floor: float | None, remaining: float, final_used: bool
) -> tuple[float, bool] | None:
    """The pause before the next poll given the session's `remaining` seconds, and whether it is
    the last one; None: give up (the deadline). A poll that would come too late is replaced by
    one last poll final_poll_lead_s before the deadline, unless the insurer asked (`floor`, its
    Retry-After) not to come that early."""
    if wait < remaining:
        return wait, final_used
    last = max(0.0, remaining - s.final_poll_lead_s)
    if final_used or remaining <= 0 or (floor is not None and floor > last):
        return None
    return last, True
