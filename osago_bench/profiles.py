"""Where a process spent its CPU, from py-spy's raw output with native frames (collapsed stacks:
one line per distinct stack, `frame;frame;...;frame COUNT`, the innermost frame last).

Samples whose innermost frame waits (epoll, futex, ..., or a lock's wait in libc without
symbols) are idle and left out. Each busy sample
is charged to one component: scanning from the innermost frame outwards, the first frame that
belongs to a known library (gRPC's C core and Cython, protobuf, OpenTelemetry, aiohttp, json,
asyncio, the garbage collector) takes it; a sample whose innermost frames are our own code is
our code's, by package. Beside the components: the busiest innermost frames (self) and our own
functions with everything they call (inclusive), as shares of the busy samples.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

TOP = 15
# "name (path/to/module.py:123)" -> name, path
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<path>[^()]*?)(?::\d+)?\)$")
# Innermost frames of a thread that waits rather than works.
IDLE = (
    "epoll_wait",
    "epoll_pwait",
    "__poll",
    "poll (libc",
    "select (libc",
    "__select",
    "futex",
    "pthread_cond_wait",
    "pthread_cond_timedwait",
    "clock_nanosleep",
    "sem_wait",
    "__lll_lock_wait",
    "EpollSelector.select (selectors.py",  # without native frames
)
# CPython waiting for a lock (a thread pool's worker on its queue): when the frames inside it are
# libc's without symbols (py-spy names them by address only), the thread waits.
LOCK_WAIT = "PyThread_acquire_lock_timed"
# (component, substrings of a frame): the first component whose substring a frame holds.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("garbage collector", ("gc_collect",)),
    ("tracing (OpenTelemetry)", ("(trace/", "(context/", "(propagate/", "(attributes/", "(sdk/", "opentelemetry",
                                 "osago_common/tracing", "composite.py", "_decorator.py")),
    ("logging", ("(logging/",)),
    ("protobuf", ("(protobuf/", "_message.abi3", "upb", "well_known_types")),
    ("gRPC (C core, Cython)", ("(grpc/", "libgrpc", "grpc_")),
    ("aiohttp", ("(aiohttp/", "_http_parser", "llhttp", "_http_writer", "(yarl/", "multidict", "_helpers_c",
                 "aiohappyeyeballs", "propcache")),
    ("json", ("(json/", "_json.c")),
    ("our code: aggregator", ("(aggregator/",)),
    ("our code: insurer_gateway", ("(insurer_gateway/",)),
    ("our code: insurer_sim", ("(insurer_sim/",)),
    ("our code: osago_common", ("(osago_common/",)),
    ("asyncio", ("(asyncio/", "_asynciomodule", "selectors.py", "selectmodule", "(socket.py")),
)  # fmt: skip
OURS = ("(aggregator/", "(insurer_gateway/", "(insurer_sim/", "(osago_common/")


def frame_name(frame: str) -> str:
    """`function (package/module.py)` without the line number and the directories above the
    package, so the same function on different lines counts once."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    parts = match["path"].replace("\\", "/").split("/")
    return f"{match['name']} ({'/'.join(parts[-2:])})"


def component(frames: list[str]) -> str:
    """The component a busy sample is charged to (its frames innermost last)."""
    for frame in reversed(frames):
        for name, marks in COMPONENTS:
            if any(mark in frame for mark in marks):
                return name
    return "other (interpreter, libc)"


def waits(frames: list[str]) -> bool:
    """Whether a sample's thread was waiting rather than working."""
    if any(mark in frames[-1] for mark in IDLE):
        return True
    for index in range(len(frames) - 1, -1, -1):
        if LOCK_WAIT in frames[index]:
            return all(f.startswith("0x") for f in frames[index + 1 :])
        if not frames[index].startswith("0x"):
            return False
    return False


def summarise(path: Path, top: int = TOP) -> dict[str, Any]:
    own: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    busy = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        if waits(frames):
            idle += n
            continue
        busy += n
        own[frame_name(frames[-1])] += n
        parts[component(frames)] += n
        for name in {frame_name(f) for f in frames if any(mark in f for mark in OURS)}:
            ours[name] += n

    def shares(counter: Counter[str], limit: int | None = top) -> list[list[Any]]:
        return [[name, round(100 * n / busy, 1)] for name, n in counter.most_common(limit)] if busy else []

    return {
        "busy_samples": busy,
        "idle_samples": idle,
        "components_pct": shares(parts, None),
        "self_pct": shares(own),
        "ours_inclusive_pct": shares(ours),
    }
