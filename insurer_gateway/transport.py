"""The one place HTTP calls to the insurer are made (aiohttp). The guard (breaker, quota,
bulkhead, retries: insurer_gateway.guard) wraps `AiohttpTransport.__call__`."""

from __future__ import annotations

import aiohttp

from insurer_gateway.exchange import (
    HttpCall,
    HttpProtocolError,
    HttpResponse,
    HttpTimeout,
    HttpUnavailable,
)
from insurer_gateway.settings import GatewaySettings
from osago_common import tracing

# Insurer answers are a few kilobytes; a larger body is a broken insurer.
MAX_BODY_BYTES = 1 << 20


def open_session(settings: GatewaySettings) -> aiohttp.ClientSession:
    """The gateway's one HTTP client session (its connection pool toward the insurer)."""
    connector = aiohttp.TCPConnector(limit=settings.http_max_connections)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.http_timeout_s),
        raise_for_status=False,
        # A CLIENT span per HTTP call, `traceparent` in its headers (osago_common.tracing).
        trace_configs=tracing.http_client_trace_configs(),
        # Insurer APIs are called without cookies: no jar to store and filter them per request.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


class AiohttpTransport:
    """Makes an `HttpCall` against the insurer's base URL within a total timeout."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        # Most calls have the same timeout (the HTTP limit, unless the deadline is nearer): the
        # last one made is reused rather than built per call.
        self._timeout = aiohttp.ClientTimeout()

    async def __call__(self, call: HttpCall, timeout: float) -> HttpResponse:
        url = self._base_url + call.path
        if self._timeout.total != timeout:
            self._timeout = aiohttp.ClientTimeout(total=timeout)
        try:
            # Leaving the block (normally, by error or by cancellation) releases or closes the
            # connection, so a cancelled call stops at once.
            async with self._session.request(
                call.method,
                url,
                json=call.json,
                headers=call.headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                body = await _read(response)
                headers = {k.lower(): v for k, v in response.headers.items()}
                return HttpResponse(response.status, headers, body)
        except TimeoutError:
            raise HttpTimeout(f"{call.method} timed out after {timeout:.3g} s") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise HttpUnavailable(f"{call.method}: {type(exc).__name__}") from None
        except aiohttp.ClientResponseError as exc:
            raise HttpProtocolError(f"{call.method}: invalid HTTP response ({exc.status})") from None
        except aiohttp.ClientError as exc:
            raise HttpUnavailable(f"{call.method}: {type(exc).__name__}") from None


async def _read(response: aiohttp.ClientResponse) -> bytes:
    if response.content_length is not None:
        if response.content_length > MAX_BODY_BYTES:
            raise HttpProtocolError(f"body of {response.content_length} bytes is too large")
        return await response.read()  # the length is known and small: in one go
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HttpProtocolError("body is too large")
        chunks.append(chunk)
    return b"".join(chunks)
