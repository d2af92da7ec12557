"""KVM memory slots for guest RAM, with single pages carved out of them.

Guest RAM is one slot per RAM region until a page is carved out: then the region is split
around it, and the page itself is either a read-only slot (reads run at full speed, writes
exit to userspace as MMIO) or no slot at all (every access exits). Page-protection
watchpoints use this where the debug registers cannot watch data (KVM's instruction
emulator, which runs every guest on a PVM host, never checks data breakpoints).
Slots are rebuilt with every vCPU out of KVM_RUN.

With dirty logging on (snapshots), every writable slot carries KVM_MEM_LOG_DIRTY_PAGES;
`before_change` is called before slots are deleted, since their dirty logs go with them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from .._native import lib

PAGE = 0x1000

SetRegion = Callable[[int, int, int, int, int], None]   # slot, gpa, size, host_addr, flags


class MemorySlots:
    def __init__(self, set_region: SetRegion, regions: Sequence[tuple[int, int, int]]) -> None:
        self._set_region = set_region
        self._regions = list(regions)        # (gpa, size, host_addr)
        self._carved: dict[int, bool] = {}   # page gpa -> read-only (else: no slot)
        self._count = 0
        self.dirty_log = False
        self.before_change: Callable[[], None] | None = None
        self.generation = 0                  # counts layout changes (slot numbers move)
        self.apply()

    def set_dirty_log(self, on: bool) -> None:
        """Turn KVM's dirty page log on or off for guest RAM (the flags change in place:
        the slots stay mapped)."""
        if on != self.dirty_log:
            if self.before_change is not None:
                self.before_change()
            self.dirty_log = on
            for slot, (gpa, size, host, flags) in enumerate(self.layout()):
                self._set_region(slot, gpa, size, host, flags)

    def logged_slots(self) -> list[tuple[int, int, int]]:
        """(slot, gpa, size) of every slot KVM keeps a dirty log for."""
        return [(slot, gpa, size) for slot, (gpa, size, _, flags) in enumerate(self.layout())
                if flags & lib.KVM_MEM_LOG_DIRTY_PAGES]

    def carve(self, page: int, readonly: bool) -> None:
        """Make the RAM page at gpa `page` read-only (or absent) for the guest."""
        if page % PAGE or self._region_of(page) is None:
            raise ValueError(f"{page:#x} is not a page of guest RAM")
        self._carved[page] = readonly
        self.apply()

    def restore(self, page: int) -> None:
        if self._carved.pop(page, None) is not None:
            self.apply()

    def layout(self) -> list[tuple[int, int, int, int]]:
        """The slots as (gpa, size, host_addr, flags), in order."""
        slots = []
        ram = lib.KVM_MEM_LOG_DIRTY_PAGES if self.dirty_log else 0
        for gpa, size, host in self._regions:
            start = gpa
            for page in sorted(p for p in self._carved if gpa <= p < gpa + size):
                if page > start:
                    slots.append((start, page - start, host + start - gpa, ram))
                if self._carved[page]:
                    slots.append((page, PAGE, host + page - gpa, lib.KVM_MEM_READONLY))
                start = page + PAGE
            if start < gpa + size:
                slots.append((start, gpa + size - start, host + start - gpa, ram))
        return slots

    def apply(self) -> None:
        if self.before_change is not None and self._count:
            self.before_change()
        for slot in range(self._count):
            self._set_region(slot, 0, 0, 0, 0)      # size 0 deletes a slot
        layout = self.layout()
        for slot, (gpa, size, host, flags) in enumerate(layout):
            self._set_region(slot, gpa, size, host, flags)
        self._count = len(layout)
        self.generation += 1

    def _region_of(self, gpa: int) -> tuple[int, int, int] | None:
        return next((r for r in self._regions if r[0] <= gpa < r[0] + r[1]), None)
