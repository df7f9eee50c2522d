"""`osago sim fault` and `osago sim heal`: switch faults of a running simulator over its control API.

    osago sim fault INSURER MODE [--rate R] [--status S] [--body json|text] [--delay S]
                                 [--scaled] [--retry-after S] [--limit-per-s N] [--variant V]
                                 [--period S] [--sim URL]
    osago sim heal INSURER [--sim URL]
    osago sim heal --all [--sim URL]

Each prints the resulting state as one line of JSON (see `insurer_sim.control`); a simulator that
cannot be reached or refuses the request is a message on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

# Seconds the whole control request may take.
TIMEOUT_S = 10.0

# Command-line flag (argparse dest) -> the option's name in the control API.
FLAG_OPTIONS: Mapping[str, str] = {
    "rate": "rate",
    "status": "status",
    "body": "body",
    "delay": "delay_s",
    "scaled": "scaled",
    "retry_after": "retry_after_s",
    "limit_per_s": "limit_per_s",
    "variant": "variant",
    "period": "period_s",
}

Json = dict[str, Any]


class SimControlError(Exception):
    """The simulator could not be reached, or refused the request; the message says which."""


async def set_fault(sim_url: str, insurer_id: str, mode: str, options: Mapping[str, object] | None = None) -> Json:
    """Switches insurer `insurer_id` into fault `mode`; the insurer's state after."""
    body = {"mode": mode, **(options or {})}
    return await _call("PUT", _fault_url(sim_url, insurer_id), body)


async def heal(sim_url: str, insurer_id: str) -> Json:
    """Heals insurer `insurer_id`; its state after."""
    return await _call("DELETE", _fault_url(sim_url, insurer_id))


async def heal_all(sim_url: str) -> Json:
    """Heals every insurer; {"insurers": [state, ...]}."""
    return await _call("POST", f"{sim_url.rstrip('/')}/_sim/faults/reset")


async def faults(sim_url: str) -> Json:
    """Every insurer's fault state; {"insurers": [state, ...]}."""
    return await _call("GET", f"{sim_url.rstrip('/')}/_sim/faults")


def _fault_url(sim_url: str, insurer_id: str) -> str:
    return f"{sim_url.rstrip('/')}/_sim/insurers/{quote(insurer_id, safe='')}/fault"


async def _call(method: str, url: str, body: Json | None = None) -> Json:
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.request(method, url, json=body) as response,
        ):
            text = await response.text()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        raise SimControlError(f"cannot reach the simulator at {url}: {reason}") from None
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise SimControlError(f"the simulator answered {status} without a JSON object: {text[:200]!r}")
    if status >= 400:
        raise SimControlError(f"the simulator refused the request ({status}): {answer.get('error', text)}")
    return answer


def options_from(args: argparse.Namespace) -> Json:
    """The control API options of the flags given on the command line."""
    given = {name: getattr(args, flag, None) for flag, name in FLAG_OPTIONS.items()}
    return {name: value for name, value in given.items() if value is not None}


async def _command(args: argparse.Namespace) -> Json:
    if args.sim_command == "fault":
        return await set_fault(args.sim, args.insurer, args.mode, options_from(args))
    if args.sim_command == "heal":
        return await (heal_all(args.sim) if args.all else heal(args.sim, args.insurer))
    raise AssertionError(args.sim_command)


def run_simctl(args: argparse.Namespace) -> int:
    """Runs `osago sim fault|heal`; prints the state as one JSON line; 1 on failure."""
    try:
        state = asyncio.run(_command(args))
    except SimControlError as exc:
        print(f"osago sim {args.sim_command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(state, ensure_ascii=False), flush=True)
    return 0
