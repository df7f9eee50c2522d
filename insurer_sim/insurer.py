"""Simulated insurers, whatever API dialect they speak: each application's outcome (an offer priced
with the real tariff, or a decline), when it becomes ready, and what a poll sees.

Nothing here knows HTTP: the dialects parse requests into a `Proposal` and render what
`SimInsurer` answers. All per-insurer state lives in `SimInsurer`, so run-time faults attach there.
An application created with a `Hook` (a dialect with callbacks) is handed to the simulation's
deliveries (insurer_sim.webhooks), which send its outcome when it is ready.
"""

from __future__ import annotations

import math
import random
import secrets
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from insurer_sim.config import SimConfig
from insurer_sim.fault_state import FaultState
from insurer_sim.ledger import IssuedDecline, IssuedOffer, Ledger
from insurer_sim.profiles import InsurerProfile
from osago_common.clock import Clock
from osago_common.tariff import Breakdown, TariffError, TariffInput, base_rate_for, compute_premium

# How long an issued offer can be bought (not a simulated delay: not scaled).
OFFER_VALIDITY = timedelta(hours=24)
# The polling cadence that insurers with vague hints announce, before time_scale.
VAGUE_HINT_S = 1.0
# No hint is shorter than this, whatever time is left.
MIN_HINT_S = 0.010
# Why the `decline` fault declines.
FAULT_DECLINE_REASON = "declined by underwriting"


@dataclass(frozen=True)
class Proposal:
    """What an insurer needs from a create request, in any dialect."""

    reference: str  # the caller's reference (the aggregator's request id)
    tariff: TariffInput
    taxi: bool


@dataclass(frozen=True)
class Offer:
    offer_id: str
    breakdown: Breakdown


@dataclass(frozen=True)
class Decline:
    reason: str


@dataclass(frozen=True)
class Hook:
    """Where and how a dialect with callbacks sends an application's outcome: the partner's URL,
    the body of one delivery (the outcome as issued, the delivery's id), and the headers signing
    a body (body, secret, Unix time)."""

    url: str
    body: Callable[[Ready, str], bytes]
    headers: Callable[[bytes, bytes, int], Mapping[str, str]]


@dataclass
class Application:
    application_id: str
    reference: str
    created_at: float  # clock.monotonic()
    ready_at: float  # clock.monotonic() from which polls see the outcome
    outcome: Offer | Decline
    polls: int = 0
    # Create requests that led here: the first, and every replay of its idempotency key.
    creates: int = 1
    last_poll_at: datetime | None = None
    # The first poll that returned the outcome, or the first callback the partner accepted.
    issued_at: datetime | None = None
    # The outcome is final (the `decline` fault has had its say).
    settled: bool = False
    hook: Hook | None = None
    callbacks: int = 0  # delivery attempts of its callback


@dataclass(frozen=True)
class Pending:
    """A poll before the outcome is ready."""

    application: Application
    hint_s: float  # when to ask again


@dataclass(frozen=True)
class Ready:
    """A poll that sees the outcome."""

    application: Application
    outcome: Offer | Decline
    issued_at: datetime

    @property
    def valid_until(self) -> datetime:
        return self.issued_at + OFFER_VALIDITY


