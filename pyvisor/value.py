"""Value: the base of pyvisor's small immutable records (a segment, an e820 entry, a boot
image, an outcome). Each names its fields in __slots__ and takes them by those names in its
own __init__; Value compares, hashes and shows it by its fields, and makes changed copies.

Neither dataclasses nor NamedTuples: both generate source and compile it when their module
is imported (a dataclass about 0.5 ms, and the first compile of a process 1.5 ms more), and
`dataclasses` brings `inspect` and `ast`: together about 20 ms of `pyvisor run`'s start-up
for the records it loads. A Value is immutable by convention: nothing assigns to a field
once __init__ has run."""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Self


class Value:
    __slots__ = ()

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def replace(self, **changes) -> Self:
        """A copy with the named fields changed (as dataclasses.replace)."""
        return type(self)(**{name: getattr(self, name) for name in self.__slots__} | changes)
