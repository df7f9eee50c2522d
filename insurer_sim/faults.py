"""The faults an insurer can be switched into at run time, and their options, validated.

| mode | what the insurer's API does | options (default) |
|---|---|---|
| `down` | refuses connections (its own port closed; on the shared port: closed without an answer) | |
| `blackhole` | accepts, never answers (until the client gives up) | |
| `slow` | answers correctly, after a delay | `delay_s` (8.0), `scaled` (false) |
| `error` | 5xx at a rate, otherwise normal | `status` (503), `rate` (1.0), `body` ("json" or "text") |
| `ratelimit` | 429 with Retry-After: always, or beyond a quota | `retry_after_s` (1), `limit_per_s` (none) |
| `malformed` | 200 with garbage | `variant`: "json" (broken), "html", "schema" (wrong), "random" |
| `flapping` | first half of each period failing (5xx), second half healthy | `period_s` (2.0), `scaled` (false), `status` (503) |
| `decline` | declines every application it issues an outcome for | |
| `callback_never` | sends no callback (a "push" insurer; its status endpoint still answers) | |
| `callback_twice` | sends each callback twice at once, as two deliveries | |
| `callback_late` | sends each callback this long after the outcome is ready | `delay_s` (8.0), `scaled` (false) |
| `callback_bad_signature` | signs each callback with a wrong secret | |
| `callback_target_down` | every delivery attempt fails as if the partner refused the connection (retried with backoff) | |

The `callback_*` modes apply to insurers of a dialect with callbacks only, and touch no request
to the insurer's API; the other modes touch only the API, never a callback (`decline` aside: it
changes the outcome, however it is delivered). Delays and periods are real seconds (the injected
clock's), multiplied by the simulator's time_scale only with `scaled: true`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

CALLBACK_MODES = (
    "callback_never",
    "callback_twice",
    "callback_late",
    "callback_bad_signature",
    "callback_target_down",
)
MODES = ("down", "blackhole", "slow", "error", "ratelimit", "malformed", "flapping", "decline", *CALLBACK_MODES)
VARIANTS = ("json", "html", "schema")
ERROR_BODIES = ("json", "text")
MAX_SECONDS = 3600.0

# The options each mode takes; any other is rejected, so a typo is never silently ignored.
OPTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "down": (),
        "blackhole": (),
        "slow": ("delay_s", "scaled"),
        "error": ("status", "rate", "body"),
        "ratelimit": ("retry_after_s", "limit_per_s"),
        "malformed": ("variant",),
        "flapping": ("period_s", "scaled", "status"),
        "decline": (),
        "callback_never": (),
        "callback_twice": (),
        "callback_late": ("delay_s", "scaled"),
        "callback_bad_signature": (),
        "callback_target_down": (),
    }
)


class FaultError(ValueError):
    """A fault request is invalid; `field` names the bad field ("" for the whole body)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field or 'body'}: {message}")
        self.field = field


@dataclass(frozen=True)
class Fault:
    """One fault mode with every option (only those of `OPTIONS[mode]` matter)."""

    mode: str
    delay_s: float = 8.0
    scaled: bool = False
    status: int = 503
    rate: float = 1.0
    body: str = "json"
    retry_after_s: int = 1
    limit_per_s: int | None = None
    variant: str = "json"
    period_s: float = 2.0

    def to_json(self) -> dict[str, object]:
        """The mode and its options, defaults filled in."""
        return {"mode": self.mode, **{name: getattr(self, name) for name in OPTIONS[self.mode]}}


def parse_fault(body: object) -> Fault:
    """The fault a control request asks for: {"mode": MODE, option: value, ...}."""
    if not isinstance(body, dict):
        raise FaultError("", "must be a JSON object")
    mode = body.get("mode")
    if not isinstance(mode, str) or mode not in MODES:
        raise FaultError("mode", f"must be one of {', '.join(MODES)}")
    allowed = OPTIONS[mode]
    values: dict[str, Any] = {}  # each checked by its option's own check
    for name, value in body.items():
        if name == "mode":
            continue
        if name not in allowed:
            takes = ", ".join(allowed) or "no options"
            raise FaultError(name, f"is not an option of mode {mode} (it takes {takes})")
        values[name] = _CHECKS[name](name, value)
    return dataclasses.replace(Fault(mode), **values)


def _number(low: float, high: float, *, above_low: bool = False) -> Callable[[str, object], float]:
    def check(name: str, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise FaultError(name, "must be a number")
        if value < low or value > high or (above_low and value == low):
            side = f"above {low}" if above_low else f"at least {low}"
            raise FaultError(name, f"must be {side} and at most {high}")
        return float(value)

    return check


def _integer(low: int, high: int) -> Callable[[str, object], int]:
    def check(name: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FaultError(name, "must be an integer")
        if not low <= value <= high:
            raise FaultError(name, f"must be between {low} and {high}")
        return value

    return check


def _optional(check: Callable[[str, object], int]) -> Callable[[str, object], int | None]:
    def optional(name: str, value: object) -> int | None:
        return None if value is None else check(name, value)

    return optional


def _choice(options: tuple[str, ...]) -> Callable[[str, object], str]:
    def check(name: str, value: object) -> str:
        if not isinstance(value, str) or value not in options:
            raise FaultError(name, f"must be one of {', '.join(options)}")
        return value

    return check


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise FaultError(name, "must be true or false")
    return value


_CHECKS: Mapping[str, Callable[[str, object], object]] = MappingProxyType(
    {
        "delay_s": _number(0.0, MAX_SECONDS),
        "scaled": _flag,
        "status": _integer(500, 599),
        "rate": _number(0.0, 1.0),
        "body": _choice(ERROR_BODIES),
        "retry_after_s": _integer(0, int(MAX_SECONDS)),
        "limit_per_s": _optional(_integer(1, 1_000_000)),
        "variant": _choice((*VARIANTS, "random")),
        "period_s": _number(0.0, MAX_SECONDS, above_low=True),
    }
)
