"""The client's one error type, built from a gRPC status and its rich details."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from osago_common.grpc_errors import field_violations

_DETAILS_KEY = "grpc-status-details-bin"


class QuoteError(Exception):
    """A call failed. `code` is the gRPC status code's name ("INVALID_ARGUMENT", "UNAVAILABLE",
    ...); `field_violations` lists (field, description) pairs of a rejected application."""

    def __init__(
        self,
        code: str,
        message: str,
        field_violations: Sequence[tuple[str, str]] = (),
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field_violations: list[tuple[str, str]] = list(field_violations)
        # From google.rpc.RetryInfo (RESOURCE_EXHAUSTED): how long to wait before trying again.
        self.retry_after_s = retry_after_s


def from_rpc_error(error: grpc.aio.AioRpcError) -> QuoteError:
    """The QuoteError for a failed call, with the field violations of a google.rpc.BadRequest."""
    code = error.code()
    name = str(code.name) if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    message = str(error.details() or "")
    status = _rich_status(error)
    return QuoteError(name, message, field_violations(status) if status else [], _retry_after(status))


def _retry_after(status: status_pb2.Status | None) -> float | None:
    for detail in status.details if status is not None else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return float(info.retry_delay.ToTimedelta().total_seconds())
    return None


def _rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    try:
        status: status_pb2.Status | None = rpc_status.from_call(error)
        return status
    except ValueError:
        # The status line differs from the rich status (a proxy rewrote it): trust the details.
        pass
    except DecodeError:
        return None
    for key, value in error.trailing_metadata() or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None
