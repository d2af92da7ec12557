"""Watchpoints by page protection, for hosts whose KVM cannot watch data with the debug
registers (on PVM every guest instruction runs in KVM's emulator, which checks
instruction breakpoints but never data breakpoints).

The page holding a watched address is carved out of guest RAM (memory.slots): read-only
for a write watchpoint, absent for a read/write one, so the guest's accesses to that page
exit as MMIO. A `WatchedPage` on the MMIO bus performs them on guest RAM itself and reports
the ones that touch a watched range; the rest of the page works as before, only slower.
A page that is absent cannot hold code the guest runs, so an "rw" watchpoint belongs on data.
"""
from __future__ import annotations

from collections.abc import Callable

from ..memory.guest_memory import GuestMemory
from ..memory.slots import PAGE, MemorySlots


class WatchedPage:
    """The MMIO device standing in for one carved-out page of RAM."""

    def __init__(self, memory: GuestMemory, base: int, on_hit: Callable[[object], None]) -> None:
        self._memory, self._base, self._on_hit = memory, base, on_hit
        self.points: list = []       # Watchpoints whose physical address is in this page

    def _touched(self, offset: int, size: int, writing: bool) -> None:
        gpa = self._base + offset
        for point in self.points:
            if (writing or point.access == "rw") and \
                    gpa < point.physical + point.length and point.physical < gpa + size:
                self._on_hit(point)

    def mmio_read(self, offset: int, size: int) -> int:
        value = int.from_bytes(self._memory.read(self._base + offset, size), "little")
        self._touched(offset, size, writing=False)
        return value

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self._memory.write(self._base + offset, value.to_bytes(size, "little"))
        self._touched(offset, size, writing=True)


class PageWatches:
    """Which pages are carved out for which watchpoints."""

    def __init__(self, slots: MemorySlots, memory: GuestMemory, mmio_bus,
                 on_hit: Callable[[object], None]) -> None:
        self._slots, self._memory, self._bus, self._on_hit = slots, memory, mmio_bus, on_hit
        self._pages: dict[int, WatchedPage] = {}

    def add(self, point) -> None:
        page = point.physical & ~(PAGE - 1)
        device = self._pages.get(page)
        if device is None:
            device = WatchedPage(self._memory, page, self._on_hit)
            self._bus.register(page, PAGE, device, f"watched page {page:#x}")
            self._pages[page] = device
        device.points.append(point)
        self._carve(page, device)

    def remove(self, point) -> None:
        page = point.physical & ~(PAGE - 1)
        device = self._pages[page]
        device.points.remove(point)
        if device.points:
            self._carve(page, device)
            return
        del self._pages[page]
        self._slots.restore(page)
        self._bus.unregister(page)

    def _carve(self, page: int, device: WatchedPage) -> None:
        self._slots.carve(page, readonly=all(p.access == "write" for p in device.points))
