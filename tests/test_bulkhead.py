"""The bulkhead: a fixed number of in-flight calls, and immediate rejection beyond it."""

from __future__ import annotations

import pytest

from insurer_gateway.bulkhead import Bulkhead


def test_admits_up_to_max_in_flight_then_rejects_at_once() -> None:
    bulkhead = Bulkhead(2)
    assert bulkhead.try_enter() and bulkhead.try_enter()
    assert bulkhead.in_flight == 2
    assert not bulkhead.try_enter()
    assert bulkhead.rejected_total == 1
    bulkhead.leave()
    assert bulkhead.in_flight == 1
    assert bulkhead.try_enter()


def test_leave_without_enter_is_an_error() -> None:
    bulkhead = Bulkhead(1)
    with pytest.raises(RuntimeError, match="without a matching try_enter"):
        bulkhead.leave()


def test_max_in_flight_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_in_flight must be at least 1"):
        Bulkhead(0)
