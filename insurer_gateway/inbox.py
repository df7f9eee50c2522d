"""Where a verified callback waits for the `RequestOffer` that wants it.

An insurer calls back to the public callback URL, which lands on any replica of the insurer's
gateway; the stream waiting for that application is held by one of them. The callback endpoint
(insurer_gateway.callback_http) hands the verified body to the inbox, keyed by the insurer's
application id:

- it is stored (once: a repeat changes nothing) for `keep_s`, so a stream that asks later finds
  it: one that was re-routed or resumed on another replica, or that was still waiting for the
  insurer's answer to its create when the callback came;
- the replica holding the stream is woken: at once when that is this replica, else through Redis
  pub/sub. Every replica of the insurer listens on one channel, `osago:callbacks:<insurer>`, whose
  messages are application ids; the one with a stream waiting for that id reads the stored body.

`first_sight` remembers each (application, signature) for the replay window, so a callback
replayed within it is refused; one replayed later fails the timestamp window.

What the endpoint stores is the body sealed with the moment it accepted it (`seal`), so the
stream that takes it, on whichever replica and however late, stamps the offer with that moment
(`unseal`): the gateway obtained the offer when the callback was accepted, not when the stream
got round to it. The inbox itself keeps and hands over bytes, whatever they hold.

Two implementations: `LocalInbox` (in-process, for a single replica: no Redis configured) and
`RedisInbox` (shared by every replica). Redis unreachable: a callback whose stream is held here is
still delivered; any other is refused (InboxUnavailable, the endpoint answers 503 and the insurer
tries again later), and streams waiting on the pub/sub are covered by the safety-net poll, which
also looks for a stored body before it asks the insurer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import deque
from collections.abc import Iterator
from datetime import datetime
from typing import Generic, Protocol, TypeVar

import redis.asyncio

from osago_common.clock import Clock

log = logging.getLogger(__name__)

V = TypeVar("V")

# Keys of the shared inbox, each followed by the insurer id (and the application id, or a digest).
RESULT_KEY_PREFIX = "osago:callback:"
SEEN_KEY_PREFIX = "osago:callback-seen:"
CHANNEL_PREFIX = "osago:callbacks:"
# The subscriber wakes this often when idle, so a dead connection is noticed (a health check).
LISTEN_TIMEOUT_S = 5.0


# A sealed body: this marker, the acceptance time (ISO 8601), a newline, then the body as the
# insurer sent it (a JSON body never starts with the marker).
SEAL = b"@"


def seal(body: bytes, accepted_at: datetime) -> bytes:
    """The body as the inbox keeps it: with the moment the endpoint accepted it."""
    return SEAL + accepted_at.isoformat().encode() + b"\n" + body


def unseal(data: bytes) -> tuple[bytes, datetime | None]:
    """The body and the moment it was accepted (None: a body stored without a seal)."""
    if not data.startswith(SEAL):
        return data, None
    stamp, newline, body = data[len(SEAL) :].partition(b"\n")
    try:
        accepted_at = datetime.fromisoformat(stamp.decode())
    except (UnicodeDecodeError, ValueError):
        return data, None
    return (body, accepted_at) if newline else (data, None)


class InboxUnavailable(Exception):
    """The callback could be neither stored nor handed to its stream; the insurer should retry."""


class CallbackInbox(Protocol):
    async def start(self) -> None:
        """Starts listening for callbacks that land on other replicas."""

    async def close(self) -> None: ...

    async def first_sight(self, key: str) -> bool:
        """Remembers `key` for the replay window; False when it was seen within it."""

    async def deliver(self, application_id: str, body: bytes) -> bool:
        """Stores the body (unless one is stored already) and wakes the stream waiting for it;
        True when it is new. Raises InboxUnavailable."""

    async def stored(self, application_id: str) -> bytes | None:
        """The body stored for the application, if any (None as well when it cannot be read)."""

    def waiting(self, application_id: str) -> contextlib.AbstractContextManager[asyncio.Future[bytes]]:
        """A future the application's body is set on when its callback arrives, while inside."""


class Waiters:
    """The streams of this process waiting for a callback, by application id."""

    def __init__(self) -> None:
        self._futures: dict[str, set[asyncio.Future[bytes]]] = {}

    @contextlib.contextmanager
    def waiting(self, application_id: str) -> Iterator[asyncio.Future[bytes]]:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._futures.setdefault(application_id, set()).add(future)
        try:
            yield future
        finally:
            futures = self._futures.get(application_id)
            if futures is not None:
                futures.discard(future)
                if not futures:
                    del self._futures[application_id]
            future.cancel()

    def wake(self, application_id: str, body: bytes) -> bool:
        """Hands the body to every stream waiting for it; whether there was one."""
        futures = self._futures.get(application_id, ())
        for future in futures:
            if not future.done():
                future.set_result(body)
        return bool(futures)

    def __contains__(self, application_id: object) -> bool:
        return application_id in self._futures

    def ids(self) -> list[str]:
        return list(self._futures)


