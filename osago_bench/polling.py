"""`osago bench polling`: the polling policy's trade-off between HTTP requests per application and
detection delay, offline, for the simulated insurers.

No process, no HTTP: each insurer's applications are drawn from its simulator profile (log-normal
time-to-offer, insurer_sim.profiles; its hints honest or a fixed 1 s, insurer_sim.config) and
polled on a virtual clock by the gateway's very policy (insurer_gateway.polling: `poll_wait`,
`next_poll`, the learning in `Tracker`), one application after another so that the learning
carries over as in a gateway. A poll finds the offer when it is made at or after the moment the
offer is ready; an HTTP answer takes `--rtt` seconds. The first `--warmup` applications teach the
policy and are not counted.

For each insurer the policy is run under several choices of `vague_poll_quantiles` and, for
comparison, as it was before hints were judged (every hint followed, clamped to 5 s: a vague
insurer polled every second). Detection delay is the poll that found the offer minus the moment
it was ready; a session's offer still not found at the session limit (60 s) is counted missed.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from insurer_gateway.polling import Learned, PollLearning, Tracker, Trust, next_poll, poll_wait
from insurer_gateway.settings import GatewaySettings
from insurer_sim.config import VAGUE_HINTS
from insurer_sim.insurer import MIN_HINT_S, VAGUE_HINT_S
from insurer_sim.profiles import InsurerProfile, first
from osago_bench.accounting import percentile

# The policy choices compared for vague hints, (vague_poll_quantiles, vague_poll_max_gap_s); None
# is the policy before hints were judged.
Choice = tuple[tuple[float, ...], float]
CHOICES: tuple[Choice | None, ...] = (
    None,
    ((0.5, 0.95), 0.0),
    ((0.3, 0.6, 0.9), 0.0),
    ((0.2, 0.5, 0.8, 0.95), 0.0),
    ((0.1, 0.3, 0.5, 0.7, 0.9), 0.0),
    ((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95), 0.0),
    ((0.2, 0.5, 0.8, 0.95), 3.0),
    ((0.2, 0.5, 0.8, 0.95), 2.0),
    ((0.05, 0.95), 2.0),
    ((0.05, 0.95), 1.5),
    ((0.05, 0.95), 1.0),
)


@dataclass(frozen=True)
class PollingConfig:
    insurers: int = 10
    applications: int = 2000
    warmup: int = 100
    session_limit_s: float = 60.0
    rtt_s: float = 0.002
    seed: int = 1


@dataclass(frozen=True)
class Point:
    """One insurer under one policy choice: what its counted applications cost and waited."""

    insurer_id: str
    hints: str  # "honest" or "vague"
    # The quantiles and max gap; "before" (hints followed, clamped); "now" (honest hints: the
    # current policy, which follows them as given once they proved right).
    choice: str
    chosen: bool  # the settings' default
    requests_per_application: float
    detection_p50_ms: float | None
    detection_p95_ms: float | None
    missed: int

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def simulate(
    profile: InsurerProfile,
    vague: bool,
    settings: GatewaySettings,
    config: PollingConfig,
    judge_hints: bool = True,
) -> tuple[int, list[float], int]:
    """(HTTP requests, detection delays in seconds, offers missed) of the counted applications."""
    rng = random.Random(f"{config.seed}/{profile.insurer_id}")  # noqa: S311 - simulated latencies; nothing secret
    learning = PollLearning(settings)
    requests = 0
    delays: list[float] = []
    missed = 0
    for n in range(config.warmup + config.applications):
        ready = rng.lognormvariate(math.log(max(profile.latency_median_s, 1e-6)), profile.latency_sigma)
        sent, found = _application(ready, vague, settings, learning, config, judge_hints)
        if n < config.warmup:
            continue
        requests += sent
        if found is None:
            missed += 1
        else:
            delays.append(found - ready)
    return requests, delays, missed


def _application(
    ready: float,
    vague: bool,
    s: GatewaySettings,
    learning: PollLearning,
    config: PollingConfig,
    judge_hints: bool,
) -> tuple[int, float | None]:
    """One application on a virtual clock (0: the create was answered): HTTP requests made, and
    when the poll that found the offer was sent (None: not by the deadline). The loop is the
    offer flow's (insurer_gateway.offers.OfferFlow._poll), without the transport."""

    def hint_at(t: float) -> float:
        return VAGUE_HINT_S if vague else max(MIN_HINT_S, ready - t)

    deadline = config.session_limit_s - config.rtt_s  # the create took one round trip
    now, requests = 0.0, 1
    hint: float | None = hint_at(0.0)
    track = Tracker(learning)
    track.start(hint)
    final_used = False
    while True:
        learned = track.learned() if judge_hints else Learned(learning.ready_times.median(), Trust.UNKNOWN)
        wait, floor = poll_wait(s, learned, hint, None, 0, now)
        step = next_poll(s, wait, floor, deadline - now, final_used)
        if step is None:
            return requests, None
        wait, final_used = step
        sent = now + wait
        requests += 1
        now = sent + config.rtt_s
        found = sent + config.rtt_s / 2 >= ready  # the insurer sees the poll half a round trip later
        hint = None if found else hint_at(sent + config.rtt_s / 2)
        track.answered(sent, now, found, hint, found)
        if found:
            return requests, sent + config.rtt_s  # obtained when the answer arrived


