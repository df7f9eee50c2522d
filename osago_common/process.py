"""Child processes that never outlive their parent, started safely from a process running gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1

# Runs as `python -I -c _LAUNCHER PARENT_PID PROGRAM ARGV0 ARGS...`: asks the kernel to SIGTERM it when
# its parent dies (kept across exec), then becomes PROGRAM. Not a preexec_fn: that forces a plain
# fork(), whose atfork handlers in a process running grpc can crash the child before exec; without
# one, subprocess spawns with vfork/posix_spawn and no handler runs.
_LAUNCHER = f"""\
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl({_PR_SET_PDEATHSIG}, signal.SIGTERM)
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[3:])
"""


async def spawn_bound(program: str, *args: str, **kwargs: Any) -> asyncio.subprocess.Process:
    """Starts `program args…` (an absolute path) as a child that dies with this process, even if
    this one is killed by SIGKILL. Keyword arguments go to asyncio.create_subprocess_exec."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-c", _LAUNCHER, str(os.getpid()), program, program, *args, **kwargs
    )


async def stop_process(process: asyncio.subprocess.Process, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`; returns once the process is gone."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