class _Expiring(Generic[V]):
    """Values kept for `ttl_s` seconds of the clock from when they were added."""

    def __init__(self, clock: Clock, ttl_s: float) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._items: dict[str, tuple[float, V]] = {}
        self._order: deque[tuple[float, str]] = deque()  # by expiry: every entry lives as long

    def get(self, key: str) -> V | None:
        self._prune()
        item = self._items.get(key)
        return None if item is None else item[1]

    def add(self, key: str, value: V) -> bool:
        """Keeps `value` under `key` unless a live one is there; whether it was added."""
        self._prune()
        if key in self._items:
            return False
        expires = self._clock.monotonic() + self._ttl_s
        self._items[key] = (expires, value)
        self._order.append((expires, key))
        return True

    def __len__(self) -> int:
        self._prune()
        return len(self._items)

    def _prune(self) -> None:
        now = self._clock.monotonic()
        while self._order and self._order[0][0] <= now:
            expires, key = self._order.popleft()
            item = self._items.get(key)
            if item is not None and item[0] == expires:
                del self._items[key]


class LocalInbox:
    """The inbox of a single replica, in this process."""

    def __init__(self, clock: Clock, keep_s: float, window_s: float) -> None:
        self._results: _Expiring[bytes] = _Expiring(clock, keep_s)
        self._seen: _Expiring[bool] = _Expiring(clock, window_s)
        self._waiters = Waiters()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def first_sight(self, key: str) -> bool:
        return self._seen.add(key, True)

    async def deliver(self, application_id: str, body: bytes) -> bool:
        new = self._results.add(application_id, body)
        self._waiters.wake(application_id, body)
        return new

    async def stored(self, application_id: str) -> bytes | None:
        return self._results.get(application_id)

    def waiting(self, application_id: str) -> contextlib.AbstractContextManager[asyncio.Future[bytes]]:
        return self._waiters.waiting(application_id)

    @property
    def kept(self) -> int:
        """Bodies kept now."""
        return len(self._results)


class RedisInbox:
    """The inbox every replica of one insurer's gateway shares through Redis.

    `commands` runs the short commands (with the gateway's Redis timeout); `listener` holds the
    subscription (its reads wait for messages, so it needs no read timeout).
    """

    def __init__(
        self,
        commands: redis.asyncio.Redis,
        listener: redis.asyncio.Redis,
        insurer_id: str,
        clock: Clock,
        *,
        keep_s: float,
        window_s: float,
        retry_s: float,
    ) -> None:
        self._redis = commands
        self._listener = listener
        self._results = f"{RESULT_KEY_PREFIX}{insurer_id}:"
        self._seen = f"{SEEN_KEY_PREFIX}{insurer_id}:"
        self.channel = f"{CHANNEL_PREFIX}{insurer_id}"
        self._clock = clock
        self._keep_ms = max(1, round(keep_s * 1000))
        self._window_ms = max(1, round(window_s * 1000))
        self._retry_s = retry_s
        self._waiters = Waiters()
        self._task: asyncio.Task[None] | None = None
        # Set while subscribed (a replica that just started may miss a message before it is;
        # the stored body and the safety-net poll cover that).
        self.listening = asyncio.Event()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def first_sight(self, key: str) -> bool:
        digest = hashlib.sha256(key.encode()).hexdigest()
        try:
            return bool(await self._redis.set(self._seen + digest, b"1", nx=True, px=self._window_ms))
        except redis.RedisError as exc:
            raise InboxUnavailable(f"Redis: {type(exc).__name__}") from None

    async def deliver(self, application_id: str, body: bytes) -> bool:
        try:
            new = bool(await self._redis.set(self._results + application_id, body, nx=True, px=self._keep_ms))
            if new:
                await self._redis.publish(self.channel, application_id)
        except redis.RedisError as exc:
            if self._waiters.wake(application_id, body):
                return True  # its stream is held here: delivered without Redis
            raise InboxUnavailable(f"Redis: {type(exc).__name__}") from None
        self._waiters.wake(application_id, body)  # held here: no need to wait for the message
        return new

    async def stored(self, application_id: str) -> bytes | None:
        try:
            body = await self._redis.get(self._results + application_id)
        except redis.RedisError as exc:
            log.warning(
                "callback inbox %s: Redis failed (%s) reading a stored callback", self.channel, type(exc).__name__
            )
            return None
        if body is None:
            return None
        return body if isinstance(body, bytes) else body.encode()

    def waiting(self, application_id: str) -> contextlib.AbstractContextManager[asyncio.Future[bytes]]:
        return self._waiters.waiting(application_id)

    async def _listen(self) -> None:
        while True:
            try:
                async with self._listener.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    self.listening.set()
                    # Callbacks that came while this replica was not subscribed.
                    for application_id in self._waiters.ids():
                        await self._arrived(application_id)
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=LISTEN_TIMEOUT_S)
                        if message is not None and message.get("type") == "message":
                            await self._arrived(_text(message.get("data")))
            except (redis.RedisError, OSError) as exc:
                if self.listening.is_set():
                    log.warning("callback inbox %s: subscription lost (%s)", self.channel, type(exc).__name__)
                self.listening.clear()
                await self._clock.sleep(self._retry_s)

    async def _arrived(self, application_id: str) -> None:
        """A callback for `application_id` landed somewhere: wake its stream if it is here."""
        if application_id not in self._waiters:
            return
        body = await self.stored(application_id)
        if body is not None:
            self._waiters.wake(application_id, body)


def _text(data: object) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)