def run_polling(config: PollingConfig) -> list[Point]:
    base = GatewaySettings(insurer_id="x", insurer_name="x", dialect="rest", base_url="http://sim")
    points: list[Point] = []
    for profile in first(config.insurers):
        if profile.dialect == "push":
            continue  # it calls back: nothing to poll
        vague = profile.insurer_id in VAGUE_HINTS
        default: Choice = (base.vague_poll_quantiles, base.vague_poll_max_gap_s)
        choices: Sequence[Choice | None] = CHOICES if vague else (None, default)
        for choice in choices:
            settings = base
            if choice is not None:
                settings = dataclasses.replace(base, vague_poll_quantiles=choice[0], vague_poll_max_gap_s=choice[1])
            requests, delays, missed = simulate(profile, vague, settings, config, judge_hints=choice is not None)
            p50, p95 = percentile(delays, 50), percentile(delays, 95)
            points.append(
                Point(
                    profile.insurer_id,
                    "vague" if vague else "honest",
                    "before" if choice is None else _choice(choice) if vague else "now",
                    choice == default,
                    round(requests / config.applications, 2),
                    None if p50 is None else round(p50 * 1000, 1),
                    None if p95 is None else round(p95 * 1000, 1),
                    missed,
                )
            )
    return points


def table(points: Sequence[Point], config: PollingConfig) -> str:
    lines = [
        f"polling offline: {config.applications} applications per insurer after {config.warmup} to learn from, "
        f"round trip {config.rtt_s * 1000:g} ms, session limit {config.session_limit_s:g} s, seed {config.seed}",
        "",
        f"{'insurer':<10} {'hints':<7} {'vague hints: polls at quantiles':<40} {'req/app':>8} {'detect p50':>11} "
        f"{'detect p95':>11} {'missed':>7}",
    ]
    for p in points:
        mark = "  <- chosen" if p.chosen else ""
        choice = {"before": "before: every hint, clamped to 5 s", "now": "now: right hints followed as given"}.get(
            p.choice, p.choice
        )
        lines.append(
            f"{p.insurer_id:<10} {p.hints:<7} {choice:<40} {p.requests_per_application:>8.2f} "
            f"{_ms(p.detection_p50_ms):>11} {_ms(p.detection_p95_ms):>11} {p.missed:>7}{mark}"
        )
    return "\n".join(lines)


def _choice(choice: Choice) -> str:
    quantiles, gap = choice
    text = "p" + "/".join(f"{round(q * 100):g}" for q in quantiles)
    return f"{text}, gaps ≤ {gap:g} s" if gap > 0 else text


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"
