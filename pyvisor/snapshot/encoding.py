"""A small self-describing binary encoding for the plain data a snapshot's state is made
of: None, bools, ints (any size), floats, str, bytes, lists and str-keyed dicts.

Why not pickle: a snapshot file is input, and unpickling runs code. Why not JSON: state is
mostly bytes. Decoding checks every length against the data that is left and bounds the
nesting depth, so a corrupt file fails with EncodingError, never worse.
"""
from __future__ import annotations

import struct
from typing import Any

_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")
MAX_DEPTH = 32


class EncodingError(ValueError):
    """The data is not a valid encoding (truncated, a bad tag, too deep)."""


def encode(value: Any) -> bytes:
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def _encode(value: Any, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise EncodingError("state nested too deeply")
    if value is None:
        out += b"N"
    elif value is True or value is False:
        out += b"T" if value else b"F"
    elif isinstance(value, int):
        raw = value.to_bytes((value.bit_length() + 8) // 8 or 1, "little", signed=True)
        out += b"i" + _U32.pack(len(raw)) + raw
    elif isinstance(value, float):
        out += b"f" + _F64.pack(value)
    elif isinstance(value, str):
        raw = value.encode("utf-8", "surrogateescape")
        out += b"s" + _U32.pack(len(raw)) + raw
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        out += b"b" + _U32.pack(len(raw)) + raw
    elif isinstance(value, (list, tuple)):
        out += b"l" + _U32.pack(len(value))
        for item in value:
            _encode(item, out, depth + 1)
    elif isinstance(value, dict):
        out += b"d" + _U32.pack(len(value))
        for key, item in value.items():
            if not isinstance(key, str):
                raise EncodingError(f"state key {key!r} is not a string")
            _encode(key, out, depth + 1)
            _encode(item, out, depth + 1)
    else:
        raise EncodingError(f"cannot keep a {type(value).__name__} in a snapshot")


def decode(data: bytes) -> Any:
    value, end = _decode(memoryview(data), 0, 0)
    if end != len(data):
        raise EncodingError(f"{len(data) - end} bytes after the state")
    return value


def _take(data: memoryview, pos: int, n: int) -> memoryview:
    if n < 0 or pos + n > len(data):
        raise EncodingError("the state is truncated")
    return data[pos:pos + n]


def _length(data: memoryview, pos: int) -> int:
    return _U32.unpack(_take(data, pos, 4))[0]


def _decode(data: memoryview, pos: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise EncodingError("the state is nested too deeply")
    tag = bytes(_take(data, pos, 1))
    pos += 1
    if tag == b"N":
        return None, pos
    if tag in (b"T", b"F"):
        return tag == b"T", pos
    if tag == b"f":
        return _F64.unpack(_take(data, pos, 8))[0], pos + 8
    if tag in (b"i", b"s", b"b"):
        n = _length(data, pos)
        raw = bytes(_take(data, pos + 4, n))
        pos += 4 + n
        if tag == b"i":
            return int.from_bytes(raw, "little", signed=True), pos
        if tag == b"s":
            return raw.decode("utf-8", "surrogateescape"), pos
        return raw, pos
    if tag in (b"l", b"d"):
        n = _length(data, pos)
        pos += 4
        if n > len(data) - pos:            # every item takes at least one byte
            raise EncodingError("the state is truncated")
        if tag == b"l":
            items = []
            for _ in range(n):
                item, pos = _decode(data, pos, depth + 1)
                items.append(item)
            return items, pos
        result = {}
        for _ in range(n):
            key, pos = _decode(data, pos, depth + 1)
            if not isinstance(key, str):
                raise EncodingError("a state key is not a string")
            result[key], pos = _decode(data, pos, depth + 1)
        return result, pos
    raise EncodingError(f"unknown tag {tag!r} in the state")
