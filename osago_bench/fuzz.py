"""`osago bench fuzz`: malformed and random input on every network entry point of a secure mesh
(TLS and mTLS, `osago up --secure` as processes, Envoy in front when installed) for a while,
then whether everything still serves.

Entry points and what is sent (from one seeded generator, so a run can be repeated):
- **grpc**, the aggregator over mTLS as core-app: bytes that are no protobuf, truncated and
  bit-flipped messages, applications with random texts (control characters, look-alikes,
  huge strings, odd Unicode), unknown ids and forged tokens; and a channel without a client
  certificate, which the TLS handshake must refuse;
- **grpc-web**, through the page's edge: truncated, oversized and garbage frames, bad base64,
  wrong content types, the same messages as above;
- **rest**: bodies that are garbage, invalid UTF-8, deeply nested or huge JSON, wrong content
  types, random applications; reads with unknown ids and forged tokens;
- **websocket**: unknown ids, forged tokens, floods of messages.

Every answer is classed (a gRPC code, an HTTP status, a WebSocket close code). The run fails on
an UNKNOWN or INTERNAL status, an HTTP 5xx, a call left without an answer for CALL_TIMEOUT_S (a
hang), a service process that exited, or services that are not healthy afterwards (health
SERVING, /readyz 200, and one real session finishing).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import application_pb2

from osago_client import QuoteClient, QuoteError
from osago_mesh.processes import MeshOptions, RunningMesh, process_mesh

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "moscow-young-driver.json"
SERVICE = "/osago.v1.AggregatorService/"
METHODS = ("GetQuotes", "CreateQuoteRequest", "GetQuoteRequest", "StreamQuoteEvents")
STREAMING = frozenset({"GetQuotes", "StreamQuoteEvents"})
BAD_GRPC = frozenset({"UNKNOWN", "INTERNAL"})
CALL_TIMEOUT_S = 5.0
# Texts that have broken parsers and validators elsewhere.
NASTY = (
    "",
    "\x00",
    "\u202e",
    "\u200b",
    "A\r\nB",
    "Ａ１２３ВС７７",
    "А123ВС77",
    "A123BC77",
    "ХТА21099042765439",
    "😀" * 20,
    "\ud7ff",
    "'; DROP TABLE osago_requests; --",
    "{{7*7}}",
    "../../etc/passwd",
    "%00%0a",
    "ё" * 200,
    "x" * 5000,
)


@dataclass(frozen=True)
class FuzzConfig:
    seconds: float = 60.0
    seed: int | None = None
    concurrency: int = 8
    insurers: int = 3
    time_scale: float = 0.05
    session_limit_s: float = 5.0


@dataclass
class FuzzReport:
    seconds: float
    seed: int
    edge: str
    # entry point -> answer class -> count
    answers: dict[str, collections.Counter[str]] = field(default_factory=dict)
    crashes: int = 0
    bad: list[str] = field(default_factory=list)
    # Calls that got no answer within the call timeout: a hang, so a failure.
    unanswered: list[str] = field(default_factory=list)
    healthy_after: bool = False
    session_after: str = ""

    def count(self, entry: str, answer: str, what: str) -> None:
        self.answers.setdefault(entry, collections.Counter())[answer] += 1
        if "TimeoutError" in answer:
            self.unanswered.append(f"{entry}: {what}")
        if answer in BAD_GRPC or answer.startswith(("HTTP 5", "grpc UNKNOWN", "grpc INTERNAL")):
            self.bad.append(f"{entry}: {what} -> {answer}")

    @property
    def requests(self) -> int:
        return sum(sum(c.values()) for c in self.answers.values())

    @property
    def ok(self) -> bool:
        clean = not self.bad and not self.unanswered and self.crashes == 0
        return clean and self.healthy_after and self.session_after == "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "seed": self.seed,
            "edge": self.edge,
            "requests": self.requests,
            "by_entry_point": {entry: dict(sorted(c.items())) for entry, c in sorted(self.answers.items())},
            "crashes": self.crashes,
            "unknown_internal_or_5xx": len(self.bad),
            "examples": self.bad[:10],
            "unanswered_examples": self.unanswered[:5],
            "healthy_after": self.healthy_after,
            "session_after": self.session_after,
            "ok": self.ok,
        }


def table(report: FuzzReport) -> str:
    lines = [f"fuzz {report.seconds:g} s, seed {report.seed}, edge {report.edge}: {report.requests} requests"]
    for entry, counter in sorted(report.answers.items()):
        answers = ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))
        lines.append(f"  {entry:<10} {sum(counter.values()):>6}  {answers}")
    lines += [
        f"crashes                  {report.crashes}",
        f"UNKNOWN/INTERNAL/5xx     {len(report.bad)}",
        *(f"  {example}" for example in report.bad[:10]),
        f"healthy afterwards       {'yes' if report.healthy_after else 'NO'}",
        f"a session afterwards     {report.session_after}",
        f"verdict                  {'ok' if report.ok else 'FAILED'}",
    ]
    return "\n".join(lines)


class Inputs:
    """The random material, from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.example = json.loads(EXAMPLE.read_text(encoding="utf-8"))

    def text(self) -> str:
        r = self.rng
        choice = r.random()
        if choice < 0.4:
            return r.choice(NASTY)
        if choice < 0.7:
            return "".join(chr(r.randrange(0, 0x3000)) for _ in range(r.randrange(0, 40)))
        return "".join(r.choice("АВЕКМНОРСТУХABCDEFGHJKLMNPRSTUVWXYZ0123456789 -'") for _ in range(r.randrange(0, 30)))

    def application_json(self) -> dict[str, Any]:
        """The example with a few fields replaced by random values."""
        document: dict[str, Any] = json.loads(json.dumps(self.example))
        for _ in range(self.rng.randrange(1, 5)):
            self._mutate(document)
        return document

    def _mutate(self, node: Any) -> None:
        r = self.rng
        while isinstance(node, dict) and node:
            key = r.choice(list(node))
            value = node[key]
            if isinstance(value, dict | list) and value and r.random() < 0.7:
                node = value if isinstance(value, dict) else r.choice(value)
                continue
            node[key] = r.choice(
                [self.text(), r.randrange(-(2**40), 2**40), None, [], {}, True, 1.5, [self.text()] * r.randrange(0, 50)]
            )
            return

    def application(self) -> application_pb2.Application | None:
        application = application_pb2.Application()
        try:
            json_format.ParseDict(self.application_json(), application)
        except (json_format.ParseError, ValueError, TypeError):
            return None
        return application

    def message_bytes(self, method: str) -> bytes:
        r = self.rng
        choice = r.random()
        if choice < 0.25:
            return r.randbytes(r.randrange(0, 300))
        if method in ("GetQuotes", "CreateQuoteRequest"):
            application = self.application() or application_pb2.Application()
            message: Any = (pb.GetQuotesRequest if method == "GetQuotes" else pb.CreateQuoteRequestRequest)(
                application=application, idempotency_key=self.text()[:200]
            )
            message.time_limit.FromSeconds(1)
        elif method == "GetQuoteRequest":
            message = pb.GetQuoteRequestRequest(request_id=self.request_id(), access_token=self.token())
        else:
            message = pb.StreamQuoteEventsRequest(
                request_id=self.request_id(), after_seq=r.randrange(-5, 50), access_token=self.token()
            )
        data = bytearray(message.SerializeToString())
        if choice < 0.45 and data:
            del data[r.randrange(len(data)) :]  # truncated
        elif choice < 0.6 and data:
            for _ in range(r.randrange(1, 4)):
                data[r.randrange(len(data))] ^= 1 << r.randrange(8)  # bit flips
        return bytes(data)

    def request_id(self) -> str:
        r = self.rng
        return r.choice([r.randbytes(16).hex(), self.text()[:200], "", "0" * 32])

    def token(self) -> str:
        r = self.rng
        forged = ".".join(
            base64.urlsafe_b64encode(r.randbytes(r.randrange(1, 40))).decode().rstrip("=") for _ in range(3)
        )
        return r.choice(["", forged, self.text()[:100], "eyJhbGciOiJub25lIn0.eyJyaWQiOiJ4In0."])

    def json_body(self) -> bytes:
        r = self.rng
        choice = r.random()
        if choice < 0.15:
            return r.randbytes(r.randrange(0, 500))
        if choice < 0.25:
            return b'{"vehicle": "\xff\xfe"}'
        if choice < 0.35:
            depth = r.randrange(100, 5000)
            return b"[" * depth + b"]" * depth
        if choice < 0.4:
            return json.dumps({"vehicle": {"make": "x" * r.randrange(10_000, 80_000)}}).encode()
        return json.dumps(self.application_json(), ensure_ascii=r.random() < 0.5).encode()

    def content_type(self) -> str:
        return self.rng.choice(
            ["application/json"] * 4
            + ["text/plain", "application/x-www-form-urlencoded", "", "application/json; charset=latin1"]
        )

    def grpc_web_body(self, method: str) -> tuple[bytes, str]:
        r = self.rng
        message = self.message_bytes(method)
        framed = bytes([0]) + len(message).to_bytes(4, "big") + message
        choice = r.random()
        if choice < 0.15:
            framed = framed[: r.randrange(0, max(1, len(framed)))]  # truncated frame
        elif choice < 0.25:
            framed = bytes([0]) + (2**31).to_bytes(4, "big") + message  # claims a huge message
        elif choice < 0.35:
            framed = r.randbytes(r.randrange(0, 100))
        elif choice < 0.4:
            framed = framed + framed  # two messages
        elif choice < 0.45:
            framed = bytes([0x80]) + framed[1:]  # trailers, not a message
        if r.random() < 0.3:
            text = base64.b64encode(framed)
            if r.random() < 0.3:
                text = text + b"!!*"
            return text, "application/grpc-web-text"
        return framed, r.choice(["application/grpc-web+proto"] * 6 + ["application/grpc-web", "text/plain"])


