"""What the customers got against what the insurers issued: pure functions over the offers the
load generator saw and the simulator's ledger, so that the accounting itself can be tested.

An offer is identified by (request id, insurer id, offer id). Against the ledger's offers for
the sessions' request ids, each is:
- delivered: seen by the customer at least once;
- lost: issued by the insurer, never seen;
- duplicated: seen more than once (each extra sighting counts);
- invented: seen, but never issued for that request (each distinct one counts).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

OfferKey = tuple[str, str, str]  # request id, insurer id, offer id


@dataclass(frozen=True)
class Seen:
    """One offer as a customer received it; times in wall-clock seconds (Unix epoch)."""

    request_id: str
    insurer_id: str
    offer_id: str
    arrived: float
    # When the gateway obtained it (Quote.obtained_at); None when the quote did not say.
    obtained: float | None
    # When the aggregator logged it (the event's time), having just received it from the gateway.
    logged: float | None = None

    @property
    def key(self) -> OfferKey:
        return (self.request_id, self.insurer_id, self.offer_id)


@dataclass(frozen=True)
class Issued:
    """One offer of the simulator's ledger; times in wall-clock seconds."""

    reference: str
    insurer_id: str
    offer_id: str
    ready_at: float
    issued_at: float

    @property
    def key(self) -> OfferKey:
        return (self.reference, self.insurer_id, self.offer_id)


@dataclass(frozen=True)
class OfferAccount:
    expected: int
    delivered: int
    lost: int
    duplicated: int
    invented: int
    # A few of the lost and invented offers, for whoever looks into it.
    lost_examples: list[OfferKey] = field(default_factory=list)
    invented_examples: list[OfferKey] = field(default_factory=list)


EXAMPLES = 5


def account_offers(seen: Iterable[Seen], ledger: Iterable[Issued], references: Collection[str]) -> OfferAccount:
    """Delivered, lost, duplicated and invented offers of the sessions `references`."""
    wanted = set(references)
    expected = {entry.key for entry in ledger if entry.reference in wanted}
    sightings = Counter(s.key for s in seen)
    delivered = expected & sightings.keys()
    lost = sorted(expected - delivered)
    invented = sorted(sightings.keys() - expected)
    return OfferAccount(
        expected=len(expected),
        delivered=len(delivered),
        lost=len(lost),
        duplicated=sum(n - 1 for n in sightings.values()),
        invented=len(invented),
        lost_examples=lost[:EXAMPLES],
        invented_examples=invented[:EXAMPLES],
    )


def first_sightings(seen: Iterable[Seen]) -> list[Seen]:
    """Each offer once: its first arrival."""
    first: dict[OfferKey, Seen] = {}
    for s in seen:
        known = first.get(s.key)
        if known is None or s.arrived < known.arrived:
            first[s.key] = s
    return list(first.values())


def added_lags(seen: Iterable[Seen]) -> list[float]:
    """Seconds from the gateway obtaining each offer to the customer receiving it."""
    return [s.arrived - s.obtained for s in first_sightings(seen) if s.obtained is not None]


def lag_legs(seen: Iterable[Seen]) -> tuple[list[float], list[float]]:
    """The added lag's two legs, in seconds: gateway → aggregator (obtained to logged) and
    aggregator → customer (logged to arrival)."""
    upstream: list[float] = []
    downstream: list[float] = []
    for s in first_sightings(seen):
        if s.obtained is not None and s.logged is not None:
            upstream.append(s.logged - s.obtained)
            downstream.append(s.arrived - s.logged)
    return upstream, downstream


def detection_delays(seen: Iterable[Seen], ledger: Iterable[Issued]) -> dict[str, list[float]]:
    """Per insurer, seconds from the insurer having each delivered offer ready to the gateway
    obtaining it: what polling costs in time."""
    ready = {entry.key: entry.ready_at for entry in ledger}
    delays: dict[str, list[float]] = defaultdict(list)
    for s in first_sightings(seen):
        at = ready.get(s.key)
        if at is not None and s.obtained is not None:
            delays[s.insurer_id].append(s.obtained - at)
    return dict(delays)


def requests_per_application(
    applications: Iterable[Mapping[str, Any]], references: Collection[str]
) -> dict[str, tuple[int, int]]:
    """Per insurer, (applications, HTTP requests) of the sessions `references`, from the
    simulator's per-application counts: every create (replays included), every poll, and every
    callback delivery attempt (an insurer that calls back)."""
    wanted = set(references)
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for application in applications:
        if application.get("reference") not in wanted:
            continue
        entry = totals[str(application["insurer_id"])]
        entry[0] += 1
        entry[1] += (
            int(application.get("creates", 1)) + int(application["polls"]) + int(application.get("callbacks", 0))
        )
    return {insurer: (n, requests) for insurer, (n, requests) in totals.items()}


def requests_of_each_application(
    applications: Iterable[Mapping[str, Any]], references: Collection[str]
) -> dict[str, list[float]]:
    """Per insurer, the HTTP requests of each application of the sessions `references` (counted
    as `requests_per_application` counts them)."""
    wanted = set(references)
    out: dict[str, list[float]] = defaultdict(list)
    for a in applications:
        if a.get("reference") in wanted:
            requests = int(a.get("creates", 1)) + int(a["polls"]) + int(a.get("callbacks", 0))
            out[str(a["insurer_id"])].append(float(requests))
    return dict(out)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (0 < q <= 100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
