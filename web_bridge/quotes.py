"""REST: `POST /osago/quotes` creates a quote request, `GET /osago/quotes/{requestId}` reads it.

Bodies use the protobuf JSON mapping (lowerCamelCase names, enums by name, int64 as strings).
A create without an `Idempotency-Key` gets a generated one, so the channel's retries can never
create a second request; a repeat with the same key and application answers 201 with the same
request (the aggregator does not say whether it created it just now). The 201's `accessToken`
is what reading the request needs: `Authorization: Bearer <accessToken>` on the GET (403
without a valid one, whether or not the id exists), and on the WebSocket (web_bridge.stream).
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import timedelta
from typing import Any

import grpc
from aiohttp import hdrs, web
from google.protobuf import json_format
from google.protobuf.message import Message
from osago.v1 import aggregator_service_pb2 as pb

from osago_common import tracing
from web_bridge import problems
from web_bridge.jsonmap import Violation, parse_application
from web_bridge.problems import body, invalid, respond
from web_bridge.security import client_address, require_json
from web_bridge.state import AGGREGATOR, SETTINGS

TIME_LIMIT_PARAMETERS = ("timeLimitS", "time_limit_s")


def to_json(message: Message) -> dict[str, Any]:
    """The protobuf JSON mapping, fields with default values included."""
    result: dict[str, Any] = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return result


class BadBody(Exception):
    """The body cannot be read as a JSON document; carries the response to send."""

    def __init__(self, status: int, payload: problems.Body) -> None:
        super().__init__(payload["message"])
        self.status = status
        self.payload = payload


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"an object has the key {json.dumps(key)} twice")
        result[key] = value
    return result


async def read_document(request: web.Request, limit: int) -> object:
    """The body as a JSON document (strict: no NaN, no repeated keys), or BadBody."""
    too_large = BadBody(413, body("payload too large", f"the body must be at most {limit} bytes"))
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    if not raw.strip():
        violation = Violation("application", "is required: send the application as a JSON object", "")
        raise BadBody(400, invalid([violation], "the body is empty"))
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise BadBody(400, body("malformed JSON", "the body is not UTF-8 text")) from None
    except json.JSONDecodeError as error:
        where = {"line": error.lineno, "column": error.colno}
        raise BadBody(400, body("malformed JSON", f"the body is not valid JSON: {error.msg}", **where)) from None
    except (ValueError, RecursionError) as error:
        text = str(error) if isinstance(error, ValueError) else "nested too deeply"
        raise BadBody(400, body("malformed JSON", f"the body is not valid JSON: {text}")) from None


def _time_limit(request: web.Request, violations: list[Violation]) -> float | None:
    for name in TIME_LIMIT_PARAMETERS:
        raw = request.query.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            violations.append(Violation("time_limit", "must be a positive number of seconds", None, name))
            return None
        return value
    return None


def call_metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    """What the aggregator learns about the caller: the client's address (its rate limits), and
    the trace context of this request's span (so the aggregator's spans are its children)."""
    return (("x-osago-client", client_address(request)), *tracing.inject_metadata())


def bearer(request: web.Request) -> str:
    scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def create_quote(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    refused = require_json(request)
    if refused is not None:
        return refused
    try:
        document = await read_document(request, settings.max_body_bytes)
    except BadBody as bad:
        return respond(bad.status, bad.payload)
    if not isinstance(document, dict):
        violation = Violation("application", "must be a JSON object", "")
        return respond(400, invalid([violation], "the body must be a JSON object: the application"))
    application, violations = parse_application(document)
    time_limit = _time_limit(request, violations)
    if violations:
        return respond(400, invalid(violations))
    call = pb.CreateQuoteRequestRequest(idempotency_key=request.headers.get("Idempotency-Key") or str(uuid.uuid4()))
    call.application.CopyFrom(application)
    call.application.SetInParent()
    if time_limit is not None:
        call.time_limit.FromTimedelta(timedelta(seconds=time_limit))
    try:
        response = await request.app[AGGREGATOR].stub.CreateQuoteRequest(
            call, timeout=settings.request_timeout_s, metadata=call_metadata(request)
        )
    except grpc.aio.AioRpcError as error:
        failed = problems.from_grpc(error)
        return respond(failed.status, failed.payload, failed.headers)
    quote_request = response.quote_request
    location = request.app.router["quote"].url_for(request_id=quote_request.request_id)
    return respond(201, to_json(quote_request), {"Location": str(location)})


async def get_quote(request: web.Request) -> web.Response:
    call = pb.GetQuoteRequestRequest(request_id=request.match_info["request_id"], access_token=bearer(request))
    timeout = request.app[SETTINGS].request_timeout_s
    try:
        response = await request.app[AGGREGATOR].stub.GetQuoteRequest(
            call, timeout=timeout, metadata=call_metadata(request)
        )
    except grpc.aio.AioRpcError as error:
        failed = problems.from_grpc(error)
        return respond(failed.status, failed.payload, failed.headers)
    return respond(200, to_json(response.quote_request))
