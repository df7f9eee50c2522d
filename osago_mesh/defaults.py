"""The dev mesh's defaults, shared by `osago up` and the commands that find its services without
being told (`osago quote`, `osago sim fault`): when both read them here, the defaults meet."""

from __future__ import annotations

import socket
import sys

AGGREGATOR_PORT = 50050
SIM_PORT = 8480
PAGE_PORT = 8080
LOCALHOST = "127.0.0.1"
AGGREGATOR_TARGET = f"{LOCALHOST}:{AGGREGATOR_PORT}"
SIM_URL = f"http://{LOCALHOST}:{SIM_PORT}"
# Who serves the page and grpc-web: Envoy, web_bridge, or "auto" (Envoy when its binary is installed).
EDGES = ("auto", "envoy", "web_bridge")


def port_is_free(host: str, port: int) -> bool:
    """Whether a listener could bind `host:port` just now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def prefer_port(host: str, port: int, what: str) -> int:
    """`port` if it can be bound on `host`, else 0 (any free port) with a warning on stderr: the
    mesh comes up even where the usual port is taken, and its ready line tells where."""
    if port == 0 or port_is_free(host, port):
        return port
    print(f"osago up: port {port} ({what}) is taken; using a free one", file=sys.stderr)
    return 0
