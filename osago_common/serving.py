"""Running a service process until it is told to stop."""

from __future__ import annotations

import asyncio
import signal


async def until_signalled() -> None:
    """Returns on SIGTERM or SIGINT (or raises CancelledError when cancelled). Where signals cannot
    be handled (not the main thread), only cancellation ends the wait."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stopping.set)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        handled.append(sig)
    try:
        await stopping.wait()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
