"""A grpc-web client spoken by hand (framing, trailers, text mode), for the tests of both edges:
Envoy's grpc_web filter and web_bridge's own endpoint. Written from the protocol, not from the
code under test."""

from __future__ import annotations

import base64

from google.protobuf import duration_pb2
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import application_pb2

GET_QUOTES = "/osago.v1.AggregatorService/GetQuotes"
TRAILERS = 0x80
BINARY = "application/grpc-web+proto"
TEXT = "application/grpc-web-text"


def frame(message: bytes, flag: int = 0) -> bytes:
    return bytes([flag]) + len(message).to_bytes(4, "big") + message


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = []
    while data:
        assert len(data) >= 5, "truncated frame header"
        length = int.from_bytes(data[1:5], "big")
        assert len(data) >= 5 + length, "truncated frame"
        frames.append((data[0], data[5 : 5 + length]))
        data = data[5 + length :]
    return frames


def parse_trailers(payload: bytes) -> dict[str, str]:
    lines = [line for line in payload.decode("ascii").split("\r\n") if line]
    pairs = [line.split(":", 1) for line in lines]
    assert all(key == key.lower() for key, _ in pairs)
    return {key: value.strip() for key, value in pairs}


def decode_text_body(text: str) -> bytes:
    """grpc-web-text: each frame is base64 on its own, so padding may appear mid-body; every
    4-character quantum decodes independently."""
    text = "".join(text.split())
    assert len(text) % 4 == 0
    return b"".join(base64.b64decode(text[i : i + 4], validate=True) for i in range(0, len(text), 4))


def b64decode_unpadded(value: str) -> bytes:
    return base64.b64decode(value + "=" * (-len(value) % 4))


def request_body(application: application_pb2.Application, time_limit_s: int = 5) -> bytes:
    request = pb.GetQuotesRequest(application=application, time_limit=duration_pb2.Duration(seconds=time_limit_s))
    return frame(request.SerializeToString())
