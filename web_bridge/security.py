"""The browser boundary of web_bridge.

- **Security headers** on every response: a Content-Security-Policy allowing the page's own
  files and calls only (no inline script, no framing), nosniff, no referrer, and HSTS when the
  edge says the request came over HTTPS.
- **Origins**: a request that carries an `Origin` (every browser's cross-site POST, fetch and
  WebSocket does) must come from the page's own origin or one of `allowed_origins`; any other
  gets 403 before anything runs. CORS answers (preflights included) name only allowed origins.
- **JSON only**: JSON endpoints take `application/json` bodies and nothing else (415). A
  `text/plain` POST is a CORS "simple request" any site could send through a visitor's browser.
- **Who the client is**: the peer's address, or behind a trusted edge the last hop of
  `X-Forwarded-For` (per-client stream limits and the aggregator's rate limits use it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from web_bridge.problems import body, respond
from web_bridge.state import SETTINGS

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
HSTS = "max-age=31536000; includeSubDomains"
CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "content-type, authorization, idempotency-key, x-grpc-web, x-user-agent, grpc-timeout"
CORS_EXPOSE = "location, retry-after, grpc-status, grpc-message, grpc-status-details-bin"
JSON_TYPES = frozenset({"application/json"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the security headers, and CORS for an allowed foreign origin."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.headers.get("X-Forwarded-Proto", "").lower() == "https" or request.secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    origin = request.headers.get(hdrs.ORIGIN)
    if origin and origin in request.app[SETTINGS].allowed_origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
        response.headers.add(hdrs.VARY, "Origin")


def same_origin(request: web.Request, origin: str) -> bool:
    """Whether `origin` names the host this request was sent to (the page's own origin)."""
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == request.host.lower()


def origin_allowed(request: web.Request) -> bool:
    """No Origin (not a browser's cross-site request), the page's own, or a configured one."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return True
    return origin in request.app[SETTINGS].allowed_origins or same_origin(request, origin)


@web.middleware
async def check_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """403 for a request from a foreign origin to anything but the page's files; answers CORS
    preflights itself."""
    if request.path.startswith(("/osago/", "/osago.v1.", "/grpc.")):
        if not origin_allowed(request):
            return respond(403, body("forbidden origin", "this origin may not call the API"))
        if request.method == hdrs.METH_OPTIONS:
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Methods": CORS_METHODS,
                    "Access-Control-Allow-Headers": CORS_HEADERS,
                    "Access-Control-Max-Age": "600",
                },
            )
    return await handler(request)


def require_json(request: web.Request) -> web.Response | None:
    """None for an `application/json` body, else the 415 to send."""
    media = request.headers.get(hdrs.CONTENT_TYPE, "").split(";", 1)[0].strip().lower()
    if media in JSON_TYPES:
        return None
    message = "send the body as Content-Type: application/json"
    return respond(415, body("unsupported media type", message), {"Accept-Post": "application/json"})


def client_address(request: web.Request) -> str:
    """The browser's address: the last `X-Forwarded-For` hop when the edge in front is trusted
    (OSAGO_BRIDGE_TRUST_FORWARDED), else the peer's."""
    if request.app[SETTINGS].trust_forwarded:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last and len(last) <= 64 and last.isprintable():
            return last
    return request.remote or ""
