"""The text log format of every service: time, level, logger, message, then the ids the code
passes as `extra` (`log.info("...", extra={"request_id": ..., "insurer_id": ...})`), so an
operator can follow one request across services by grepping its id. Ids only: personal data
never goes into `extra` or messages.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

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


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Sends every log record at `level` or above to `stream` (stderr) in the text format; like
    logging.basicConfig, does nothing when the root logger already has a handler."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(ContextFormatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
