"""Shared fixtures: the whole mesh on real localhost ports, in this test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf import json_format
from osago.v1 import application_pb2

from osago_bench.mesh import LocalMesh, start_mesh

Mesh = LocalMesh

__all__ = ["EXAMPLES", "Mesh", "load_example", "start_mesh"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def load_example(name: str = "moscow-young-driver") -> application_pb2.Application:
    app = application_pb2.Application()
    json_format.Parse((EXAMPLES / f"{name}.json").read_text(encoding="utf-8"), app)
    return app


@pytest.fixture
async def mesh() -> AsyncIterator[LocalMesh]:
    async with start_mesh() as running:
        yield running
