"""The gateway's HTTP endpoint for the callbacks of an insurer that calls back (aiohttp).

    POST /callbacks/{insurer_id}   the insurer's signed callback
        200 {"status": "accepted"}    verified, stored and handed to the stream waiting for it
        200 {"status": "duplicate"}   verified, but its outcome was already here: nothing changes
        401 {"error", "field"}        unsigned, a signature that does not match, a stale timestamp
        409 {"error"}                 the same signed callback again within the window (a replay)
        400 {"error"}                 verified, but its body is off the dialect's schema
        404 {"error"}                 another insurer's path
        413                           a body over 256 KiB
        503 {"error"} + Retry-After   could not be stored (Redis unreachable): try again later

It answers 2xx only once the callback is accepted, so an insurer that got no 2xx tries again.
The signature is checked before the body is read as JSON; nothing of the body (it holds the
application's outcome, never personal data, but still) reaches the logs.
"""

from __future__ import annotations

import logging
from collections import Counter

from aiohttp import web
from aiohttp.typedefs import Handler

from insurer_gateway.dialects import CallbackDialect
from insurer_gateway.exchange import BadResponse
from insurer_gateway.inbox import CallbackInbox, InboxUnavailable, seal
from insurer_gateway.settings import GatewaySettings
from insurer_gateway.signatures import Verdict, verify
from osago_common.clock import Clock

log = logging.getLogger(__name__)

PATH = "/callbacks/{insurer_id}"
MAX_BODY_BYTES = 256 * 1024
RETRY_AFTER_S = 1


class CallbackServer:
    """The callback endpoint of one insurer's gateway; `start` answers the port it listens on."""

    def __init__(self, settings: GatewaySettings, dialect: CallbackDialect, inbox: CallbackInbox, clock: Clock) -> None:
        if not settings.callback_secret:
            raise ValueError("the callback endpoint needs the callback secret")
        self._settings = settings
        self._dialect = dialect
        self._inbox = inbox
        self._clock = clock
        self._secret = settings.callback_secret.encode()
        self._runner: web.AppRunner | None = None
        self.port = 0
        # Callbacks by what became of them: accepted, duplicate, or why refused.
        self.counts: Counter[str] = Counter()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors])
        app.router.add_post(PATH, self._callback)
        return app

    async def start(self) -> int:
        host, _, port = self._settings.callback_bind.rpartition(":")
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host.strip("[]") or None, int(port))
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    def url(self) -> str:
        """The callback URL the insurer is given: under the public base URL, else this replica's."""
        s = self._settings
        base = s.callback_base_url
        if base is None:
            host = s.callback_bind.rpartition(":")[0].strip("[]")
            base = f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
        return f"{base}/callbacks/{s.insurer_id}"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _callback(self, request: web.Request) -> web.Response:
        s, d = self._settings, self._dialect
        if request.match_info["insurer_id"] != s.insurer_id:
            return self._answer("wrong_insurer", 404, {"error": f"this endpoint takes {s.insurer_id}'s callbacks"})
        body = await request.read()
        timestamp = request.headers.get(d.timestamp_header)
        signature = request.headers.get(d.signature_header)
        verdict = verify(self._secret, timestamp, signature, body, self._clock.now().timestamp(), s.callback_window_s)
        if verdict is not Verdict.VALID:
            field = d.timestamp_header if verdict is Verdict.STALE else d.signature_header
            return self._answer(verdict.name.lower(), 401, {"error": verdict.value, "field": field})
        assert signature is not None  # a valid verdict has one
        try:
            pushed = d.read_callback(body)
        except BadResponse as exc:
            return self._answer("bad_body", 400, {"error": f"the callback is off the schema: {exc}"})
        try:
            if not await self._inbox.first_sight(f"{pushed.application_id}:{signature.strip()}"):
                return self._answer("replayed", 409, {"error": "this signed callback was received already"})
            new = await self._inbox.deliver(pushed.application_id, seal(body, self._clock.now()))
        except InboxUnavailable as exc:
            log.warning("callback not stored: insurer=%s application=%s %s", s.insurer_id, pushed.application_id, exc)
            self.counts["unavailable"] += 1
            return web.json_response(
                {"error": "the callback cannot be stored right now"},
                status=503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        outcome = "accepted" if new else "duplicate"
        self.counts[outcome] += 1
        log.debug("callback %s: insurer=%s application=%s", outcome, s.insurer_id, pushed.application_id)
        return web.json_response({"status": outcome})

    def _answer(self, why: str, status: int, body: dict[str, str]) -> web.Response:
        """A refusal, counted and logged (what was wrong, never the body)."""
        self.counts[why] += 1
        log.warning("callback refused: insurer=%s status=%s reason=%s", self._settings.insurer_id, status, why)
        return web.json_response(body, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP errors (an unknown path, a wrong method, a body too large) as JSON bodies."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return web.json_response({"error": (exc.reason or "error").lower()}, status=exc.status, headers=headers)
