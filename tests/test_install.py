"""`pip install .` gives a working `osago` outside the checkout: the package is built from a copy of
the source into a fresh virtual environment, the copy is deleted, and `osago up`, run from an
empty directory, serves the page, its script and grpc-web from the installed package data.

To stay fast and offline the new environment borrows this one's dependencies (a `.pth` line; such
a path is not a site directory, so this environment's editable install of the project does not
come along) and pip installs the project alone (`--no-deps`). Envoy is not installed there, so
`osago up` puts web_bridge on the page port, as after a plain `pip install .`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import aiohttp
import pytest
from osago.v1 import aggregator_service_pb2 as pb

from tests.conftest import ROOT, load_example
from tests.grpc_web import BINARY, GET_QUOTES, TRAILERS, parse_frames, parse_trailers, request_body

pytestmark = pytest.mark.functional

NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "build", "*.egg-info", "test-output", "__pycache__", ".*_cache"
)
STATIC = ("index.html", "app.js", "styles.css")


def run(*args: str | Path, cwd: Path) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def clean_env() -> dict[str, str]:
    """This environment without anything that would point Python at the checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the project installed from a copy of the source, the copy deleted."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    venv = base / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=base)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=base).strip())
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--ignore-installed",
        source,
        cwd=base,
    )
    shutil.rmtree(source)
    return venv


def test_the_page_and_the_envoy_config_are_installed_as_package_data(installed: Path, tmp_path: Path) -> None:
    python = installed / "bin" / "python"
    where = run(
        python,
        "-c",
        "import osago_mesh.envoy as e, web_bridge.settings as s; print(e.ENVOY_YAML); print(s.DEFAULT_STATIC_DIR)",
        cwd=tmp_path,
    ).split()
    envoy_yaml, static = Path(where[0]), Path(where[1])
    assert envoy_yaml.is_relative_to(installed) and static.is_relative_to(installed)
    assert envoy_yaml.is_file() and not envoy_yaml.is_symlink()
    assert envoy_yaml.read_bytes() == (ROOT / "envoy" / "envoy.yaml").read_bytes()
    for name in STATIC:
        assert (static / name).read_bytes() == (ROOT / "web_bridge" / "static" / name).read_bytes()
    # The installed template renders (every slot found in the installed copy).
    rendered = run(
        python,
        "-c",
        "from osago_mesh.envoy import render_envoy_config as r; print(r(listen_host='127.0.0.1', listen_port=1,"
        " aggregators=[('a', 2)], web_bridge_host='b', web_bridge_port=3, admin_port=4,"
        " allowed_origins=['http://127.0.0.1:1']))",
        cwd=tmp_path,
    )
    assert '"address": "a", "port_value": 2}}}}]  # @aggregator_endpoints' in rendered


async def test_osago_up_from_the_installed_package_serves_the_page_and_grpc_web(
    installed: Path, tmp_path: Path
) -> None:
    process = await asyncio.create_subprocess_exec(
        installed / "bin" / "osago",
        "up",
        "--insurers",
        "3",
        "--time-scale",
        "0.02",
        "--aggregator-port",
        "0",
        "--sim-port",
        "0",
        "--page-port",
        "0",
        cwd=tmp_path,
        env={**clean_env(), "TMPDIR": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 90)).decode().strip()
        assert line.startswith("ready "), line
        fields = dict(pair.split("=", 1) for pair in line.split()[1:])
        assert fields["edge"] == "web_bridge"  # no Envoy in this environment
        page = fields["page"]
        async with aiohttp.ClientSession() as http:
            async with http.get(page) as response:
                assert response.status == 200
                assert await response.read() == (ROOT / "web_bridge" / "static" / "index.html").read_bytes()
            async with http.get(page + "app.js") as response:
                assert response.status == 200 and "javascript" in response.headers["content-type"]
                assert await response.read() == (ROOT / "web_bridge" / "static" / "app.js").read_bytes()
            headers = {"content-type": BINARY, "x-grpc-web": "1"}
            async with http.post(
                page.rstrip("/") + GET_QUOTES, data=request_body(load_example(), 20), headers=headers
            ) as response:
                frames = parse_frames(await response.read())
        events = [pb.GetQuotesResponse.FromString(payload).event for _, payload in frames[:-1]]
        assert events[0].HasField("session_started") and events[-1].HasField("session_finished")
        assert any(e.HasField("quote_received") for e in events)
        assert frames[-1][0] == TRAILERS and parse_trailers(frames[-1][1])["grpc-status"] == "0"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
