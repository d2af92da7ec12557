"""The driver's side of a split virtqueue (virtio 1.2, 2.7), for the host-side virtio tests,
plus small fakes of what the virtio-pci transport is wired to (vm, GSI router, I/O loop,
MMIO bus, INTx line).

`Driver` lays out a descriptor table, an available ring and a used ring in real guest
memory (GuestMemory over a small MemoryLayout, no KVM needed), allocates data buffers from
a bump allocator, makes chains available (direct or through an indirect table) and reads
back what the device put in the used ring. Hostile tests write raw descriptors with
`write_desc` and publish any head with `publish`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pyvisor._native import lib
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import MemoryLayout

RAM_SIZE = 2 << 20

F_NEXT = lib.VRING_DESC_F_NEXT
F_WRITE = lib.VRING_DESC_F_WRITE
F_INDIRECT = lib.VRING_DESC_F_INDIRECT

EVENT_IDX = lib.VIRTIO_RING_F_EVENT_IDX
INDIRECT_DESC = lib.VIRTIO_RING_F_INDIRECT_DESC
VERSION_1 = lib.VIRTIO_F_VERSION_1

DESC = struct.Struct("<QIHH")


def new_memory() -> GuestMemory:
    return GuestMemory(MemoryLayout(RAM_SIZE))


@dataclass
class Buf:
    """One buffer of a chain as the driver sees it."""
    addr: int
    length: int
    writable: bool = False


class Driver:
    """A split virtqueue of `size` entries, driver side. The rings live at `base`; data
    buffers are allocated from `data_base` up."""

    def __init__(self, mem: GuestMemory, size: int, *, base: int = 0x10000,
                 data_base: int = 0x100000) -> None:
        self.mem = mem
        self.size = size
        self.desc_addr = base
        self.avail_addr = base + 16 * size
        self.used_addr = (self.avail_addr + 6 + 2 * size + 3) & ~3
        self.end = self.used_addr + 6 + 8 * size
        mem.fill(base, self.end - base, 0)
        self._data = data_base
        self._next_desc = 0
        self.avail_idx = 0
        self.last_used = 0

    # --- setting a device-side Virtqueue up directly (what a transport would do) ---------
    def configure(self, queue) -> None:
        queue.size = self.size
        queue.desc_addr = self.desc_addr
        queue.driver_addr = self.avail_addr
        queue.device_addr = self.used_addr
        queue.enabled = True

    # --- memory ---------------------------------------------------------------------------
    def alloc(self, length: int, data: bytes | None = None, fill: int = 0, align: int = 16) -> int:
        addr = (self._data + align - 1) & ~(align - 1)
        self._data = addr + length
        if self._data > RAM_SIZE:
            raise MemoryError("test data area exhausted")
        if data is not None:
            assert len(data) <= length
            self.mem.write(addr, data)
        else:
            self.mem.fill(addr, length, fill)
        return addr

    def read(self, addr: int, length: int) -> bytes:
        return self.mem.read(addr, length)

    # --- descriptors ----------------------------------------------------------------------
    def write_desc(self, index: int, addr: int, length: int, flags: int = 0, nxt: int = 0,
                   table: int | None = None) -> None:
        """Write descriptor `index` of the queue's table (or of the table at `table`)."""
        base = self.desc_addr if table is None else table
        self.mem.write(base + 16 * index, DESC.pack(addr, length, flags, nxt))

    def _take(self, count: int) -> list[int]:
        if count > self.size:
            raise ValueError("chain longer than the queue: use an indirect table")
        out = [(self._next_desc + i) % self.size for i in range(count)]
        self._next_desc = (self._next_desc + count) % self.size
        return out

    def add(self, bufs: list[Buf], *, indirect: bool = False) -> int:
        """Make a chain of `bufs` available; return its head."""
        if indirect:
            table = self.alloc(16 * len(bufs))
            for i, b in enumerate(bufs):
                last = i == len(bufs) - 1
                self.write_desc(i, b.addr, b.length,
                                (F_WRITE if b.writable else 0) | (0 if last else F_NEXT),
                                0 if last else i + 1, table=table)
            head, = self._take(1)
            self.write_desc(head, table, 16 * len(bufs), F_INDIRECT)
        else:
            indices = self._take(len(bufs))
            for i, (index, b) in enumerate(zip(indices, bufs)):
                last = i == len(bufs) - 1
                self.write_desc(index, b.addr, b.length,
                                (F_WRITE if b.writable else 0) | (0 if last else F_NEXT),
                                0 if last else indices[i + 1])
            head = indices[0]
        self.publish(head)
        return head

    def publish(self, head: int) -> None:
        """Put `head` in the next available-ring slot and move the available index on."""
        self.mem.write_u16(self.avail_addr + 4 + 2 * (self.avail_idx % self.size), head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.mem.write_u16(self.avail_addr + 2, self.avail_idx)

    def set_avail_idx(self, value: int) -> None:
        self.avail_idx = value & 0xFFFF
        self.mem.write_u16(self.avail_addr + 2, self.avail_idx)

    # --- notification suppression ---------------------------------------------------------
    def set_avail_flags(self, flags: int) -> None:
        self.mem.write_u16(self.avail_addr, flags)

    def set_used_event(self, value: int) -> None:
        self.mem.write_u16(self.avail_addr + 4 + 2 * self.size, value & 0xFFFF)

    @property
    def avail_event(self) -> int:
        return self.mem.read_u16(self.used_addr + 4 + 8 * self.size)

    def set_avail_event(self, value: int) -> None:
        self.mem.write_u16(self.used_addr + 4 + 8 * self.size, value)

    # --- the used ring --------------------------------------------------------------------
    @property
    def used_idx(self) -> int:
        return self.mem.read_u16(self.used_addr + 2)

    def used_elem(self, slot: int) -> tuple[int, int]:
        """(id, len) in used-ring slot `slot` (taken modulo the queue size)."""
        return struct.unpack("<II", self.mem.read(self.used_addr + 4 + 8 * (slot % self.size), 8))

    def get_used(self) -> list[tuple[int, int]]:
        """The (id, len) entries the device added since the last call."""
        out = []
        idx = self.used_idx
        while self.last_used != idx:
            out.append(self.used_elem(self.last_used))
            self.last_used = (self.last_used + 1) & 0xFFFF
        return out


def init_device(device, mem: GuestMemory, drivers: list[Driver | None], *,
                features: int | None = None) -> list:
    """Drive a VirtioDevice through the status sequence of 3.1.1 directly (no transport):
    ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues, DRIVER_OK. Returns the list the
    interrupt callback records (kind, vector) into; attach() is called if not done yet."""
    calls = getattr(device, "_test_interrupts", None)
    if calls is None:
        calls = []
        device._test_interrupts = calls
        device.attach(mem, lambda kind, vector: calls.append((kind, vector)))
    device.set_status(lib.VIRTIO_CONFIG_S_ACKNOWLEDGE)
    device.set_status(lib.VIRTIO_CONFIG_S_ACKNOWLEDGE | lib.VIRTIO_CONFIG_S_DRIVER)
    device.driver_features = device.device_features if features is None else features
    ok = lib.VIRTIO_CONFIG_S_ACKNOWLEDGE | lib.VIRTIO_CONFIG_S_DRIVER | lib.VIRTIO_CONFIG_S_FEATURES_OK
    device.set_status(ok)
    assert device.status & lib.VIRTIO_CONFIG_S_FEATURES_OK, "features refused"
    for queue, drv in zip(device.queues, drivers):
        if drv is not None:
            drv.configure(queue)
    device.set_status(ok | lib.VIRTIO_CONFIG_S_DRIVER_OK)
    return calls


# --- fakes of what the transports are wired to ----------------------------------------------

@dataclass
class FakeVm:
    ioeventfds: list = field(default_factory=list)     # (fd, addr, length, deassign)
    irqfds: list = field(default_factory=list)         # (fd, gsi, deassign)
    routings: list = field(default_factory=list)       # each set_gsi_routing table

    def ioeventfd(self, fd, addr, length, *, pio=False, datamatch=None, deassign=False):
        self.ioeventfds.append((fd, addr, length, deassign))

    def irqfd(self, fd, gsi, *, deassign=False):
        self.irqfds.append((fd, gsi, deassign))

    def set_gsi_routing(self, routes):
        self.routings.append(list(routes))

    def fd_for_gsi(self, gsi: int) -> int:
        return next(fd for fd, g, deassign in self.irqfds if g == gsi and not deassign)


class FakeRouter:
    def __init__(self, first: int = 24) -> None:
        self.next = first
        self.allocated: list[int] = []
        self.routes: dict[int, tuple[int, int]] = {}
        self.calls: list[tuple[int, int, int]] = []

    def allocate(self) -> int:
        gsi, self.next = self.next, self.next + 1
        self.allocated.append(gsi)
        return gsi

    def set_msi(self, gsi, address, data):
        self.calls.append((gsi, address, data))
        self.routes[gsi] = (address, data)


class FakeIoLoop:
    def __init__(self) -> None:
        self.handlers: dict[int, object] = {}

    def add_eventfd(self, fd, handler):
        self.handlers[fd] = handler

    def add(self, fd, handler):
        self.handlers[fd] = handler

    def remove(self, fd):
        self.handlers.pop(fd, None)


class FakeMmioBus:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.mapped: dict[int, tuple[int, object]] = {}

    def register(self, base, length, device, name=None):
        self.calls.append(("register", base, length))
        self.mapped[base] = (length, device)

    def unregister(self, base):
        self.calls.append(("unregister", base))
        del self.mapped[base]


class IrqLine:
    """Records irq_line(gsi, level) calls and tracks each line's level."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bool]] = []
        self.level: dict[int, bool] = {}

    def __call__(self, gsi: int, level: bool) -> None:
        self.calls.append((gsi, level))
        self.level[gsi] = level
