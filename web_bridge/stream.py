"""`GET /osago/quotes/{requestId}/stream`: a quote request's events over a WebSocket.

Each text message is one QuoteEvent in the protobuf JSON mapping. `?afterSeq=N` (or `after_seq`)
resumes after event N. After `sessionFinished` the server closes with 1000. A failure is one JSON
error message followed by a close code (see web_bridge.problems): 4400 bad request, 4403 no valid
access token, 4404 unknown request, 1013 try again (resume with afterSeq), 4504 timeout, 1011
upstream/internal error. A client that goes away cancels the aggregator stream.

The access token travels as a WebSocket subprotocol, since a browser cannot set headers on a
WebSocket: `new WebSocket(url, ["osago.v1", "access-token." + token])` (the server answers
`osago.v1`); other clients may send `Authorization: Bearer <token>` instead. Never in the URL,
which access logs keep.

Limits: streams in total and per client address (429 before the upgrade); a client that does
not take an event within the send timeout, or that talks (clients have nothing to send beyond a
few messages), is cut off (1008) without touching the other streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

import grpc
from aiohttp import WSCloseCode, hdrs, web
from osago.v1 import aggregator_service_pb2 as pb

from web_bridge import problems
from web_bridge.jsonmap import Violation
from web_bridge.problems import body, invalid, respond
from web_bridge.quotes import bearer, call_metadata, to_json
from web_bridge.security import client_address
from web_bridge.state import AGGREGATOR, SETTINGS, STREAMS

log = logging.getLogger(__name__)

AFTER_SEQ_PARAMETERS = ("afterSeq", "after_seq")
CLIENT_MESSAGE_LIMIT = 4096
PROTOCOL = "osago.v1"
TOKEN_PROTOCOL_PREFIX = "access-token."  # noqa: S105 - a protocol name, not a secret
CLOSE_POLICY = 1008


@dataclass(frozen=True)
class Ending:
    """How the server ends the socket: an optional last JSON message, then a close code."""

    code: int
    payload: problems.Body | None = None


def _after_seq(request: web.Request) -> int | Violation:
    for name in AFTER_SEQ_PARAMETERS:
        raw = request.query.get(name)
        if raw is None:
            continue
        if not raw.isascii() or not raw.isdigit():
            return Violation("after_seq", "must be a non-negative integer", None, name)
        return int(raw)
    return 0


def access_token(request: web.Request) -> str:
    """The token of an `access-token.<token>` subprotocol, else of `Authorization: Bearer`."""
    for offered in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(","):
        protocol = offered.strip()
        if protocol.startswith(TOKEN_PROTOCOL_PREFIX):
            return protocol.removeprefix(TOKEN_PROTOCOL_PREFIX)
    return bearer(request)


async def _pump(
    call: grpc.aio.UnaryStreamCall[pb.StreamQuoteEventsRequest, pb.StreamQuoteEventsResponse],
    ws: web.WebSocketResponse,
    send_timeout_s: float,
) -> Ending | None:
    """Forwards events until the session finishes or the stream fails; None if the client left."""
    try:
        async for response in call:
            text = json.dumps(to_json(response.event), ensure_ascii=False)
            try:
                await asyncio.wait_for(ws.send_str(text), send_timeout_s)
            except TimeoutError:
                log.info("cutting off a WebSocket client that does not read its events")
                return Ending(CLOSE_POLICY, body("too slow", "the client did not take its events in time"))
            if response.event.WhichOneof("payload") == "session_finished":
                break
    except grpc.aio.AioRpcError as error:
        failed = problems.from_grpc(error)
        return Ending(failed.close_code, failed.payload)
    except ConnectionError:
        return None
    return Ending(WSCloseCode.OK)


async def _until_closed(ws: web.WebSocketResponse, limit: int) -> Ending | None:
    """Reads (and ignores) what the client sends, until it closes or goes away (None), or it
    sent more than `limit` messages (a flood: the Ending that cuts it off)."""
    count = 0
    async for _message in ws:
        count += 1
        if count > limit:
            return Ending(CLOSE_POLICY, body("too many messages", "clients send nothing on this stream"))
    return None


async def stream_events(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    # Clients send nothing but control frames; a large message closes the socket (1009).
    ws = web.WebSocketResponse(heartbeat=settings.heartbeat_s, max_msg_size=CLIENT_MESSAGE_LIMIT, protocols=(PROTOCOL,))
    if not ws.can_prepare(request).ok:
        message = "this is a WebSocket endpoint: connect with Upgrade: websocket"
        return respond(426, body("upgrade required", message), {"Upgrade": "websocket", "Connection": "Upgrade"})
    streams = request.app[STREAMS]
    client = client_address(request)
    if len(streams.open) >= settings.max_streams or streams.per_client[client] >= settings.max_streams_per_client:
        text = "too many open streams; close one or retry shortly"
        return respond(429, body("too many requests", text, retryAfterS=1), {"Retry-After": "1"})
    await ws.prepare(request)
    streams.add(ws, client)
    try:
        after_seq = _after_seq(request)
        if isinstance(after_seq, Violation):
            await _end(ws, Ending(problems.CLOSE_BAD_REQUEST, invalid([after_seq])))
            return ws
        call = request.app[AGGREGATOR].stub.StreamQuoteEvents(
            pb.StreamQuoteEventsRequest(
                request_id=request.match_info["request_id"], after_seq=after_seq, access_token=access_token(request)
            ),
            timeout=settings.stream_timeout_s,
            metadata=call_metadata(request),
        )
        pump = asyncio.create_task(_pump(call, ws, settings.send_timeout_s), name="ws-pump")
        reader = asyncio.create_task(_until_closed(ws, settings.max_client_messages), name="ws-reader")
        try:
            await asyncio.wait((pump, reader), return_when=asyncio.FIRST_COMPLETED)
            ending = pump.result() if pump.done() else reader.result()
            if ending is not None:
                await _end(ws, ending)
                streams.finished += 1
            else:
                streams.abandoned += 1
        finally:
            for task in (pump, reader):
                task.cancel()
            await asyncio.gather(pump, reader, return_exceptions=True)
            call.cancel()
    except Exception:
        trace = problems.trace_id()
        log.exception("event stream failed, trace %s", trace)
        await _end(ws, Ending(problems.CLOSE_INTERNAL, body("internal error", "something went wrong", traceId=trace)))
    finally:
        streams.discard(ws, client)
    return ws


async def _end(ws: web.WebSocketResponse, ending: Ending) -> None:
    if ws.closed:
        return
    try:
        if ending.payload is not None:
            await ws.send_str(json.dumps(ending.payload, ensure_ascii=False))
        await ws.close(code=ending.code)
    except ConnectionError:
        pass  # the client is already gone
