"""Address decoding for port I/O and MMIO exits.

vCPU threads call `read`/`write` on every I/O exit, so the claimed path is a table lookup
and one call; everything else (counting, logging) lives on the unclaimed path only.
Registration is expected to finish before the vCPUs run; dispatch itself takes no lock.
Each bus counts its registration changes (`generation`), so what is worked out from its
registrations (the snapshot engine's device walk) is redone only when they change.
"""
from __future__ import annotations

import threading
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable

from ..log import DEBUG, get_logger
from ..value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_log = get_logger("pyvisor.devices")

PIO_SPACE = 0x10000


class Registration(Value):
    """One claimed range, as listed by `registrations()`."""

    __slots__ = ("base", "length", "device", "name")

    def __init__(self, base: int, length: int, device: Any, name: str) -> None:
        self.base, self.length, self.device, self.name = base, length, device, name


# Distinct unclaimed (address, "r"/"w") pairs counted one by one; the guest picks the
# addresses, so past these only the totals grow.
UNCLAIMED_ADDRESSES = 64


class _Bus:
    """What both buses share: the registration list, overlap errors and the counters for
    accesses nobody claimed (a guest probing absent hardware is normal, so those are
    debug-level, but counting them makes a missing device easy to spot). The counters
    are bounded: totals, plus per-address counts for the first UNCLAIMED_ADDRESSES."""

    _kind = ""

    def __init__(self) -> None:
        self._registrations: list[Registration] = []
        self.generation = 0     # bumped on every registration change
        self._count_lock = threading.Lock()
        self.unclaimed_reads = 0
        self.unclaimed_writes = 0
        # (address, "r" or "w") -> number of unclaimed accesses there, for the first
        # UNCLAIMED_ADDRESSES pairs seen.
        self.unclaimed_by_addr: Counter[tuple[int, str]] = Counter()

    def registrations(self) -> list[Registration]:
        """Claimed ranges sorted by base, for debug views."""
        return sorted(self._registrations, key=lambda r: r.base)

    def _add(self, base: int, length: int, device: Any, name: str | None,
             limit: int | None) -> Registration:
        if length <= 0:
            raise ValueError(f"{self._kind} range at {base:#x}: length must be positive")
        if base < 0 or (limit is not None and base + length > limit):
            raise ValueError(f"{self._kind} range {base:#x}+{length:#x} is outside "
                             f"the {self._kind} address space")
        new = Registration(base, length, device, name or type(device).__name__)
        for old in self._registrations:
            if base < old.base + old.length and old.base < base + length:
                raise ValueError(
                    f"{self._kind} range {_span(new)} ({new.name}) overlaps "
                    f"{_span(old)} ({old.name})")
        self._registrations.append(new)
        self.generation += 1
        return new

    def _count_at(self, addr: int, kind: str) -> None:
        key = (addr, kind)
        if key in self.unclaimed_by_addr or len(self.unclaimed_by_addr) < UNCLAIMED_ADDRESSES:
            self.unclaimed_by_addr[key] += 1

    def _unclaimed_read(self, addr: int, size: int) -> int:
        with self._count_lock:
            self.unclaimed_reads += 1
            self._count_at(addr, "r")
        if _log.isEnabledFor(DEBUG):
            _log.debug("unclaimed %s read %#x size %d", self._kind, addr, size)
        return (1 << (size * 8)) - 1

    def _unclaimed_write(self, addr: int, size: int, value: int) -> None:
        with self._count_lock:
            self.unclaimed_writes += 1
            self._count_at(addr, "w")
        if _log.isEnabledFor(DEBUG):
            _log.debug("unclaimed %s write %#x size %d value %#x",
                       self._kind, addr, size, value)


def _span(r: Registration) -> str:
    return f"{r.base:#x}..{r.base + r.length - 1:#x}"


_Read = Callable[[int, int], int]
_Write = Callable[[int, int, int], None]


class PioBus(_Bus):
    """The 64 KiB x86 port space. A 64K-entry table maps each port straight to the device's
    bound methods and base, so dispatch is one index whatever the number of devices.
    An access is routed by its first port; a multi-byte access that runs past the end
    of a device's range is the device's to interpret."""

    _kind = "port"

    def __init__(self) -> None:
        super().__init__()
        self._table: list[tuple[_Read, _Write, int] | None] = [None] * PIO_SPACE

    def register(self, base: int, length: int, device: Any, name: str | None = None) -> None:
        """Claim ports base..base+length-1 for a device with pio_read/pio_write."""
        reg = self._add(base, length, device, name, PIO_SPACE)
        entry = (device.pio_read, device.pio_write, reg.base)
        for port in range(base, base + length):
            self._table[port] = entry

    def read(self, port: int, size: int) -> int:
        entry = self._table[port]
        if entry is not None:
            return entry[0](port - entry[2], size)
        return self._unclaimed_read(port, size)

    def write(self, port: int, size: int, value: int) -> None:
        entry = self._table[port]
        if entry is not None:
            entry[1](port - entry[2], size, value)
        else:
            self._unclaimed_write(port, size, value)


class MmioBus(_Bus):
    """Guest-physical MMIO space: sorted, non-overlapping ranges found with bisect.

    A range can move while vCPUs run (a PCI BAR the guest reprograms): the lookup lists are
    replaced, never changed in place, so a concurrent access sees the old or the new map."""

    _kind = "mmio"

    def __init__(self) -> None:
        super().__init__()
        # (bases, ranges): sorted bases and, parallel to them, (end, mmio_read, mmio_write).
        self._map: tuple[list[int], list[tuple[int, _Read, _Write]]] = ([], [])

    def register(self, base: int, length: int, device: Any, name: str | None = None) -> None:
        """Claim base..base+length-1 for a device with mmio_read/mmio_write."""
        self._add(base, length, device, name, None)
        self._rebuild()

    def unregister(self, base: int) -> None:
        """Release the range that starts at base."""
        kept = [r for r in self._registrations if r.base != base]
        if len(kept) != len(self._registrations):
            self._registrations = kept
            self.generation += 1
            self._rebuild()

    def _rebuild(self) -> None:
        regs = self.registrations()
        self._map = ([r.base for r in regs],
                     [(r.base + r.length, r.device.mmio_read, r.device.mmio_write) for r in regs])

    def read(self, addr: int, size: int) -> int:
        bases, ranges = self._map
        i = bisect_right(bases, addr) - 1
        if i >= 0:
            end, read, _ = ranges[i]
            if addr < end:
                return read(addr - bases[i], size)
        return self._unclaimed_read(addr, size)

    def write(self, addr: int, size: int, value: int) -> None:
        bases, ranges = self._map
        i = bisect_right(bases, addr) - 1
        if i >= 0:
            end, _, write = ranges[i]
            if addr < end:
                write(addr - bases[i], size, value)
                return
        self._unclaimed_write(addr, size, value)
