"""`osago bench hotpaths`: each hot step timed in a process of its own, against this checkout or
another one."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from osago_bench.cli import DEFAULT_APPLICATION, run_hotpaths_command

pytestmark = pytest.mark.functional

STEPS = (
    "validate_application_us",
    "untraced_call_us",
    "poll_decision_us",
    "insurer_body_us",
    "gateway_ask_us",
    "aggregator_session_ms",
)
CHECKOUT = Path(__file__).resolve().parent.parent


def command(**given: object) -> argparse.Namespace:
    return argparse.Namespace(**({"rounds": 1, "code": None, "file": None, "json": True} | given))


def test_every_step_is_timed_and_printed_as_json_or_a_table() -> None:
    out = io.StringIO()
    assert run_hotpaths_command(command(), out) == 0
    results = json.loads(out.getvalue())
    assert tuple(results) == STEPS
    assert all(value > 0 for value in results.values())
    table = io.StringIO()
    assert run_hotpaths_command(command(json=False, code=str(CHECKOUT)), table) == 0
    assert [row.split()[0] for row in table.getvalue().splitlines()] == list(STEPS)


def test_a_directory_that_is_no_checkout_or_a_missing_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_hotpaths_command(command(code=str(tmp_path))) == 2
    assert "is not a checkout of this project" in capsys.readouterr().err
    assert run_hotpaths_command(command(file=str(tmp_path / "none.json"))) == 2
    assert "no application file" in capsys.readouterr().err
    assert run_hotpaths_command(command(rounds=0, file=str(DEFAULT_APPLICATION))) == 2
