"""The text log format carries the ids the code passes as `extra`: request_id and insurer."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from osago_common.logs import FORMAT, ContextFormatter
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
        "configure_logging('INFO')\n"
        "log = logging.getLogger('aggregator.core')\n"
        "log.info('cancelling an unwatched session', extra={'request_id': 'req-7'})\n"
        "log.info('plain line')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    with_id, plain = done.stderr.splitlines()
    assert with_id.endswith(" INFO aggregator.core cancelling an unwatched session request_id=req-7")
    assert plain.endswith(" INFO aggregator.core plain line")
