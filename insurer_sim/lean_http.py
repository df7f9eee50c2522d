"""The lean HTTP/1.1 server of an insurer's own port: a plain asyncio protocol around httptools'
parser (llhttp, the parser of Node.js and uvicorn), carrying out what `insurer_sim.api` decides.

Why not aiohttp's web server here, as on the shared port: these ports carry every request the
gateways make (most of the simulator's work under load), and a profile of the simulator under
the load benchmark put a quarter of its CPU in aiohttp's server (request objects, routing, a
task and a response object per request) for three routes of JSON in and out. This server answers
a request within the parser's callback, with no task unless a fault delays or holds it. Written
by hand is only what no library does for a raw protocol: framing an answer (status line, four
headers, body), keep-alive, and the request's SERVER span when spans are recorded.

What it keeps of aiohttp's behaviour: a request body over 1 MiB is a 413 (aiohttp's default
limit), a request the parser refuses a 400, each JSON, then the connection closes; pipelined
requests are answered in order (reading pauses while 32 wait); the status line has the
request's HTTP version; an Upgrade header is ignored (the request answered as a plain one); the
first of a repeated header counts; a connection idle for 75 s is closed; a client that goes away
cancels the request it was waiting on (a delayed or held one), so nothing is issued for it. Its
own: a head over 64 KiB in all is a 431 (aiohttp refuses a line over 8 KiB with a 400).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from typing import TypeVar, cast

import httptools
from opentelemetry import propagate, trace

from insurer_sim.api import INTERNAL_ERROR, Answer, Held, InsurerApi, Late, Outcome, error_answer, json_answer, phrase
from insurer_sim.state import origin
from osago_common import tracing
from osago_common.clock import Clock

MAX_BODY_BYTES = 1024**2  # aiohttp's default client_max_size
MAX_HEAD_BYTES = 64 * 1024
MAX_PIPELINED = 32  # requests read ahead of the one being answered; then reading pauses
KEEPALIVE_S = 75.0  # aiohttp's keepalive_timeout
# The request headers anything here reads (lower case); the rest are parsed and dropped.
_KEPT = frozenset(
    {
        b"host",
        b"idempotency-key",
        b"expect",
        b"content-length",
        b"transfer-encoding",
        b"traceparent",
        b"tracestate",
        b"baggage",
    }
)
# A Host header used in payment links: a name or an address, maybe a port; anything else is
# replaced by the listener's own address (the header is the client's to choose).
_HOST = re.compile(r"[A-Za-z0-9._\-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")
_TRACER = "insurer_sim.lean_http"

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Refused(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "path", "refusal", "span", "version")

    def __init__(self, method: str, path: str, headers: dict[bytes, str], body: bytes, keep_alive: bool, version: str):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.version = version
        self.refusal = 0  # a status: not a request but the refusal of what followed the ones before
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
    """One client connection: parses requests, answers them in order.

    At most one request is being answered later (`_busy`: a delayed or held one); the requests
    read meanwhile wait in `_queue`, and so does the refusal of anything that cannot be taken
    after them, so every answer goes out in the order the requests came."""

    def __init__(self, server: LeanServer) -> None:
        self._server = server
        self._api = server.api
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._url = bytearray()
        self._headers: dict[bytes, str] = {}
        self._body: list[bytes] = []
        self._head_bytes = 0
        self._body_bytes = 0
        self._queue: deque[_Request] = deque()
        self._busy: asyncio.Task[None] | None = None
        self._closed = False
        self._refused = False  # a refusal is sent or queued: nothing more is read
        self._paused = False  # reading paused while MAX_PIPELINED requests wait
        self._idle: asyncio.TimerHandle | None = None
        self._last = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass of it
        if not self._server.listening:  # accepted just as the listener closed: the insurer is down
            self._closed = True
            self._transport.abort()
            return
        self._server.connections.add(self)
        self._touch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        if self._busy is not None:
            self._busy.cancel()  # the client went away: a delayed or held request ends here
        self._forget_queue()

    def data_received(self, data: bytes) -> None:
        if self._closed or self._refused:
            return
        self._last = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # The request asking to switch protocols (h2c, websocket) was answered as a plain
            # one, as aiohttp does; what follows it is HTTP/1.1 again, for a fresh parser.
            offset = exc.args[0] if exc.args else len(data)
            self._parser = httptools.HttpRequestParser(self)
            if offset < len(data):
                self.data_received(data[offset:])
        except httptools.HttpParserCallbackError as exc:
            context = exc.__context__
            if isinstance(context, _Refused):
                self._refuse(context.status)
            else:
                log.error("insurer simulator failed reading a request", exc_info=context)
                self._refuse(500)
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
        if name in _KEPT:  # the first of a repeated header counts, as in aiohttp's `headers.get`
            self._headers.setdefault(name, value.decode("utf-8", "surrogateescape"))

    def on_headers_complete(self) -> None:
        # Asked to, and answering nothing else right now: the body may come.
        if (
            self._headers.get(b"expect", "").lower() == "100-continue"
            and self._parser.get_http_version() == "1.1"
            and self._busy is None
            and not self._queue
            and self._transport is not None
        ):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > MAX_BODY_BYTES:
            raise _Refused(413)
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._closed or self._refused:
            return
        parser = self._parser
        headers = self._headers
        if parser.should_upgrade() and (headers.get(b"content-length", "0") != "0" or b"transfer-encoding" in headers):
            raise _Refused(400)  # llhttp takes what follows an upgrade's head as the new protocol's
        url = bytes(self._url)
        if not url.startswith(b"/"):  # the absolute form ("http://host/path"), as proxies send it
            url = _path_of(url)
        path = url.partition(b"?")[0].decode("latin-1")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = _Request(
            parser.get_method().decode("latin-1"),
            path,
            headers,
            body,
            parser.should_keep_alive(),
            parser.get_http_version(),
        )
        if self._busy is not None or self._queue:
            self._queue.append(request)
            if len(self._queue) >= MAX_PIPELINED and not self._paused and self._transport is not None:
                self._paused = True
                self._transport.pause_reading()
            return
        self._serve(request)

    # answering

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _Refused(431)

    def _serve(self, request: _Request) -> None:
        try:
            outcome = self._outcome(request)
            if isinstance(outcome, Answer):
                self._send(request, outcome)
            elif isinstance(outcome, Late | Held):
                task = self._loop.create_task(self._later(request, outcome))
                # However it ends (even cancelled before it ran), its span ends.
                task.add_done_callback(lambda _: _end_span(request, None))
                self._busy = task
            else:
                self._drop(request)
        except Exception:
            log.exception("insurer simulator failed on %s %s", request.method, request.path)
            _end_span(request, None)
            self.abort()

    def _outcome(self, request: _Request) -> Outcome:
        if tracing.recording():
            request.span = _start_span(self._api, request)
        key = request.headers.get(b"idempotency-key") or None
        origin = self._origin(request)
        return self._answer(request, lambda: self._api.handle(request.method, request.path, request.body, key, origin))

    def _answer(self, request: _Request, make: Callable[[], T]) -> T | Answer:
        """`make()` with the request's span current (its logs carry its trace), or a 500 without
        internal text if it fails (logged), as on the shared port."""
        try:
            if request.span is None:
                return make()
            with trace.use_span(request.span, end_on_exit=False):
                return make()
        except Exception:
            log.exception("insurer simulator failed on %s %s", request.method, request.path)
            return json_answer(INTERNAL_ERROR, 500)

    def _origin(self, request: _Request) -> str:
        host = request.headers.get(b"host")
        if host is None or not _HOST.fullmatch(host):
            return self._server.origin
        return f"http://{host.lower().removesuffix(':80')}"

    async def _later(self, request: _Request, outcome: Late | Held) -> None:
        try:
            if isinstance(outcome, Late):
                await self._server.clock.sleep(outcome.delay_s)
                answer = None if self._closed else self._answer(request, outcome.answer)
            else:
                await outcome.faults.hold()
                answer = None
        finally:
            self._busy = None
        try:
            if answer is None:
                self._drop(request)
            else:
                self._send(request, answer)
            self._next()
        except Exception:
            log.exception("insurer simulator failed on %s %s", request.method, request.path)
            self.abort()

    def _next(self) -> None:
        """Answers the requests that waited, in order, until one must wait in turn."""
        while self._queue and self._busy is None and not self._closed:
            request = self._queue.popleft()
            if request.refusal:
                self._send_refusal(request.refusal)
                return
            self._serve(request)
        if self._paused and not self._closed and len(self._queue) < MAX_PIPELINED and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    def _send(self, request: _Request, answer: Answer) -> None:
        transport = self._transport
        if transport is None or self._closed:
            _end_span(request, None)
            return
        keep_alive = request.keep_alive
        head = [
            b"HTTP/%s %d %s\r\n" % (request.version.encode(), answer.status, phrase(answer.status, "Unknown").encode()),
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
        """Answers what cannot be taken with `status` once the requests before it are answered,
        then closes; nothing more is read."""
        if self._closed or self._refused:
            return
        self._refused = True
        if self._busy is None and not self._queue:
            self._send_refusal(status)
            return
        refusal = _Request("", "", {}, b"", False, "1.1")
        refusal.refusal = status
        self._queue.append(refusal)

    def _send_refusal(self, status: int) -> None:
        self._send(_Request("GET", "", {}, b"", False, "1.1"), error_answer(status))
        self._close()

    def _forget_queue(self) -> None:
        for request in self._queue:
            _end_span(request, None)
        self._queue.clear()

    def _close(self) -> None:
        self._closed = True
        self._forget_queue()
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Drops the connection at once, unsent data too (the insurer going down, a stop's grace
        run out, a failure of this server's own)."""
        self._closed = True
        if self._busy is not None:
            self._busy.cancel()
        self._forget_queue()
        if self._transport is not None:
            self._transport.abort()

    @property
    def busy(self) -> asyncio.Task[None] | None:
        return self._busy

    def _touch(self) -> None:
        """Notes activity; closes the connection once it has been idle KEEPALIVE_S (one timer,
        re-armed only when it fires early)."""
        self._last = self._loop.time()
        if self._idle is None:
            self._idle = self._loop.call_at(self._last + KEEPALIVE_S, self._check_idle)

    def _check_idle(self) -> None:
        self._idle = None
        if self._closed:
            return
        now = self._loop.time()
        if self._busy is None and not self._queue and now - self._last >= KEEPALIVE_S:
            self._close()
        else:
            self._idle = self._loop.call_at(max(self._last + KEEPALIVE_S, now + 1.0), self._check_idle)


def _path_of(url: bytes) -> bytes:
    """The path of an absolute URL (b"" when it has none, or is not a URL)."""
    try:
        return httptools.parse_url(url).path or b""
    except httptools.HttpParserInvalidURLError:
        return b""


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
