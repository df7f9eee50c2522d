"""One service of the process mesh: `osago SERVICE` as a child process that dies with its parent
and says where it listens."""

from __future__ import annotations

import asyncio
import sys

from osago_common.process import spawn_bound, stop_process

STOP_TIMEOUT_S = 10.0


class Child:
    """One service process; `address` is what it printed as `listening ADDRESS`."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.address = ""
        # Its Prometheus endpoint, `host:port`, when it printed `metrics ADDRESS` (before listening).
        self.metrics = ""
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def spawn(cls, name: str, args: list[str], env: dict[str, str]) -> Child:
        # Bound to this process: each service dies with the mesh, even if it is SIGKILLed.
        process = await spawn_bound(
            sys.executable,
            "-m",
            "osago_cli.main",
            *args,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(name, process)

    async def listening(self) -> str:
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} exited before listening (code {await self.process.wait()})")
            text = line.decode().strip()
            if text.startswith("metrics "):
                self.metrics = text.split(" ", 1)[1]
            if text.startswith("listening "):
                self.address = text.split(" ", 1)[1]
                self._drain = asyncio.create_task(self._drain_stdout())
                return self.address

    async def _drain_stdout(self) -> None:
        assert self.process.stdout is not None
        while await self.process.stdout.readline():
            pass

    async def stop(self) -> None:
        await stop_process(self.process, STOP_TIMEOUT_S)
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.gather(self._drain, return_exceptions=True)
