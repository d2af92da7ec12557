"""virtio-blk's queues as the C data path (native/blk_ring.c) sees them.

`RingQueue` is a Virtqueue whose ring indices (last_avail, used_idx, the used index last
signalled) live in a `struct pvb_queue`, next to the ring addresses and the guest's RAM
regions, so C can pop chains and push used entries and Python, serving what C leaves to
it, snapshots and restores always see the same indices: nothing to copy back and forth.
"""
from __future__ import annotations

from ..._native import ffi as native_ffi
from ..._uring import ffi, lib
from ...memory.guest_memory import GuestMemory
from .queue import Virtqueue


def _index_field(name: str) -> property:
    def get(self: "RingQueue") -> int:
        return getattr(self.c, name)

    def set_(self: "RingQueue", value: int) -> None:
        setattr(self.c, name, value)
    return property(get, set_, doc=f"{name}, kept in the C queue")


class RingQueue(Virtqueue):
    """A split virtqueue that the C data path can serve (`c`, a `struct pvb_queue *`)."""

    last_avail = _index_field("last_avail")
    used_idx = _index_field("used_idx")
    _signalled_used = _index_field("signalled_used")

    def __init__(self, max_size: int, index: int) -> None:
        self.c = ffi.new("struct pvb_queue *")
        self.c.index = index
        self._keep: tuple = ()
        super().__init__(max_size)

    def reset(self) -> None:
        super().reset()
        self.c.desc = self.c.avail = self.c.used = ffi.NULL
        self.c.nregions = 0
        self._keep = ()

    def activate(self, mem: GuestMemory, *, event_idx: bool, indirect: bool) -> None:
        super().activate(mem, event_idx=event_idx, indirect=indirect)
        c = self.c
        regions = list(zip(mem.regions, mem.written_maps))
        c.desc, c.avail, c.used = (_host(regions, gpa) for gpa in (
            self.desc_addr, self.driver_addr, self.device_addr))
        c.size, c.event_idx, c.indirect = self.size, event_idx, indirect
        # More regions than the C table holds: C translates nothing and leaves every
        # chain to Python (no layout pyvisor builds has that many).
        c.nregions = len(regions) if len(regions) <= lib.PVB_MAX_REGIONS else 0
        for i, ((gpa, size, host), written) in enumerate(regions[:c.nregions]):
            slot = c.regions[i]
            slot.gpa, slot.size = gpa, size
            slot.host = ffi.cast("uint8_t *", host)
            slot.written = ffi.cast("uint8_t *", int(native_ffi.cast("uintptr_t", written)))
        self._keep = regions   # guest RAM stays mapped while C points into it

    def needs_interrupt(self) -> bool:
        """As Virtqueue's, in one call."""
        return bool(lib.pvb_needs_interrupt(self.c))

    @property
    def in_flight(self) -> int:
        """Requests the C path has in flight on this queue."""
        return self.c.in_flight


def _host(regions: list, gpa: int):
    """The host address of guest-physical gpa, an area activate() found inside RAM."""
    for (start, size, host), _ in regions:
        if start <= gpa < start + size:
            return ffi.cast("uint8_t *", host + gpa - start)
    raise AssertionError(f"{gpa:#x} is outside guest RAM")
