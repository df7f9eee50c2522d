"""Where a process spent its time, from py-spy's raw output (collapsed stacks: one line per
distinct stack, `frame;frame;...;frame COUNT`, the innermost frame last): the functions most
often on top of the stack (self) and most often anywhere on it (inclusive), as shares of the
samples. py-spy samples only threads that are running, not idle ones."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

TOP = 15
# "name (path/to/module.py:123)" -> name, path
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<path>[^()]*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """`function (package/module.py)` without the line number and the directories above the
    package, so the same function on different lines counts once."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    parts = match["path"].replace("\\", "/").split("/")
    return f"{match['name']} ({'/'.join(parts[-2:])})"


def summarise(path: Path, top: int = TOP) -> dict[str, Any]:
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for name in set(frames):
            anywhere[name] += n

    def shares(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(top)] if total else []

    return {"samples": total, "self_pct": shares(own), "inclusive_pct": shares(anywhere)}
