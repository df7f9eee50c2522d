"""The gateway's reasons for no offer, as the contract (osago.v1.FailureReason) says them."""

from __future__ import annotations

from osago.v1 import quote_pb2

from insurer_gateway.outcomes import Reason
from insurer_gateway.servicer import FAILURE_REASONS

# The contract's reasons no insurer causes: the aggregator gives them (our own failure, the
# customer going away), and an unset field reads UNSPECIFIED.
AGGREGATOR_ONLY = {"FAILURE_REASON_UNSPECIFIED", "FAILURE_REASON_INTERNAL", "FAILURE_REASON_CANCELLED"}


def test_every_gateway_reason_maps_to_the_contract_reason_of_the_same_meaning() -> None:
    named = {reason: quote_pb2.FailureReason.Name(value) for reason, value in FAILURE_REASONS.items()}
    assert named == {
        Reason.TIMEOUT: "FAILURE_REASON_TIMEOUT",
        Reason.DEADLINE: "FAILURE_REASON_DEADLINE",
        Reason.UNAVAILABLE: "FAILURE_REASON_UNAVAILABLE",
        Reason.DECLINED: "FAILURE_REASON_DECLINED",
        Reason.RATE_LIMITED: "FAILURE_REASON_RATE_LIMITED",
        Reason.CIRCUIT_OPEN: "FAILURE_REASON_CIRCUIT_OPEN",
        Reason.BAD_RESPONSE: "FAILURE_REASON_BAD_RESPONSE",
        Reason.INSURER_ERROR: "FAILURE_REASON_INSURER_ERROR",
    }
    assert set(FAILURE_REASONS) == set(Reason)  # a new Reason without a mapping fails here


def test_the_mapping_is_a_bijection_onto_every_reason_an_insurer_can_cause() -> None:
    values = list(FAILURE_REASONS.values())
    assert len(set(values)) == len(values) == len(Reason)  # no two reasons merge
    insurer_caused = {v.number for v in quote_pb2.FailureReason.DESCRIPTOR.values if v.name not in AGGREGATOR_ONLY}
    # A reason added to the contract for insurers needs a Reason too.
    assert set(values) == insurer_caused
