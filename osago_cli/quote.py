"""`osago quote FILE`: asks the aggregator for quotes on an application and shows the offers as
they arrive, as a live table (redrawn in place on a terminal, appended lines otherwise) or as one
JSON object per event (`--json`).

The view is pure: `QuoteView.apply` folds events into state, `render` / `summary` / `event_line`
turn state into lines; only the sinks at the bottom write to a stream.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TextIO

from google.protobuf import json_format
from osago.v1 import application_pb2, events_pb2, quote_pb2

from osago_client import QuoteClient, QuoteError
from osago_client.credentials import credentials_from_env

# The client's deadline covers the session's time limit plus this margin for the last events.
DEADLINE_MARGIN_S = 15.0
DEFAULT_TIMEOUT_S = 75.0
# How often the live view redraws its countdown between events.
REDRAW_INTERVAL_S = 1.0

PENDING, ACCEPTED, OFFER, FAILED = "pending", "accepted", "offer", "failed"

FAILURE_TEXT: dict[int, str] = {
    quote_pb2.FAILURE_REASON_TIMEOUT: "timed out",
    quote_pb2.FAILURE_REASON_DEADLINE: "out of time",
    quote_pb2.FAILURE_REASON_UNAVAILABLE: "unavailable",
    quote_pb2.FAILURE_REASON_DECLINED: "declined",
    quote_pb2.FAILURE_REASON_RATE_LIMITED: "rate limited",
    quote_pb2.FAILURE_REASON_CIRCUIT_OPEN: "suspended after repeated failures",
    quote_pb2.FAILURE_REASON_BAD_RESPONSE: "bad response",
    quote_pb2.FAILURE_REASON_INSURER_ERROR: "insurer error",
    quote_pb2.FAILURE_REASON_INTERNAL: "internal error",
    quote_pb2.FAILURE_REASON_CANCELLED: "cancelled",
}

STATUS_TEXT: dict[int, str] = {
    events_pb2.SESSION_STATUS_RUNNING: "running",
    events_pb2.SESSION_STATUS_COMPLETED: "completed",
    events_pb2.SESSION_STATUS_DEADLINE_EXCEEDED: "time limit reached",
    events_pb2.SESSION_STATUS_UPSTREAM_OUTAGE: "insurers unavailable",
    events_pb2.SESSION_STATUS_CANCELLED: "cancelled",
}


def format_rub(kopecks: int) -> str:
    """12345067 → "123 450,67 ₽" (groups of three digits, comma before the kopecks)."""
    sign = "-" if kopecks < 0 else ""
    roubles, kop = divmod(abs(kopecks), 100)
    return f"{sign}{roubles:,}".replace(",", " ") + f",{kop:02d} ₽"


def format_countdown(deadline: datetime | None, now: datetime) -> str:
    """Time left until `deadline` as m:ss, rounded up; "–:––" before the deadline is known."""
    if deadline is None:
        return "–:––"
    left = max(0, math.ceil((deadline - now).total_seconds()))
    return f"{left // 60}:{left % 60:02d}"


def failure_text(reason: int, message: str) -> str:
    text = FAILURE_TEXT.get(reason, "no offer")
    return f"{text} — {message}" if message else text


@dataclass
class Row:
    """One insurer's line in the view."""

    insurer_id: str
    name: str
    state: str = PENDING
    premium_kopecks: int = 0
    reason: str = ""


@dataclass
class QuoteView:
    """What the session has shown so far, in the order insurers were asked."""

    request_id: str = ""
    deadline: datetime | None = None
    rows: dict[str, Row] = field(default_factory=dict)
    finished: events_pb2.SessionFinished | None = None

    def row(self, insurer_id: str, name: str) -> Row:
        if insurer_id not in self.rows:
            self.rows[insurer_id] = Row(insurer_id, name or insurer_id)
        return self.rows[insurer_id]

    def apply(self, event: events_pb2.QuoteEvent) -> bool:
        """Folds `event` in; False when it changed nothing worth showing (a repeated "pending")."""
        self.request_id = self.request_id or str(event.request_id)
        kind = event.WhichOneof("payload")
        if kind == "session_started":
            started = event.session_started
            for ref in started.insurers:
                self.row(ref.insurer_id, ref.insurer_name)
            if started.HasField("deadline"):
                self.deadline = started.deadline.ToDatetime(tzinfo=UTC)
        elif kind == "quote_received":
            quote = event.quote_received.quote
            row = self.row(quote.insurer_id, quote.insurer_name)
            row.state, row.premium_kopecks = OFFER, int(quote.premium_kopecks)
        elif kind == "insurer_progress":
            progress = event.insurer_progress
            row = self.row(progress.insurer_id, progress.insurer_name)
            if progress.state != events_pb2.INSURER_PROGRESS_STATE_ACCEPTED or row.state != PENDING:
                return False
            row.state = ACCEPTED
        elif kind == "insurer_failed":
            failed = event.insurer_failed
            row = self.row(failed.insurer_id, failed.insurer_name)
            row.state, row.reason = FAILED, failure_text(failed.reason, failed.message)
        elif kind == "session_finished":
            self.finished = event.session_finished
        else:
            return False
        return True

    def offers(self) -> list[Row]:
        """Rows with an offer, cheapest first."""
        offers = [r for r in self.rows.values() if r.state == OFFER]
        return sorted(offers, key=lambda r: (r.premium_kopecks, r.name))


