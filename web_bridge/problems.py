"""Where errors become JSON: every error body is `{"error": ..., "message": ...}` (plus details),
gRPC statuses map to one HTTP status and one WebSocket close code, and anything unexpected is a
JSON 500 "internal error" with a trace id in the log, never internal text.

| aggregator status | HTTP | WebSocket close |
|---|---|---|
| INVALID_ARGUMENT | 400 `invalid request` + `fieldViolations` | 4400 |
| NOT_FOUND | 404 `not found` | 4404 |
| PERMISSION_DENIED | 403 `forbidden` (the same whether or not the request exists) | 4403 |
| RESOURCE_EXHAUSTED | 429 `too many requests` + `Retry-After` (from google.rpc.RetryInfo) | 1013 (try again) |
| UNAVAILABLE, CANCELLED | 503 `upstream unavailable` | 1013 (try again) |
| DEADLINE_EXCEEDED | 504 `upstream timeout` | 4504 |
| anything else | 502 `upstream error` (trace id) | 1011 |
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web

from osago_client.errors import from_rpc_error
from web_bridge.jsonmap import Violation, json_path

log = logging.getLogger(__name__)

Body = dict[str, Any]

# Request fields that travel outside the JSON body, and what carries them.
PARAMETERS = {"idempotency_key": "Idempotency-Key", "time_limit": "timeLimitS", "after_seq": "afterSeq"}

CLOSE_BAD_REQUEST = 4400
CLOSE_NOT_FOUND = 4404
CLOSE_FORBIDDEN = 4403
CLOSE_TIMEOUT = 4504
CLOSE_TRY_AGAIN = 1013
CLOSE_INTERNAL = 1011

_REASONS = {
    404: ("not found", "no such resource"),
    405: ("method not allowed", "this resource does not support the method"),
    413: ("payload too large", "the body is too large"),
}


def body(error: str, message: str, **extra: Any) -> Body:
    return {"error": error, "message": message, **extra}


def respond(status: int, payload: Body, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(payload, status=status, headers=headers)


def invalid(violations: list[Violation], message: str = "") -> Body:
    text = message or f"the request has {len(violations)} mistake(s); see fieldViolations"
    return body("invalid request", text, fieldViolations=[v.to_json() for v in violations])


def trace_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class Upstream:
    """A failed aggregator call, as an HTTP status, a WebSocket close code and a JSON body."""

    status: int
    close_code: int
    payload: Body
    headers: dict[str, str] | None = None


def from_grpc(error: grpc.aio.AioRpcError) -> Upstream:
    failure = from_rpc_error(error)
    if failure.code == "INVALID_ARGUMENT":
        violations = [
            Violation(field, description, json_path(field), PARAMETERS.get(field))
            for field, description in failure.field_violations
        ]
        return Upstream(400, CLOSE_BAD_REQUEST, invalid(violations))
    if failure.code == "NOT_FOUND":
        return Upstream(404, CLOSE_NOT_FOUND, body("not found", "no such quote request"))
    if failure.code == "PERMISSION_DENIED":
        text = "present the access token returned when this quote request was created"
        return Upstream(403, CLOSE_FORBIDDEN, body("forbidden", text))
    if failure.code == "RESOURCE_EXHAUSTED":
        wait = max(1, math.ceil(failure.retry_after_s or 1.0))
        text = f"too many requests; retry in {wait} s"
        return Upstream(
            429, CLOSE_TRY_AGAIN, body("too many requests", text, retryAfterS=wait), {"Retry-After": str(wait)}
        )
    if failure.code in ("UNAVAILABLE", "CANCELLED"):
        text = "the quote service is unavailable; try again shortly"
        return Upstream(503, CLOSE_TRY_AGAIN, body("upstream unavailable", text))
    if failure.code == "DEADLINE_EXCEEDED":
        return Upstream(504, CLOSE_TIMEOUT, body("upstream timeout", "the quote service did not answer in time"))
    trace = trace_id()
    # The aggregator's own messages carry no personal data (its "internal error" has a trace id).
    log.error("aggregator call failed with %s (%s), trace %s", failure.code, failure.message, trace)
    return Upstream(502, CLOSE_INTERNAL, body("upstream error", "the quote service failed", traceId=trace))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP errors raised by aiohttp (404, 405, 413, ...) get JSON bodies; any other exception
    becomes a JSON 500 "internal error" whose trace id is logged with the traceback."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        error_name, message = _REASONS.get(error.status, (error.reason.lower(), error.reason))
        headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        return respond(error.status, body(error_name, message), headers)
    except Exception:
        trace = trace_id()
        log.exception("unhandled error in %s %s, trace %s", request.method, request.path, trace)
        return respond(500, body("internal error", "something went wrong on our side", traceId=trace))