class SimInsurer:
    """One insurer: its profile, applications, idempotency keys, counters and run-time fault."""

    def __init__(
        self,
        profile: InsurerProfile,
        *,
        clock: Clock,
        ledger: Ledger,
        time_scale: float,
        seed: str,
        honest_hints: bool,
    ) -> None:
        self.profile = profile
        self.applications: dict[str, Application] = {}
        self.creates = 0  # applications created
        self.replays = 0  # creates answered from an idempotency key
        self.polls = 0
        self.callbacks = 0  # callback delivery attempts
        # Called with each new application that has a Hook (set by the running app).
        self.on_hook: Callable[[SimInsurer, Application], None] | None = None
        self._clock = clock
        self._ledger = ledger
        self._time_scale = time_scale
        self._seed = seed
        self._honest_hints = honest_hints
        self._by_key: dict[str, str] = {}
        self._by_offer: dict[str, Application] = {}
        self._per_reference: Counter[str] = Counter()
        self.faults = FaultState(clock, random.Random(f"{seed}/faults"), time_scale)

    @property
    def insurer_id(self) -> str:
        return self.profile.insurer_id

    def create(
        self, proposal: Proposal, idempotency_key: str | None, hook: Hook | None = None
    ) -> tuple[Application, bool]:
        """The application for `proposal`, and whether it is new (False: a replayed key, whose
        application keeps its first hook). A new application's hook gets its outcome sent."""
        if idempotency_key is not None:
            known = self._by_key.get(idempotency_key)
            if known is not None:
                self.replays += 1
                self.applications[known].creates += 1
                return self.applications[known], False
        # One generator per application, seeded by what identifies it, so outcomes do not depend
        # on the order concurrent applications arrive in.
        ordinal = self._per_reference[proposal.reference]
        self._per_reference[proposal.reference] += 1
        rng = random.Random(f"{self._seed}/{proposal.reference}/{ordinal}")
        p = self.profile
        median = max(p.latency_median_s, 1e-6)
        delay = rng.lognormvariate(math.log(median), p.latency_sigma) * self._time_scale
        declined = rng.random() < p.decline_rate
        application_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        while application_id in self.applications:
            application_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        offer_id = f"{rng.getrandbits(64):016X}"
        now = self._clock.monotonic()
        application = Application(
            application_id=application_id,
            reference=proposal.reference,
            created_at=now,
            ready_at=now + delay,
            outcome=self._decide(proposal, declined, offer_id),
            hook=hook,
        )
        self.applications[application_id] = application
        if isinstance(application.outcome, Offer):
            self._by_offer[offer_id] = application
        if idempotency_key is not None:
            self._by_key[idempotency_key] = application_id
        self.creates += 1
        if hook is not None and self.on_hook is not None:
            self.on_hook(self, application)
        return application, True

    def _decide(self, proposal: Proposal, declined: bool, offer_id: str) -> Offer | Decline:
        try:
            base_rate = base_rate_for(self.profile.base_rate_position, proposal.tariff.start_date)
            breakdown = compute_premium(base_rate, proposal.tariff)
        except TariffError as exc:
            return Decline(f"cannot price the application: {exc}")
        if proposal.taxi and self.profile.declines_taxi:
            return Decline("taxis are not insured")
        if declined:
            return Decline("declined by underwriting")
        return Offer(offer_id, breakdown)

    def hint_s(self, application: Application) -> float:
        """When to ask again: the time really left, or a fixed cadence for vague insurers."""
        left = application.ready_at - self._clock.monotonic() if self._honest_hints else VAGUE_HINT_S * self._time_scale
        return max(MIN_HINT_S, left)

    def poll(self, application_id: str) -> Pending | Ready | None:
        """What a poll of `application_id` sees (None: no such application); the first poll that
        sees the outcome issues it, into the ledger; under the `decline` fault, as a decline."""
        application = self.applications.get(application_id)
        if application is None:
            return None
        now = self._clock.now()
        self.polls += 1
        application.polls += 1
        application.last_poll_at = now
        if self._clock.monotonic() < application.ready_at:
            return Pending(application, self.hint_s(application))
        return self.issue(application, now)

    def ready(self, application: Application) -> Ready:
        """The outcome as the insurer would issue it now (a callback's content), not yet issued:
        settled once, so the `decline` fault turns an offer into a decline before anyone sees it."""
        if not application.settled:
            application.settled = True
            if self.faults.declining and isinstance(application.outcome, Offer):
                self._by_offer.pop(application.outcome.offer_id, None)
                application.outcome = Decline(FAULT_DECLINE_REASON)
                self.faults.declined()
        return Ready(application, application.outcome, application.issued_at or self._clock.now())

    def issue(self, application: Application, at: datetime | None = None) -> Ready:
        """Issues the outcome into the ledger, once: the first poll that returns it, or the first
        callback the partner accepted (`at`: when its body was made)."""
        ready = self.ready(application)
        if application.issued_at is None:
            application.issued_at = at or ready.issued_at
            self._ledger.record(self._issued(application, application.issued_at))
        return Ready(application, application.outcome, application.issued_at)

    def callback_attempted(self, application: Application) -> None:
        """Counts one delivery attempt of the application's callback."""
        self.callbacks += 1
        application.callbacks += 1

    def _issued(self, application: Application, now: datetime) -> IssuedOffer | IssuedDecline:
        outcome = application.outcome
        # The moment it became ready, on the wall clock (the application keeps monotonic times;
        # `now` may be earlier than the present: a callback's body was made before it was accepted).
        ready_at = self._clock.now() - timedelta(seconds=max(0.0, self._clock.monotonic() - application.ready_at))
        if isinstance(outcome, Offer):
            return IssuedOffer(
                self.insurer_id,
                application.application_id,
                outcome.offer_id,
                application.reference,
                outcome.breakdown.premium_kopecks,
                now,
                ready_at,
            )
        return IssuedDecline(
            self.insurer_id, application.application_id, application.reference, outcome.reason, now, ready_at
        )

    def issued_offer(self, offer_id: str) -> Application | None:
        """The application whose offer `offer_id` has been issued, if any."""
        application = self._by_offer.get(offer_id)
        if application is None or application.issued_at is None:
            return None
        return application


class Simulation:
    """Every simulated insurer of one server, the ledger they share, and their callback secrets
    (the running app points each insurer's `on_hook` at its deliveries)."""

    def __init__(self, config: SimConfig, clock: Clock) -> None:
        seed = config.seed if config.seed is not None else random.SystemRandom().getrandbits(64)
        self.config = config
        self.clock = clock
        self.ledger = Ledger()
        fallback = config.callback_secret or secrets.token_urlsafe(32)
        # Each insurer's callback secret (never shown over HTTP).
        self.callback_secrets: dict[str, str] = {
            p.insurer_id: config.callback_secrets.get(p.insurer_id) or fallback for p in config.insurers
        }
        self.insurers: dict[str, SimInsurer] = {
            p.insurer_id: SimInsurer(
                p,
                clock=clock,
                ledger=self.ledger,
                time_scale=config.time_scale,
                seed=f"{seed}/{p.insurer_id}",
                honest_hints=p.insurer_id not in config.vague_hints,
            )
            for p in config.insurers
        }
