"""`GET /osago/quotes/{requestId}/stream`: a quote request's events over a WebSocket.

Each text message is one QuoteEvent in the protobuf JSON mapping. `?afterSeq=N` (or `after_seq`)
resumes after event N. After `sessionFinished` the server closes with 1000. A failure is one JSON
error message followed by a close code (see web_bridge.problems): 4400 bad request, 4404 unknown
request, 1013 try again (resume with afterSeq), 4504 timeout, 1011 upstream/internal error.
A client that goes away cancels the aggregator stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

import grpc
from aiohttp import WSCloseCode, web
from osago.v1 import aggregator_service_pb2 as pb

from web_bridge import problems
from web_bridge.jsonmap import Violation
from web_bridge.problems import body, invalid, respond
from web_bridge.quotes import to_json
from web_bridge.state import AGGREGATOR, SETTINGS, STREAMS

log = logging.getLogger(__name__)

AFTER_SEQ_PARAMETERS = ("afterSeq", "after_seq")
CLIENT_MESSAGE_LIMIT = 4096


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


async def _pump(
    call: grpc.aio.UnaryStreamCall[pb.StreamQuoteEventsRequest, pb.StreamQuoteEventsResponse], ws: web.WebSocketResponse
) -> Ending | None:
    """Forwards events until the session finishes or the stream fails; None if the client left."""
    try:
        async for response in call:
            await ws.send_str(json.dumps(to_json(response.event), ensure_ascii=False))
            if response.event.WhichOneof("payload") == "session_finished":
                break
    except grpc.aio.AioRpcError as error:
        failed = problems.from_grpc(error)
        return Ending(failed.close_code, failed.payload)
    except ConnectionError:
        return None
    return Ending(WSCloseCode.OK)


async def _until_closed(ws: web.WebSocketResponse) -> None:
    """Reads (and ignores) what the client sends, until it closes or goes away."""
    async for _message in ws:
        pass


async def stream_events(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    # Clients send nothing but control frames; a large message closes the socket (1009).
    ws = web.WebSocketResponse(heartbeat=settings.heartbeat_s, max_msg_size=CLIENT_MESSAGE_LIMIT)
    if not ws.can_prepare(request).ok:
        message = "this is a WebSocket endpoint: connect with Upgrade: websocket"
        return respond(426, body("upgrade required", message), {"Upgrade": "websocket", "Connection": "Upgrade"})
    await ws.prepare(request)
    streams = request.app[STREAMS]
    streams.add(ws)
    try:
        after_seq = _after_seq(request)
        if isinstance(after_seq, Violation):
            await _end(ws, Ending(problems.CLOSE_BAD_REQUEST, invalid([after_seq])))
            return ws
        call = request.app[AGGREGATOR].stub.StreamQuoteEvents(
            pb.StreamQuoteEventsRequest(request_id=request.match_info["request_id"], after_seq=after_seq),
            timeout=settings.stream_timeout_s,
        )
        pump = asyncio.create_task(_pump(call, ws), name="ws-pump")
        reader = asyncio.create_task(_until_closed(ws), name="ws-reader")
        try:
            await asyncio.wait((pump, reader), return_when=asyncio.FIRST_COMPLETED)
            ending = pump.result() if pump.done() else None
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
        streams.discard(ws)
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
