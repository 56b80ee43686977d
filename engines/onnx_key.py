"""The engine cache's key inside an ONNX file (engines.cache.KeyBinding), with no onnx package.

An ONNX file is one protobuf ModelProto. Its `metadata_props` (field 14) is a repeated
StringStringEntryProto {key = 1, value = 2}; protobuf merges a repeated field's entries wherever
they stand, so stamp() appends one entry, KEY_NAME -> the cache key, to the end of the file, and
ONNX Runtime shows it among the model's custom metadata. read() walks the top-level fields only
(the graph's bytes are skipped by their length), so it costs a few reads, not a parse.
"""

from __future__ import annotations

from pathlib import Path

from swapstream.engines.cache import KeyBinding

KEY_NAME = "swapstream_cache_key"
_METADATA_PROPS = 14
_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _WIRE_LEN) + _varint(len(payload)) + payload


def stamp(path: Path, key: str) -> None:
    """Append metadata_props {KEY_NAME: key} to the ONNX file at `path`."""
    entry = _len_field(1, KEY_NAME.encode()) + _len_field(2, key.encode())
    with open(path, "ab") as f:
        f.write(_len_field(_METADATA_PROPS, entry))


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[pos]
        n |= (b & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not b & 0x80:
            return n, pos


def _fields(data: bytes):
    """(field number, wire type, value or payload bytes) of a protobuf message's fields."""
    pos = 0
    while pos < len(data):
        tag, pos = _read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == _WIRE_VARINT:
            value, pos = _read_varint(data, pos)
        elif wire == _WIRE_LEN:
            n, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + n], pos + n
            if pos > len(data):
                raise ValueError("truncated field")
        elif wire in (_WIRE_I64, _WIRE_I32):
            pos += 8 if wire == _WIRE_I64 else 4
            value = None
        else:
            raise ValueError(f"wire type {wire}")
        yield number, wire, value


def read(path: Path) -> str | None:
    """The cache key stamped into the ONNX file at `path` (the last one, as protobuf merges), or
    None when it has none or is not a protobuf."""
    found = None
    try:
        data = Path(path).read_bytes()
        for number, wire, value in _fields(data):
            if number == _METADATA_PROPS and wire == _WIRE_LEN:
                entry = {n: v for n, w, v in _fields(value) if w == _WIRE_LEN}
                if entry.get(1) == KEY_NAME.encode():
                    found = entry.get(2, b"").decode(errors="replace")
    except ValueError:
        return None
    return found


ONNX_KEY = KeyBinding(stamp, read)
