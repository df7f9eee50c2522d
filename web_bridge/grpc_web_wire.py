"""The grpc-web wire format (gRPC's PROTOCOL-WEB), as pure functions: content types, message and
trailer frames, the text mode's base64, `grpc-timeout`, and gRPC metadata as HTTP headers.

A body is a sequence of frames: one flag byte (0x00 a message, 0x80 trailers; bit 0x01 a
compressed message), a 4-byte big-endian length, the bytes. Trailers are `key:value\\r\\n` lines
with lowercase keys. In text mode each frame is base64 on its own, so padding may appear mid-body.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MESSAGE = 0x00
COMPRESSED = 0x01
TRAILERS = 0x80
HEADER_BYTES = 5

BINARY_TYPES = frozenset({"application/grpc-web", "application/grpc-web+proto"})
TEXT_TYPES = frozenset({"application/grpc-web-text", "application/grpc-web-text+proto"})
BINARY_RESPONSE_TYPE = "application/grpc-web+proto"
TEXT_RESPONSE_TYPE = "application/grpc-web-text+proto"

_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")
_TIMEOUT_UNITS_S = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_METADATA_KEY = re.compile(r"[0-9a-z_.-]+")
_PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))
# Left as they are in grpc-message; everything else is percent-encoded UTF-8 (gRPC's rule).
_MESSAGE_SAFE = _PRINTABLE - {"%"}

Metadata = Sequence[tuple[str, str | bytes]]


class WireError(ValueError):
    """The request is not a well-formed grpc-web call; the message says what is wrong."""


@dataclass(frozen=True)
class Mode:
    """Binary or text (base64) grpc-web, as the request chose; the answer uses the same."""

    text: bool

    @property
    def content_type(self) -> str:
        return TEXT_RESPONSE_TYPE if self.text else BINARY_RESPONSE_TYPE

    def encode(self, frame_bytes: bytes) -> bytes:
        return base64.b64encode(frame_bytes) if self.text else frame_bytes

    def decode(self, body: bytes) -> bytes:
        return decode_text(body) if self.text else body


def mode_of(content_type: str) -> Mode | None:
    """The grpc-web mode of a request's Content-Type, or None when it is not grpc-web."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in BINARY_TYPES:
        return Mode(text=False)
    if media in TEXT_TYPES:
        return Mode(text=True)
    return None


def frame(payload: bytes, flag: int = MESSAGE) -> bytes:
    return bytes([flag]) + len(payload).to_bytes(4, "big") + payload


def decode_text(body: bytes) -> bytes:
    """The bytes of a grpc-web-text body: base64 chunks, each possibly padded (one per frame)."""
    text = b"".join(body.split())
    chunks = [m.group() for m in re.finditer(rb"[^=]+=*|=+", text)]
    try:
        return b"".join(base64.b64decode(chunk, validate=True) for chunk in chunks)
    except (binascii.Error, ValueError):
        raise WireError("the grpc-web-text body is not base64") from None


def request_message(body: bytes) -> bytes:
    """The one message of a unary or server-streaming call's request body."""
    if len(body) < HEADER_BYTES:
        raise WireError("the body holds no grpc-web message frame")
    flag, length = body[0], int.from_bytes(body[1:HEADER_BYTES], "big")
    if flag & TRAILERS:
        raise WireError("a request carries a message frame, not trailers")
    if flag & COMPRESSED:
        raise WireError("compressed messages are not accepted: send them uncompressed")
    if flag != MESSAGE:
        raise WireError(f"unknown frame flag {flag:#04x}")
    size = len(body) - HEADER_BYTES
    if size < length:
        raise WireError(f"the message frame is truncated ({size} of {length} bytes)")
    if size > length:
        raise WireError("the body holds more than one message: this call takes exactly one")
    return body[HEADER_BYTES:]


def parse_timeout(value: str) -> float:
    """`grpc-timeout` (1 to 8 digits and a unit: H, M, S, m, u, n) in seconds."""
    match = _TIMEOUT.fullmatch(value.strip())
    if match is None:
        raise WireError("grpc-timeout must be 1 to 8 digits followed by a unit: H, M, S, m, u or n")
    return int(match[1]) * _TIMEOUT_UNITS_S[match[2]]


def encode_message(text: str) -> str:
    """grpc-message: printable ASCII as is, anything else (and `%`) percent-encoded UTF-8."""
    return "".join(c if c in _MESSAGE_SAFE else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def metadata_headers(metadata: Metadata) -> list[tuple[str, str]]:
    """gRPC metadata as HTTP header pairs: `-bin` values base64 (unpadded, as gRPC sends them);
    reserved and malformed keys dropped."""
    headers: list[tuple[str, str]] = []
    for name, value in metadata:
        key = name.lower()
        if key in ("grpc-status", "grpc-message") or not _METADATA_KEY.fullmatch(key):
            continue
        if isinstance(value, bytes):
            headers.append((key, base64.b64encode(value).decode("ascii").rstrip("=")))
        elif set(value) <= _PRINTABLE:
            headers.append((key, value))
    return headers


def status_headers(code: int, message: str, trailing: Metadata) -> list[tuple[str, str]]:
    """grpc-status, grpc-message (when there is one) and the trailing metadata as header pairs,
    `grpc-status-details-bin` among them."""
    pairs = [("grpc-status", str(code))]
    if message:
        pairs.append(("grpc-message", encode_message(message)))
    return pairs + metadata_headers(trailing)


def trailers_frame(pairs: Iterable[tuple[str, str]]) -> bytes:
    return frame("".join(f"{key}:{value}\r\n" for key, value in pairs).encode("ascii"), TRAILERS)


def call_metadata(headers: Iterable[tuple[str, str]], dropped: frozenset[str]) -> list[tuple[str, str | bytes]]:
    """The request headers a gRPC call carries on as metadata (`traceparent`, …): everything but
    `dropped`, `grpc-*` and `sec-*`; `-bin` values base64-decoded."""
    metadata: list[tuple[str, str | bytes]] = []
    for name, value in headers:
        key = name.lower()
        if key in dropped or key.startswith(("grpc-", "sec-")) or not _METADATA_KEY.fullmatch(key):
            continue
        if key.endswith("-bin"):
            try:
                metadata.append((key, base64.b64decode(value + "=" * (-len(value) % 4), validate=True)))
            except (binascii.Error, ValueError):
                raise WireError(f"header {key} must be base64") from None
        elif set(value) <= _PRINTABLE:
            metadata.append((key, value))
    return metadata