async def _grpc(report: FuzzReport, inputs: Inputs, channel: grpc.aio.Channel) -> None:
    method = inputs.rng.choice(METHODS)
    data = inputs.message_bytes(method)
    path = SERVICE + method
    try:
        if method in STREAMING:
            stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(path)
            call = stream(data, timeout=CALL_TIMEOUT_S)
            async for _ in call:
                break  # the first answer says how it was taken
            call.cancel()
            code = "OK"
        else:
            unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)
            await unary(data, timeout=CALL_TIMEOUT_S)
            code = "OK"
    except grpc.aio.AioRpcError as error:
        code = error.code().name
    report.count("grpc", code, f"{method} {data[:40]!r}")


async def _no_credentials(report: FuzzReport, target: str) -> None:
    """A caller without a client certificate: the handshake itself refuses it."""
    async with grpc.aio.insecure_channel(target) as plain:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = plain.unary_unary(SERVICE + "GetQuoteRequest")
        try:
            await call(b"", timeout=2.0)
            code = "OK"
        except grpc.aio.AioRpcError as error:
            code = error.code().name
    # A plaintext caller never reaches a handler: the connection is refused as a transport failure.
    report.count("grpc", f"no-credentials {code}" if code != "OK" else "no-credentials ACCEPTED", "plaintext call")
    if code == "OK":
        report.bad.append("grpc: a plaintext call without credentials was answered")