def render(view: QuoteView, now: datetime) -> list[str]:
    """The live table: a header with the countdown, offers by price, insurers still working,
    insurers without an offer, and a count line."""
    if view.finished is not None:
        header = f"OSAGO quotes · finished: {STATUS_TEXT.get(view.finished.status, 'finished')}"
    else:
        header = f"OSAGO quotes · {format_countdown(view.deadline, now)} left"
    lines = [header]
    offers = view.offers()
    working = [r for r in view.rows.values() if r.state in (PENDING, ACCEPTED)]
    failed = [r for r in view.rows.values() if r.state == FAILED]
    width = max((len(r.name) for r in view.rows.values()), default=0)
    price_width = max((len(format_rub(r.premium_kopecks)) for r in offers), default=0)
    for rank, r in enumerate(offers, 1):
        price = format_rub(r.premium_kopecks)
        lines.append(f"{rank:>3}. {r.name:<{width}}  {price:>{price_width}}")
    for r in working:
        status = "accepted, computing…" if r.state == ACCEPTED else "pending"
        lines.append(f"     {r.name:<{width}}  {status}")
    lines.extend(f"     {r.name:<{width}}  failed: {r.reason}" for r in failed)
    lines.append(f"{len(offers)} offers · {len(working)} waiting · {len(failed)} without an offer")
    return lines


def summary(view: QuoteView) -> list[str]:
    """The closing lines once the session finished."""
    done = view.finished
    if done is None:
        return ["The session did not finish."]
    status = STATUS_TEXT.get(done.status, "finished")
    lines = [f"Finished: {status}." + (f" {done.message}" if done.message else "")]
    counts = (
        f"{done.quotes_received} offers from {done.insurers_asked} insurers asked, "
        f"{done.insurers_failed} without an offer."
    )
    offers = view.offers()
    if offers:
        counts += f" Best: {offers[0].name}, {format_rub(offers[0].premium_kopecks)}."
    return [*lines, counts]


def event_line(view: QuoteView, event: events_pb2.QuoteEvent, now: datetime) -> str | None:
    """One appended line for `event` (already applied to `view`), for output to a non-terminal."""
    kind = event.WhichOneof("payload")
    prefix = f"[{format_countdown(view.deadline, now)}]"
    if kind == "session_started":
        names = ", ".join(r.name for r in view.rows.values())
        return f"{prefix} asking {len(event.session_started.insurers)} insurers: {names}"
    if kind == "quote_received":
        quote = event.quote_received.quote
        row = view.rows[quote.insurer_id]
        best = " (best so far)" if view.offers()[0] is row else ""
        return f"{prefix} offer     {row.name}: {format_rub(row.premium_kopecks)}{best}"
    if kind == "insurer_progress":
        return f"{prefix} accepted  {view.rows[event.insurer_progress.insurer_id].name}"
    if kind == "insurer_failed":
        row = view.rows[event.insurer_failed.insurer_id]
        return f"{prefix} failed    {row.name}: {row.reason}"
    return None


class ApplicationFileError(ValueError):
    """The application file cannot be used; the message names no value from it."""


