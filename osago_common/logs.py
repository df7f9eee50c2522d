"""The log formats of every service, on stderr, chosen by OSAGO_LOG_FORMAT:

- `json` (python-json-logger): one object per line, for a log store: `time` (RFC 3339, UTC,
  milliseconds), `level`, `service`, `logger`, `message`, and when known `request_id`,
  `insurer`, `trace_id` and `span_id` (the active OpenTelemetry span's, so a line leads to its
  trace), `exc_info` (the traceback) for an error;
- `text`, for a terminal: time, level, logger, message, then ` request_id=… insurer=…`;
- `auto` (the default): text when stderr is a terminal, else JSON (a container's log).

The ids are those the code passes as `extra` (`log.info("...", extra={"request_id": ...,
"insurer_id": ...})`), so an operator can follow one request across services. Ids only:
personal data never goes into `extra` or messages, and the JSON lines carry no other record
attribute (libraries' extras, such as a client's address in an access log, are left out).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from osago_common.env import SettingsError

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
FORMAT_VARIABLE = "OSAGO_LOG_FORMAT"
FORMATS = ("json", "text", "auto")

# Record attributes (the keys of `extra`) shown after the message, and the name each is shown as.
CONTEXT_FIELDS: tuple[tuple[str, str], ...] = (("request_id", "request_id"), ("insurer_id", "insurer"))


class ContextFormatter(logging.Formatter):
    """The text format, with ` request_id=… insurer=…` after the message for the ids the record
    carries (none: nothing added). They go on the message's own line, before any traceback."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        context = [
            f"{shown}={value}"
            for attribute, shown in CONTEXT_FIELDS
            if (value := getattr(record, attribute, None)) not in (None, "")
        ]
        return " ".join([line, *context])


class JsonLineFormatter(JsonFormatter):
    """The JSON format: one object per line with the fields above, nothing else."""

    def __init__(self, service: str) -> None:
        super().__init__(json_ensure_ascii=False)
        self._service = service

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
        log_data["level"] = record.levelname
        log_data["service"] = self._service
        log_data["logger"] = record.name
        log_data["message"] = record.message
        for attribute, shown in CONTEXT_FIELDS:
            value = getattr(record, attribute, None)
            if value not in (None, ""):
                log_data[shown] = str(value)
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            log_data["trace_id"] = trace.format_trace_id(span.trace_id)
            log_data["span_id"] = trace.format_span_id(span.span_id)
        for key in ("exc_info", "stack_info"):
            if message_dict.get(key):
                log_data[key] = message_dict[key]


def log_format(env: Mapping[str, str], stream: TextIO) -> str:
    """The format to write, `json` or `text`, from OSAGO_LOG_FORMAT (auto: text on a terminal).
    Raises SettingsError for an unknown one."""
    chosen = env.get(FORMAT_VARIABLE, "").strip().lower() or "auto"
    if chosen not in FORMATS:
        raise SettingsError(f"{FORMAT_VARIABLE} must be one of {', '.join(FORMATS)}, got {env[FORMAT_VARIABLE]!r}")
    if chosen == "auto":
        return "text" if stream.isatty() else "json"
    return chosen


def configure_logging(
    level: str = "INFO",
    stream: TextIO | None = None,
    *,
    service: str = "osago",
    env: Mapping[str, str] | None = None,
) -> None:
    """Sends every log record at `level` or above to `stream` (stderr) in the format `env`'s
    OSAGO_LOG_FORMAT names, each JSON line naming `service` (OTEL_SERVICE_NAME when set); like
    logging.basicConfig, does nothing when the root logger already has a handler. Raises
    SettingsError for an unknown format."""
    env = env if env is not None else {}
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    if log_format(env, out) == "json":
        handler.setFormatter(JsonLineFormatter(env.get("OTEL_SERVICE_NAME", "").strip() or service))
    else:
        handler.setFormatter(ContextFormatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
