"""The benchmark's own processes (load generators, baselines), each its own Python process so its
CPU is measured apart from everything else, driven by a line protocol on stdin/stdout:

    worker → `ready`            set up (imports, connections): nothing measured has run yet
    bench  → `go ARG`           start (ARG: e.g. the common start time)
    worker → `result PATH`      finished; its result is the JSON in PATH
    bench  → (closes stdin)     the worker exits

Between `ready` and `result` the bench samples the worker's CPU (and everyone else's), so set-up
and tear-down are never counted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from osago_common.process import spawn_bound, stop_process

READY_TIMEOUT_S = 60.0


class Worker:
    """One worker process: `python -m MODULE ARGS...`."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, result_path: Path) -> None:
        self.name = name
        self.process = process
        self.result_path = result_path
        self.address = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def spawn(cls, name: str, module: str, args: list[str], workdir: Path) -> Worker:
        result = Path(tempfile.mkstemp(prefix=f"{name.replace(' ', '-')}-", suffix=".json", dir=workdir)[1])
        process = await spawn_bound(
            sys.executable,
            "-m",
            module,
            *args,
            "--result",
            str(result),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(name, process, result)

    async def _line(self) -> str:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            code = await self.process.wait()
            raise RuntimeError(f"{self.name} exited (code {code}) without finishing")
        return line.decode().strip()

    async def ready(self) -> None:
        """Waits for `ready` (a server worker says `ready HOST:PORT`)."""
        line = await asyncio.wait_for(self._line(), READY_TIMEOUT_S)
        if not line.startswith("ready"):
            raise RuntimeError(f"{self.name}: expected ready, got {line!r}")
        self.address = line.removeprefix("ready").strip()

    async def go(self, argument: str = "") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"go {argument}\n".encode())
        await self.process.stdin.drain()

    async def result(self) -> Any:
        line = await self._line()
        if not line.startswith("result"):
            raise RuntimeError(f"{self.name}: expected result, got {line!r}")
        return json.loads(self.result_path.read_text())

    async def stop(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            await stop_process(self.process, 1.0)
        self.result_path.unlink(missing_ok=True)


# --- the worker's side ---------------------------------------------------------------------------


async def _stdin_line() -> str:
    line: str = await asyncio.to_thread(sys.stdin.readline)
    return line.strip()


async def announce_ready(address: str = "") -> str:
    """Says `ready`, then waits for `go`; returns go's argument."""
    print(f"ready {address}".rstrip(), flush=True)
    line = await _stdin_line()
    if not line.startswith("go"):
        raise SystemExit(f"expected go, got {line!r}")
    return line.removeprefix("go").strip()


async def report_result(path: Path, result: Any) -> None:
    """Writes the result, says `result`, and waits until the bench lets go (stdin closed)."""
    path.write_text(json.dumps(result, separators=(",", ":")))
    print(f"result {path}", flush=True)
    await until_released()


async def until_released() -> None:
    """Waits until the bench closes this worker's stdin."""
    while await _stdin_line():
        pass