def load_application(path: str) -> application_pb2.Application:
    """Reads an application in the protobuf JSON mapping. Error messages name fields, never values
    (the file holds names and licence numbers)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise ApplicationFileError(f"cannot read {path}: {reason}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        where = f"line {e.lineno}, column {e.colno}"
        raise ApplicationFileError(f"{path} is not JSON: {e.msg} at {where}") from None
    if not isinstance(data, dict):
        raise ApplicationFileError(f"{path} must hold a JSON object (an osago.v1.Application)")
    try:
        return json_format.ParseDict(data, application_pb2.Application())
    except json_format.ParseError as e:
        reason = _parse_error_text(e)
        raise ApplicationFileError(f"{path} is not a valid application: {reason}") from None


def _parse_error_text(error: json_format.ParseError) -> str:
    text = str(error)
    path = re.findall(r"Failed to parse (\w+) field", text)
    if path:
        return f"bad value for field {'.'.join(path)}"
    unknown = re.search(r'has no field named "([^"]*)" at "([^"]*)"', text)
    if unknown:
        return f"unknown field {unknown.group(1)!r} in {unknown.group(2)}"
    return "it does not match osago.v1.Application"


class Sink(Protocol):
    def event(self, event: events_pb2.QuoteEvent) -> None: ...

    def close(self) -> None: ...


class JsonSink:
    """One protobuf-JSON object per event and line, flushed at once."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def event(self, event: events_pb2.QuoteEvent) -> None:
        self._out.write(json_format.MessageToJson(event, indent=None) + "\n")
        self._out.flush()

    def close(self) -> None:
        pass


class PlainSink:
    """A line per change, then the final table and summary: for pipes and log files."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.view = QuoteView()

    def event(self, event: events_pb2.QuoteEvent) -> None:
        if self.view.apply(event):
            line = event_line(self.view, event, _now())
            if line is not None:
                self._write([line])

    def close(self) -> None:
        if self.view.finished is not None:
            self._write(["", *render(self.view, _now()), *summary(self.view)])

    def _write(self, lines: list[str]) -> None:
        self._out.write("".join(f"{line}\n" for line in lines))
        self._out.flush()


class LiveSink:
    """The table redrawn in place with ANSI escapes, its countdown ticking every second."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.view = QuoteView()
        self._drawn = 0
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def event(self, event: events_pb2.QuoteEvent) -> None:
        if self.view.apply(event):
            self.redraw()

    def redraw(self) -> None:
        columns = shutil.get_terminal_size().columns
        lines = [line[: columns - 1] for line in render(self.view, _now())]
        up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        self._out.write(up + "".join(f"{line}\n" for line in lines))
        self._out.flush()
        self._drawn = len(lines)

    def close(self) -> None:
        if self._ticker.cancel() and self._drawn:
            self.redraw()
            if self.view.finished is not None:
                self._out.write("".join(f"{line}\n" for line in summary(self.view)))
                self._out.flush()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(REDRAW_INTERVAL_S)
            self.redraw()


def _now() -> datetime:
    return datetime.now(UTC)


def _open_sink(out: TextIO, as_json: bool) -> Sink:
    if as_json:
        return JsonSink(out)
    return LiveSink(out) if out.isatty() else PlainSink(out)


async def run_quote(
    file: str,
    target: str,
    as_json: bool,
    out: TextIO = sys.stdout,
    time_limit_s: float | None = None,
    *,
    err: TextIO | None = None,
    fresh: bool = False,
) -> int:
    """Runs `osago quote`; returns the exit code: 0 when the session finished, 1 on an error from
    the aggregator (its field violations listed on `err`), 2 when the file cannot be used."""
    err = err if err is not None else sys.stderr
    try:
        application = load_application(file)
    except ApplicationFileError as e:
        print(f"error: {e}", file=err)
        return 2
    timeout_s = DEFAULT_TIMEOUT_S
    if time_limit_s is not None:
        timeout_s = max(DEFAULT_TIMEOUT_S, time_limit_s + DEADLINE_MARGIN_S)
    finished = False
    error: QuoteError | None = None
    sink = _open_sink(out, as_json)
    try:
        credentials, options = credentials_from_env(os.environ)
        async with QuoteClient(target, timeout_s=timeout_s, credentials=credentials, channel_options=options) as client:
            async for event in client.get_quotes(application, time_limit_s=time_limit_s, fresh=fresh):
                sink.event(event)
                finished = finished or event.HasField("session_finished")
    except QuoteError as e:
        error = e
    finally:
        sink.close()
    if error is not None:
        print(f"error: {error.code}: {error.message}", file=err)
        for name, description in error.field_violations:
            print(f"  {name}: {description}", file=err)
        if error.retry_after_s is not None:
            print(f"  try again in {math.ceil(error.retry_after_s)} s", file=err)
        return 1
    return 0 if finished else 1
