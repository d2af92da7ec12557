"""The fuzzer's bytes read as little-endian fields from the front (zeros once they run out),
and the writer that builds seed inputs field by field in the same order."""
from __future__ import annotations

from typing import Sequence, TypeVar

T = TypeVar("T")


class Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def more(self) -> bool:
        return self._pos < len(self._data)

    def _int(self, size: int) -> int:
        chunk = self._data[self._pos:self._pos + size]
        self._pos += size
        return int.from_bytes(chunk, "little")

    def u8(self) -> int:
        return self._int(1)

    def u16(self) -> int:
        return self._int(2)

    def u32(self) -> int:
        return self._int(4)

    def u64(self) -> int:
        return self._int(8)

    def bytes(self, n: int) -> bytes:
        chunk = self._data[self._pos:self._pos + n]
        self._pos += n
        return chunk

    def rest(self) -> bytes:
        return self.bytes(len(self._data) - self._pos)

    def pick(self, options: Sequence[T]) -> T:
        return options[self.u8() % len(options)]


class Writer:
    def __init__(self) -> None:
        self._out = bytearray()

    def u8(self, v: int) -> "Writer":
        self._out += (v & 0xFF).to_bytes(1, "little")
        return self

    def u16(self, v: int) -> "Writer":
        self._out += (v & 0xFFFF).to_bytes(2, "little")
        return self

    def u32(self, v: int) -> "Writer":
        self._out += (v & 0xFFFFFFFF).to_bytes(4, "little")
        return self

    def u64(self, v: int) -> "Writer":
        self._out += (v & (1 << 64) - 1).to_bytes(8, "little")
        return self

    def raw(self, data: bytes) -> "Writer":
        self._out += data
        return self

    def data(self) -> bytes:
        return bytes(self._out)
