"""Callbacks of the insurers whose dialect has them: once an application's outcome is ready, it
is POSTed to the partner's URL, signed with the secret shared with that partner; a delivery the
partner does not accept (no 2xx) is tried again with exponential backoff, and every attempt is
recorded. The first attempt the partner accepts issues the outcome into the ledger (as the first
poll that returns it would); a later one, or a poll, adds nothing.

The run-time faults of callbacks (insurer_sim.faults: never, twice, late, bad signature, target
down) are carried out here. Time comes from the injected clock and the HTTP POST from the injected
`Sender`, so the schedule is exact under a FakeClock; insurer_sim.app gives the real sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from insurer_sim.insurer import Application, SimInsurer
from osago_common.clock import Clock

log = logging.getLogger(__name__)

# Attempts per delivery, the first included, and the backoff between them: 1 s, 2 s, 4 s … up to
# 60 s, times the simulator's time_scale (simulated time, like the insurers' latencies).
MAX_ATTEMPTS = 8
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0


class DeliveryError(Exception):
    """A POST gave no HTTP answer (refused, reset, timed out); the message says which."""


# POSTs (url, body, headers) and answers the HTTP status, or raises DeliveryError.
Sender = Callable[[str, bytes, Mapping[str, str]], Awaitable[int]]


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt of a callback.

    `result`: "accepted" (a 2xx), "refused" (another status), "failed" (no answer), or
    "withheld" (the `callback_never` fault: nothing was sent).
    """

    insurer_id: str
    application_id: str
    reference: str
    delivery_id: str
    attempt: int
    at: datetime  # when it was sent (withheld: when it would have been)
    result: str
    status: int | None = None
    detail: str = ""
    # Signed with a wrong secret (the `callback_bad_signature` fault).
    forged: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "insurer_id": self.insurer_id,
            "application_id": self.application_id,
            "reference": self.reference,
            "delivery_id": self.delivery_id,
            "attempt": self.attempt,
            "at": self.at.isoformat(),
            "result": self.result,
            "status": self.status,
            "detail": self.detail,
            "forged": self.forged,
        }


class Deliveries:
    """The callbacks of every insurer of one simulation, each a task from creation to delivery."""

    def __init__(
        self,
        clock: Clock,
        send: Sender,
        secrets: Mapping[str, str],
        time_scale: float,
    ) -> None:
        self._clock = clock
        self._send = send
        self._secrets = secrets
        self._time_scale = time_scale
        self._tasks: set[asyncio.Task[None]] = set()
        self.attempts: list[Attempt] = []

    def schedule(self, insurer: SimInsurer, application: Application) -> None:
        """Sends the application's outcome to its hook once it is ready."""
        task = asyncio.get_running_loop().create_task(self._run(insurer, application))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        """Callbacks not yet delivered nor given up."""
        return len(self._tasks)

    async def close(self) -> None:
        """Cancels every callback not yet delivered."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def query(self, *, reference: str | None = None, insurer_id: str | None = None) -> list[Attempt]:
        return [
            a
            for a in self.attempts
            if (reference is None or a.reference == reference) and (insurer_id is None or a.insurer_id == insurer_id)
        ]

    async def _run(self, insurer: SimInsurer, application: Application) -> None:
        try:
            await self._clock.sleep(application.ready_at - self._clock.monotonic())
            fault = insurer.faults.callback_fault("callback_never", "callback_late", "callback_twice")
            if fault is not None and fault.mode == "callback_never":
                self._record(
                    insurer, application, uuid.uuid4().hex, 0, self._clock.now(), "withheld", detail="callback_never"
                )
                return
            if fault is not None and fault.mode == "callback_late":
                await self._clock.sleep(insurer.faults.late_by_s(fault))
            copies = 2 if fault is not None and fault.mode == "callback_twice" else 1
            await asyncio.gather(*(self._deliver(insurer, application) for _ in range(copies)))
        except asyncio.CancelledError:
            raise
        except Exception:  # a broken hook must not take the simulator down
            log.exception("callback of %s failed", insurer.insurer_id)

    async def _deliver(self, insurer: SimInsurer, application: Application) -> bool:
        """One delivery (one delivery id), attempted until the partner accepts it or the attempts
        run out; whether it was accepted."""
        hook = application.hook
        assert hook is not None
        delivery_id = uuid.uuid4().hex
        for attempt in range(1, MAX_ATTEMPTS + 1):
            fault = insurer.faults.callback_fault("callback_bad_signature", "callback_target_down")
            ready = insurer.ready(application)
            body = hook.body(ready, delivery_id)
            forged = fault is not None and fault.mode == "callback_bad_signature"
            secret = self._secret(insurer.insurer_id)
            headers = hook.headers(body, b"not " + secret if forged else secret, int(self._clock.now().timestamp()))
            insurer.callback_attempted(application)
            record = functools.partial(self._record, insurer, application, delivery_id, attempt, self._clock.now())
            if fault is not None and fault.mode == "callback_target_down":
                record("failed", detail="connection refused")
            else:
                try:
                    status = await self._send(hook.url, body, headers)
                except DeliveryError as exc:
                    record("failed", detail=str(exc), forged=forged)
                else:
                    accepted = 200 <= status < 300
                    record("accepted" if accepted else "refused", status=status, forged=forged)
                    if accepted:
                        insurer.issue(application, ready.issued_at)
                        return True
            if attempt < MAX_ATTEMPTS:
                await self._clock.sleep(self.backoff_s(attempt))
        return False

    def backoff_s(self, attempt: int) -> float:
        """The pause after failed attempt `attempt` (from 1)."""
        doubled: float = BACKOFF_BASE_S * 2.0 ** (attempt - 1)
        return min(BACKOFF_CAP_S, doubled) * self._time_scale

    def _secret(self, insurer_id: str) -> bytes:
        return self._secrets[insurer_id].encode()

    def _record(
        self,
        insurer: SimInsurer,
        application: Application,
        delivery_id: str,
        attempt: int,
        at: datetime,
        result: str,
        *,
        status: int | None = None,
        detail: str = "",
        forged: bool = False,
    ) -> None:
        self.attempts.append(
            Attempt(
                insurer.insurer_id,
                application.application_id,
                application.reference,
                delivery_id,
                attempt,
                at,
                result,
                status,
                detail,
                forged,
            )
        )