async def _grpc_web(report: FuzzReport, inputs: Inputs, http: aiohttp.ClientSession, page: str) -> None:
    method = inputs.rng.choice(METHODS)
    body, content_type = inputs.grpc_web_body(method)
    headers = {"Content-Type": content_type, "X-Grpc-Web": "1"}
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
    try:
        async with http.post(f"{page}{SERVICE[1:]}{method}", data=body, headers=headers, timeout=timeout) as response:
            status = response.headers.get("grpc-status")
            if status is None and response.status == 200:
                # A real stream: the status is in the trailers frame; read the start of the body.
                with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                    await asyncio.wait_for(response.content.read(64), 2.0)
                status = "0"
            name = grpc.StatusCode.OK.name
            for code in grpc.StatusCode:
                if str(code.value[0]) == status:
                    name = code.name
            answer = f"HTTP {response.status}" if response.status != 200 else f"grpc {name}"
    except (aiohttp.ClientError, TimeoutError) as error:
        answer = f"client error {type(error).__name__}"
    report.count("grpc-web", answer, f"{method} {content_type} {body[:40]!r}")


async def _rest(report: FuzzReport, inputs: Inputs, http: aiohttp.ClientSession, page: str) -> None:
    r = inputs.rng
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
    try:
        if r.random() < 0.7:
            body, content_type = inputs.json_body(), inputs.content_type()
            headers = {"Content-Type": content_type} if content_type else {}
            if r.random() < 0.2:
                headers["Idempotency-Key"] = inputs.text()[:300].encode("ascii", "replace").decode()
            async with http.post(
                f"{page}osago/quotes?timeLimitS=1", data=body, headers=headers, timeout=timeout
            ) as got:
                answer, what = f"HTTP {got.status}", f"POST {content_type} {body[:40]!r}"
        else:
            request_id = inputs.request_id().encode("ascii", "replace").decode().replace("/", "_") or "x"
            token = inputs.token().encode("ascii", "replace").decode()
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(f"{page}osago/quotes/{request_id}", headers=headers, timeout=timeout) as got:
                answer, what = f"HTTP {got.status}", f"GET {request_id[:40]!r}"
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        answer, what = f"client error {type(error).__name__}", "request"
    report.count("rest", answer, what)


