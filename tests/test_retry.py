"""Backoff with full jitter and the retry budget."""

from __future__ import annotations

import random

import pytest

from insurer_gateway.retry import RetryBudget, RetryPolicy, next_delay
from osago_common.clock import FakeClock


def test_jittered_delays_stay_within_zero_and_the_exponential_ceiling() -> None:
    policy = RetryPolicy(base_s=0.1, cap_s=2.0, max_attempts=10)
    rng = random.Random(1)
    for attempt, ceiling in enumerate([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]):
        assert policy.ceiling(attempt) == pytest.approx(ceiling)
        draws = [policy.delay(attempt, rng) for _ in range(2000)]
        assert min(draws) >= 0.0
        assert max(draws) <= ceiling
        assert max(draws) > 0.95 * ceiling  # the whole range is used
        assert min(draws) < 0.05 * ceiling


def test_the_cap_holds_for_huge_attempt_numbers() -> None:
    policy = RetryPolicy(base_s=0.1, cap_s=2.0)
    rng = random.Random(2)
    for attempt in (63, 64, 1000, 10**6):
        assert policy.ceiling(attempt) == 2.0
        assert 0.0 <= policy.delay(attempt, rng) <= 2.0


def test_jitter_is_roughly_uniform() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=1.0)
    rng = random.Random(3)
    draws = 20_000
    buckets = [0] * 10
    for _ in range(draws):
        buckets[min(9, int(policy.delay(0, rng) * 10))] += 1
    expected = draws / 10
    # Chi-squared with 9 degrees of freedom: 27.9 is the 0.1 % critical value.
    chi2 = sum((count - expected) ** 2 / expected for count in buckets)
    assert chi2 < 27.9
    mean = sum(policy.delay(0, rng) for _ in range(draws)) / draws
    assert mean == pytest.approx(0.5, abs=0.02)


def test_same_seed_gives_the_same_delays() -> None:
    policy = RetryPolicy()
    first = [policy.delay(a, random.Random(9)) for a in range(5)]
    assert first == [policy.delay(a, random.Random(9)) for a in range(5)]


def test_no_retry_once_attempts_are_used_up() -> None:
    policy = RetryPolicy(max_attempts=3)
    rng = random.Random(4)
    assert next_delay(policy, 0, rng, now=0.0, deadline=None) is not None
    assert next_delay(policy, 1, rng, now=0.0, deadline=None) is not None
    assert next_delay(policy, 2, rng, now=0.0, deadline=None) is None
    assert next_delay(RetryPolicy(max_attempts=1), 0, rng, now=0.0, deadline=None) is None


def test_no_delay_ends_at_or_past_the_deadline() -> None:
    policy = RetryPolicy(base_s=0.1, cap_s=2.0, max_attempts=5)
    rng = random.Random(5)
    refused = 0
    for _ in range(5000):
        now = rng.uniform(0, 100)
        deadline = now + rng.uniform(0, 2.5)
        attempt = rng.randrange(4)
        retry_after = rng.choice([None, 0.5, 3.0])
        delay = next_delay(policy, attempt, rng, now, deadline, retry_after)
        if delay is None:
            refused += 1
        else:
            assert now + delay < deadline
    assert 0 < refused < 5000


def test_a_deadline_already_passed_allows_no_retry() -> None:
    rng = random.Random(6)
    assert next_delay(RetryPolicy(), 0, rng, now=10.0, deadline=10.0) is None
    assert next_delay(RetryPolicy(), 0, rng, now=10.0, deadline=9.0) is None


def test_retry_after_is_honoured_when_longer_than_the_jitter() -> None:
    policy = RetryPolicy(base_s=0.1, cap_s=2.0)
    rng = random.Random(7)
    for _ in range(100):
        assert next_delay(policy, 0, rng, now=0.0, deadline=60.0, retry_after_s=1.5) == 1.5
    delay = next_delay(policy, 0, rng, now=0.0, deadline=60.0, retry_after_s=0.0)
    assert delay is not None and 0.0 <= delay <= 0.1


def test_a_retry_after_past_the_deadline_means_no_retry() -> None:
    rng = random.Random(8)
    assert next_delay(RetryPolicy(), 0, rng, now=50.0, deadline=60.0, retry_after_s=10.0) is None
    assert next_delay(RetryPolicy(), 0, rng, now=50.0, deadline=60.0, retry_after_s=9.9) == 9.9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_s": 0.0}, "need 0 < base_s <= cap_s"),
        ({"base_s": 3.0, "cap_s": 2.0}, "need 0 < base_s <= cap_s"),
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
    ],
)
def test_invalid_policy_is_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_a_quiet_insurer_may_use_the_minimum_reserve() -> None:
    budget = RetryBudget(FakeClock(), ratio=0.2, min_per_s=0.5, window_s=10.0)
    retries = 0
    while budget.can_retry():
        budget.record_retry()
        retries += 1
    assert retries == 5  # 0.5 / s over 10 s, with no calls at all
    assert budget.exhausted_total == 1


def test_budget_is_exhausted_under_a_failing_insurer() -> None:
    budget = RetryBudget(FakeClock(), ratio=0.2, min_per_s=1.0, window_s=10.0)
    policy = RetryPolicy(max_attempts=3)
    sent = 0
    for _ in range(100):  # every call fails, every failure would be retried twice
        budget.record_call()
        sent += 1
        for _ in range(policy.max_attempts - 1):
            if not budget.can_retry():
                break
            budget.record_retry()
            sent += 1
    # 100 calls + (20 % of them + a reserve of 10): not 300.
    assert sent == 100 + 20 + 10
    assert not budget.can_retry()


async def test_budget_recovers_as_the_window_slides() -> None:
    clock = FakeClock()
    budget = RetryBudget(clock, ratio=0.5, min_per_s=0.0, window_s=10.0)
    for _ in range(4):
        budget.record_call()
    budget.record_retry()
    budget.record_retry()
    assert not budget.can_retry()
    await clock.advance(5.0)
    budget.record_call()
    budget.record_call()  # 6 calls: 3 retries allowed, 2 used
    assert budget.can_retry()
    budget.record_retry()
    assert not budget.can_retry()
    await clock.advance(5.0)  # the first 4 calls and 2 retries leave the window
    assert budget.allowed() == 1.0  # 2 calls × 0.5
    assert not budget.can_retry()  # the retry at t = 5 is still counted
    await clock.advance(5.0)
    assert budget.allowed() == 0.0


def test_invalid_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="window_s > 0"):
        RetryBudget(FakeClock(), window_s=0.0)
    with pytest.raises(ValueError, match="ratio >= 0"):
        RetryBudget(FakeClock(), ratio=-0.1)
