"""The one rich INVALID_ARGUMENT every server sends, read back by the one reader clients use."""

from __future__ import annotations

from google.rpc import code_pb2, error_details_pb2, status_pb2

from osago_common.grpc_errors import field_violations, invalid_argument

VIOLATIONS = [("application.vehicle.vin", "must be 17 characters"), ("request_id", "required")]


def sent_status() -> status_pb2.Status:
    """The google.rpc.Status as it travels, in the call's trailing metadata."""
    trailers = dict(invalid_argument(VIOLATIONS).trailing_metadata)
    details = trailers["grpc-status-details-bin"]
    assert isinstance(details, bytes)  # a -bin key: binary metadata
    return status_pb2.Status.FromString(details)


def test_invalid_argument_carries_every_violation_in_a_bad_request() -> None:
    status = sent_status()
    assert (status.code, status.message) == (code_pb2.INVALID_ARGUMENT, "invalid request: 2 field violation(s)")
    [detail] = status.details
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == VIOLATIONS


def test_the_reader_gives_back_the_violations_and_skips_other_details() -> None:
    status = sent_status()
    status.details.add().Pack(error_details_pb2.RetryInfo())
    assert field_violations(status) == VIOLATIONS
