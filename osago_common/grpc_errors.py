"""The rich errors, written once for every server and read once for every client:
INVALID_ARGUMENT carrying a google.rpc.BadRequest with one field violation per broken rule (field
path and rule, never the value sent: it may be personal data); and the google.rpc.RetryInfo
that RESOURCE_EXHAUSTED carries (written by osago_common.grpc_guard.resource_exhausted)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NoReturn, TypeVar

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

# Any RPC's request and response types: abort_invalid serves every method.
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def invalid_argument(violations: Iterable[tuple[str, str]]) -> grpc.Status:
    """INVALID_ARGUMENT with a google.rpc.BadRequest of the (field, description) violations."""
    bad_request = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations]
    )
    count = len(bad_request.field_violations)
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=f"invalid request: {count} field violation(s)")
    status.details.add().Pack(bad_request)
    converted: grpc.Status = rpc_status.to_status(status)  # grpcio-status is untyped
    return converted


async def abort_invalid(
    context: grpc.aio.ServicerContext[Req, Resp], violations: Iterable[tuple[str, str]]
) -> NoReturn:
    """Ends the call with `invalid_argument(violations)`."""
    await context.abort_with_status(invalid_argument(violations))
    raise AssertionError("abort returned")  # pragma: no cover - abort always raises


def field_violations(status: status_pb2.Status) -> list[tuple[str, str]]:
    """The (field, description) pairs of every google.rpc.BadRequest among the status' details."""
    violations: list[tuple[str, str]] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            violations.extend((str(v.field), str(v.description)) for v in bad_request.field_violations)
    return violations


def retry_delay_s(status: status_pb2.Status) -> float | None:
    """Seconds to wait before trying again, from the status' google.rpc.RetryInfo, if any."""
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info) and info.HasField("retry_delay"):
            return float(info.retry_delay.ToTimedelta().total_seconds())
    return None
