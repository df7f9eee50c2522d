"""The log formats: the text format carries the ids the code passes as `extra` (request_id and
insurer); the JSON format is one object per line with the service, those ids and the active
span's trace and span ids; OSAGO_LOG_FORMAT chooses (auto: text on a terminal, else JSON)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from osago_common.logs import FORMAT, ContextFormatter, JsonLineFormatter
from tests.test_session import offer, run


@pytest.fixture
def service_log() -> Iterator[io.StringIO]:
    """What the services' log handler writes, for the records of this test."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ContextFormatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


async def test_a_failed_insurer_call_is_logged_with_its_request_and_insurer(service_log: io.StringIO) -> None:
    clock, _, task, _ = await run({"broken": [(0.5, RuntimeError("boom"))], "ok": [(1.0, offer(1))]})
    await clock.advance(2.0)
    await task
    first, *traceback = service_log.getvalue().splitlines()
    assert first.endswith(" ERROR aggregator.session offer task failed request_id=r1 insurer=broken")
    assert traceback[0] == "Traceback (most recent call last):"  # the ids stay on the message's line


@pytest.mark.functional  # runs a fresh process
def test_the_configured_format_adds_ids_only_when_the_record_has_them() -> None:
    script = (
        "import logging\n"
        "from osago_common.logs import configure_logging\n"
        "configure_logging('INFO', env={'OSAGO_LOG_FORMAT': 'text'})\n"
        "log = logging.getLogger('aggregator.core')\n"
        "log.info('cancelling an unwatched session', extra={'request_id': 'req-7'})\n"
        "log.info('plain line')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    with_id, plain = done.stderr.splitlines()
    assert with_id.endswith(" INFO aggregator.core cancelling an unwatched session request_id=req-7")
    assert plain.endswith(" INFO aggregator.core plain line")


RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_names_the_service_the_ids_and_the_active_span() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter("osago-gateway"))
    log = logging.getLogger("insurer_gateway.servicer")
    log.addHandler(handler)
    provider = TracerProvider(shutdown_on_exit=False)
    try:
        log.warning("before any span")
        with provider.get_tracer(__name__).start_as_current_span("RequestOffer") as span:
            log.warning("no offer: reason=%s", "DECLINED", extra={"request_id": "req-7", "insurer_id": "alfa"})
            try:
                raise RuntimeError("boom")
            except RuntimeError:
                log.exception("failed", extra={"request_id": "req-7", "other": "not shown"})
    finally:
        log.removeHandler(handler)
        provider.shutdown()
    plain, with_ids, failure = json_lines(stream)
    context = span.get_span_context()
    assert RFC3339_UTC.fullmatch(str(plain.pop("time")))
    assert plain == {
        "level": "WARNING",
        "service": "osago-gateway",
        "logger": "insurer_gateway.servicer",
        "message": "before any span",
    }
    assert RFC3339_UTC.fullmatch(str(with_ids.pop("time")))
    assert with_ids == {
        "level": "WARNING",
        "service": "osago-gateway",
        "logger": "insurer_gateway.servicer",
        "message": "no offer: reason=DECLINED",
        "request_id": "req-7",
        "insurer": "alfa",
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
    }
    assert failure["level"] == "ERROR" and failure["request_id"] == "req-7" and "insurer" not in failure
    assert str(failure["exc_info"]).startswith("Traceback (most recent call last):")
    assert "other" not in failure  # only the known fields, never a record's other extras


@pytest.mark.functional  # runs fresh processes
def test_the_format_is_chosen_by_osago_log_format() -> None:
    script = (
        "import logging, os\n"
        "from osago_common.logs import configure_logging\n"
        "configure_logging('INFO', service='osago-aggregator', env=os.environ)\n"
        "logging.getLogger('aggregator.core').info('started', extra={'request_id': 'req-8'})\n"
    )

    def stderr_with(**env: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, **env},
            check=False,
        )
        return done.stderr

    # A pipe, not a terminal: auto (the default) is JSON.
    for chosen in ({"OSAGO_LOG_FORMAT": "json"}, {"OSAGO_LOG_FORMAT": "auto"}, {"OSAGO_LOG_FORMAT": ""}):
        [line] = stderr_with(**chosen).splitlines()
        parsed = json.loads(line)
        assert parsed["service"] == "osago-aggregator" and parsed["request_id"] == "req-8", chosen
    [named] = stderr_with(OSAGO_LOG_FORMAT="json", OTEL_SERVICE_NAME="osago-aggregator-eu").splitlines()
    assert json.loads(named)["service"] == "osago-aggregator-eu"
    [text] = stderr_with(OSAGO_LOG_FORMAT="text").splitlines()
    assert text.endswith(" INFO aggregator.core started request_id=req-8")
    refused = subprocess.run(
        [sys.executable, "-m", "osago_cli.main", "aggregator"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "OSAGO_LOG_FORMAT": "yaml"},
        check=False,
    )
    assert refused.returncode == 2
    assert "OSAGO_LOG_FORMAT must be one of json, text, auto, got 'yaml'" in refused.stderr
