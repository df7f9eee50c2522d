"""The lean HTTP/1.1 server of an insurer's own port: a plain asyncio protocol around httptools'
parser (llhttp, the parser of Node.js and uvicorn), carrying out what `insurer_sim.api` decides.

Why not aiohttp's web server here, as on the shared port: these ports carry every request the
gateways make (most of the simulator's work under load), and a profile of the simulator under
the load benchmark put a quarter of its CPU in aiohttp's server (request objects, routing, a
task and a response object per request) for three routes of JSON in and out. This server answers
a request within the parser's callback, with no task unless a fault delays or holds it. Written
by hand is only what no library does for a raw protocol: framing an answer (status line, four
headers, body), keep-alive, and the request's SERVER span when spans are recorded.

What it keeps of aiohttp's behaviour: a request body over 1 MiB is a 413, a head over 64 KiB a
431, a request the parser refuses a 400 (each JSON, then the connection closes); pipelined
requests are answered in order; a connection idle for 75 s is closed; a client that goes away
cancels the request it was waiting on (a delayed or held one), so nothing is issued for it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import TypeVar, cast

import httptools
from opentelemetry import propagate, trace

from insurer_sim.api import INTERNAL_ERROR, Answer, Held, InsurerApi, Late, Outcome, error_answer, json_answer
from insurer_sim.state import origin
from osago_common import tracing
from osago_common.clock import Clock

MAX_BODY_BYTES = 1024**2  # aiohttp's default client_max_size
MAX_HEAD_BYTES = 64 * 1024
MAX_PIPELINED = 32  # requests read ahead of the one being answered; more closes the connection
KEEPALIVE_S = 75.0  # aiohttp's keepalive_timeout
# The request headers anything here reads (lower case); the rest are parsed and dropped.
_KEPT = frozenset({b"host", b"idempotency-key", b"expect", b"traceparent", b"tracestate", b"baggage"})
# A Host header used in payment links: a name or an address, maybe a port; anything else is
# replaced by the listener's own address (the header is the client's to choose).
_HOST = re.compile(r"[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")
_TRACER = "insurer_sim.lean_http"

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Refused(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "path", "span", "version")

    def __init__(self, method: str, path: str, headers: dict[bytes, str], body: bytes, keep_alive: bool, version: str):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.version = version
        self.span: trace.Span | None = None


class _Date:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True).encode()
        return self._value


_DATE = _Date()


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, answers them in order."""

    def __init__(self, server: LeanServer) -> None:
        self._server = server
        self._api = server.api
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = bytearray()
        self._headers: dict[bytes, str] = {}
        self._body: list[bytes] = []
        self._head_bytes = 0
        self._body_bytes = 0
        self._queue: deque[_Request] = deque()
        self._busy: asyncio.Task[None] | None = None
        self._closed = False
        self._idle: asyncio.TimerHandle | None = None
        self._last = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass of it
        self._server.connections.add(self)
        self._touch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        if self._busy is not None:
            self._busy.cancel()  # the client went away: a delayed or held request ends here
        for request in self._queue:
            _end_span(request, None)
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            context = exc.__context__
            self._refuse(context.status if isinstance(context, _Refused) else 400)
        except httptools.HttpParserUpgrade:
            self._refuse(400)  # no protocol to switch to
        except httptools.HttpParserError:
            self._refuse(400)

    # httptools' callbacks

    def on_message_begin(self) -> None:
        self._url = bytearray()
        self._headers = {}
        self._body = []
        self._head_bytes = self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        name = name.lower()
        if name in _KEPT:
            self._headers[name] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._headers.get(b"expect", "").lower() == "100-continue" and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > MAX_BODY_BYTES:
            raise _Refused(413)
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        url = bytes(self._url)
        if not url.startswith(b"/"):  # the absolute form ("http://host/path"), as proxies send it
            url = _path_of(url)
        path = url.partition(b"?")[0].decode("latin-1")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = _Request(
            parser.get_method().decode("latin-1"),
            path,
            self._headers,
            body,
            parser.should_keep_alive(),
            parser.get_http_version(),
        )
        if self._busy is not None or self._queue:
            if len(self._queue) >= MAX_PIPELINED:
                raise _Refused(503)
            self._queue.append(request)
            return
        self._serve(request)

    # answering

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _Refused(431)

    def _serve(self, request: _Request) -> None:
        outcome = self._outcome(request)
        if isinstance(outcome, Answer):
            self._send(request, outcome)
        elif isinstance(outcome, Late | Held):
            self._busy = asyncio.get_running_loop().create_task(self._later(request, outcome))
        else:
            self._drop(request)

    def _outcome(self, request: _Request) -> Outcome:
        if tracing.recording():
            request.span = _start_span(self._api, request)
        key = request.headers.get(b"idempotency-key") or None
        origin = self._origin(request)
        return self._answer(request, lambda: self._api.handle(request.method, request.path, request.body, key, origin))

    def _answer(self, request: _Request, make: Callable[[], T]) -> T | Answer:
        """`make()`, or a 500 without internal text if it fails (logged), as on the shared port."""
        try:
            return make()
        except Exception:
            log.exception("insurer simulator failed on %s %s", request.method, request.path)
            return json_answer(INTERNAL_ERROR, 500)

    def _origin(self, request: _Request) -> str:
        host = request.headers.get(b"host")
        if host is None or not _HOST.fullmatch(host):
            return self._server.origin
        return f"http://{host.lower()}"

    async def _later(self, request: _Request, outcome: Late | Held) -> None:
        try:
            if isinstance(outcome, Late):
                await self._server.clock.sleep(outcome.delay_s)
                answer = self._answer(request, outcome.answer) if not self._closed else None
            else:
                await outcome.faults.hold()
                answer = None
        except asyncio.CancelledError:
            _end_span(request, None)
            raise
        finally:
            self._busy = None
        if answer is None:
            self._drop(request)
        else:
            self._send(request, answer)
        self._next()

    def _next(self) -> None:
        while self._queue and self._busy is None and not self._closed:
            self._serve(self._queue.popleft())

    def _send(self, request: _Request, answer: Answer) -> None:
        transport = self._transport
        if transport is None or self._closed:
            _end_span(request, None)
            return
        keep_alive = request.keep_alive
        head = [
            b"HTTP/1.1 %d %s\r\n" % (answer.status, _reason(answer.status)),
            b"Content-Type: %s\r\nContent-Length: %d\r\nDate: %s\r\nServer: osago-sim\r\n"
            % (answer.content_type.encode(), len(answer.body), _DATE()),
        ]
        for name, value in answer.headers.items():
            head.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        if not keep_alive:
            head.append(b"Connection: close\r\n")
        elif request.version == "1.0":
            head.append(b"Connection: keep-alive\r\n")
        head.append(b"\r\n")
        if request.method != "HEAD":
            head.append(answer.body)
        transport.write(b"".join(head))
        _end_span(request, answer.status)
        if keep_alive:
            self._touch()
        else:
            self._close()

    def _drop(self, request: _Request) -> None:
        """Closes the connection without an answer (the `down` and `blackhole` faults)."""
        _end_span(request, None)
        self._close()

    def _refuse(self, status: int) -> None:
        """Answers a request the parser could not take, then closes."""
        if self._transport is not None and not self._closed:
            answer = error_answer(status)
            refusal = _Request("GET", "", {}, b"", False, "1.1")
            self._send(refusal, answer)
        self._close()

    def _close(self) -> None:
        self._closed = True
        self._queue.clear()
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drops the connection at once (the insurer going down, or the server stopping)."""
        if self._busy is not None:
            self._busy.cancel()
        self._close()

    @property
    def busy(self) -> asyncio.Task[None] | None:
        return self._busy

    def _touch(self) -> None:
        """Notes activity; closes the connection once it has been idle KEEPALIVE_S (one timer,
        re-armed only when it fires early)."""
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        if self._idle is None:
            self._idle = loop.call_at(self._last + KEEPALIVE_S, self._check_idle)

    def _check_idle(self) -> None:
        self._idle = None
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if self._busy is None and not self._queue and loop.time() - self._last >= KEEPALIVE_S:
            self._close()
        else:
            self._idle = loop.call_at(max(self._last + KEEPALIVE_S, loop.time() + 1.0), self._check_idle)


def _path_of(url: bytes) -> bytes:
    """The path of an absolute URL (b"" when it has none, or is not a URL)."""
    try:
        return httptools.parse_url(url).path or b""
    except httptools.HttpParserInvalidURLError:
        return b""


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def _start_span(api: InsurerApi, request: _Request) -> trace.Span:
    """The request's SERVER span, continuing the caller's trace from its headers."""
    carrier = {k.decode(): v for k, v in request.headers.items()}
    route = api.route_template(request.path) or request.path.split("?")[0]
    return tracing.tracer(_TRACER).start_span(
        f"{request.method} {route}",
        context=propagate.extract(carrier),
        kind=trace.SpanKind.SERVER,
        attributes={"http.method": request.method, "http.target": request.path, "http.route": route},
    )


def _end_span(request: _Request, status: int | None) -> None:
    span, request.span = request.span, None
    if span is None:
        return
    if status is None:
        span.set_status(trace.StatusCode.ERROR, "closed without an answer")
    else:
        span.set_attribute("http.status_code", status)
        if status >= 500:
            span.set_status(trace.StatusCode.ERROR)
    span.end()


class LeanServer:
    """Serves `api` on `host`: `open` listens (port 0: a free one; later the same one again),
    `close` stops listening and drops every connection, `stop` lets requests in flight end first."""

    def __init__(self, api: InsurerApi, host: str, clock: Clock, backlog: int) -> None:
        self.api = api
        self.clock = clock
        self.host = host
        self.port = 0
        self.origin = ""
        self.connections: set[_Connection] = set()
        self._backlog = backlog
        self._server: asyncio.Server | None = None

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def open(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        factory: Callable[[], _Connection] = lambda: _Connection(self)  # noqa: E731
        self._server = await loop.create_server(factory, self.host, self.port, backlog=self._backlog)
        self.port = self._server.sockets[0].getsockname()[1]
        self.origin = origin(self.host, self.port)

    async def close(self) -> None:
        """Stops listening and drops every open connection, as a crashed server would."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for connection in list(self.connections):
            connection.abort()
        if server is not None:
            await server.wait_closed()

    async def stop(self, grace_s: float) -> None:
        """Stops listening; requests in flight get up to `grace_s` to be answered; then closes."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        busy = [t for c in self.connections if (t := c.busy) is not None]
        if busy:
            await asyncio.wait(busy, timeout=grace_s)
        for connection in list(self.connections):
            connection.abort()
        if server is not None:
            await server.wait_closed()