async def _websocket(report: FuzzReport, inputs: Inputs, http: aiohttp.ClientSession, page: str) -> None:
    r = inputs.rng
    request_id = inputs.request_id().encode("ascii", "replace").decode().replace("/", "_").replace("?", "_") or "x"
    url = f"{page.replace('http', 'ws', 1)}osago/quotes/{request_id}/stream?afterSeq={r.randrange(-2, 5)}"
    token = base64.urlsafe_b64encode(r.randbytes(20)).decode().rstrip("=")
    try:
        async with http.ws_connect(
            url,
            protocols=("osago.v1", f"access-token.{token}"),
            timeout=aiohttp.ClientWSTimeout(ws_close=CALL_TIMEOUT_S),
        ) as ws:
            for _ in range(r.choice([0, 0, 5, 40])):
                await ws.send_str(inputs.text()[:1000] or "x")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CALL_TIMEOUT_S):
                    async for _ in ws:
                        pass
            answer = f"close {ws.close_code}"
    except aiohttp.WSServerHandshakeError as error:
        answer = f"HTTP {error.status}"
    except (aiohttp.ClientError, ConnectionError) as error:
        answer = f"client error {type(error).__name__}"
    report.count("websocket", answer, url)


async def _healthy(mesh: RunningMesh, http: aiohttp.ClientSession) -> bool:
    if any(child.process.returncode is not None for child in mesh.children.values()):
        return False
    credentials = mesh.client_credentials()
    assert credentials is not None
    async with grpc.aio.secure_channel(mesh.aggregator, credentials) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError:
            return False
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return False
    assert mesh.page is not None
    async with http.get(f"{mesh.page}readyz") as response:
        return response.status == 200


async def _a_session(mesh: RunningMesh, application: application_pb2.Application) -> str:
    try:
        async with QuoteClient(mesh.target, credentials=mesh.client_credentials(), timeout_s=30) as client:
            events = [event async for event in client.get_quotes(application, time_limit_s=3, fresh=True)]
    except QuoteError as error:
        return f"failed: {error.code}"
    return "ok" if events and events[-1].HasField("session_finished") else "did not finish"


async def run_fuzz(config: FuzzConfig) -> FuzzReport:
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
    options = MeshOptions(
        insurers=config.insurers,
        time_scale=config.time_scale,
        aggregator_port=0,
        sim_port=0,
        page_port=0,
        session_limit_s=config.session_limit_s,
        seed=seed,
        secure=True,
    )
    quiet = {"OSAGO_LOG_LEVEL": "WARNING"}
    async with process_mesh(options, env=quiet) as mesh, aiohttp.ClientSession() as http:
        assert mesh.page is not None
        report = FuzzReport(config.seconds, seed, mesh.edge or "")
        credentials = mesh.client_credentials()
        assert credentials is not None
        loop = asyncio.get_running_loop()
        end = loop.time() + config.seconds
        async with grpc.aio.secure_channel(mesh.aggregator, credentials) as channel:

            async def sender(n: int) -> None:
                inputs = Inputs(random.Random(seed * 1000 + n))
                while loop.time() < end:
                    kind = inputs.rng.random()
                    if kind < 0.35:
                        await _grpc(report, inputs, channel)
                    elif kind < 0.6:
                        await _grpc_web(report, inputs, http, mesh.page or "")
                    elif kind < 0.85:
                        await _rest(report, inputs, http, mesh.page or "")
                    elif kind < 0.98:
                        await _websocket(report, inputs, http, mesh.page or "")
                    else:
                        await _no_credentials(report, mesh.aggregator)

            await asyncio.gather(*(sender(n) for n in range(max(1, config.concurrency))))
        report.crashes = sum(1 for child in mesh.children.values() if child.process.returncode is not None)
        report.healthy_after = await _healthy(mesh, http)
        application = application_pb2.Application()
        json_format.ParseDict(Inputs(random.Random(0)).example, application)
        report.session_after = await _a_session(mesh, application)
        return report


async def run_fuzz_command(config: FuzzConfig, *, as_json: bool, out: TextIO = sys.stdout) -> int:
    """Exits 0 when nothing crashed, nothing answered UNKNOWN/INTERNAL/5xx, and all is healthy."""
    report = await run_fuzz(config)
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=False), file=out, flush=True)
    else:
        print(table(report), file=out)
    return 0 if report.ok else 1
