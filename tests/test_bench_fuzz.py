"""`osago bench fuzz` for a few seconds on a secure process mesh (TLS, mTLS, Envoy when
installed): every entry point exercised, no crash, no UNKNOWN/INTERNAL/5xx, healthy afterwards."""

from __future__ import annotations

import io
import json

import pytest

from osago_bench.fuzz import FuzzConfig, run_fuzz_command

pytestmark = pytest.mark.functional


@pytest.mark.timeout(180)
async def test_a_short_fuzz_run_finds_no_crash_and_no_server_error() -> None:
    out = io.StringIO()
    code = await run_fuzz_command(FuzzConfig(seconds=6, seed=11, concurrency=4), as_json=True, out=out)
    report = json.loads(out.getvalue())
    assert code == 0, report
    assert set(report["by_entry_point"]) == {"grpc", "grpc-web", "rest", "websocket"}
    assert all(sum(answers.values()) > 0 for answers in report["by_entry_point"].values())
    assert report["crashes"] == 0 and report["unknown_internal_or_5xx"] == 0
    assert report["healthy_after"] and report["session_after"] == "ok"
    # Most of what is sent is refused with a clear answer: the classes a client can act on.
    grpc_answers = report["by_entry_point"]["grpc"]
    assert grpc_answers.get("INVALID_ARGUMENT", 0) > 0
    assert not {"UNKNOWN", "INTERNAL"} & set(grpc_answers)
