"""Split virtqueues (virtio 1.2, 2.7), from the device's side, with every descriptor checked.

The driver owns three areas in guest RAM: the descriptor table (16 bytes per entry), the
available ring ("driver area") and the used ring ("device area"). The device pops chains
that the driver made available and pushes them back as used. A guest can put anything in
those areas, so a chain is validated before a device sees it: indices inside the queue,
buffers inside guest RAM, indirect tables only when negotiated and never nested,
device-readable buffers before device-writable ones, and bounded length: at most the
queue size descriptors in the queue's table and at most MAX_CHAIN in all, indirect ones
included (Linux builds indirect chains longer than the queue; QEMU takes up to 1024). An
indirect table longer than MAX_CHAIN entries is refused before it is read, so walking a
chain (loops included) costs at most MAX_CHAIN steps whatever lengths the guest declares.
A violation raises QueueError; the transport then marks the device DEVICE_NEEDS_RESET.

Buffers are views onto guest RAM, never copies: descriptors may alias the same memory, so
their lengths add up to far more than the guest has, and a device must take a bounded
amount from a chain rather than anything in proportion to those lengths.
"""
from __future__ import annotations

import struct

from ..._native import lib
from ...errors import GuestMemoryError
from ...memory.guest_memory import GuestMemory
from ..state import DeviceStateError, capture, restore_fields

DESC = struct.Struct("<QIHH")          # addr, len, flags, next
USED_ELEM = struct.Struct("<II")       # id, len
U16 = struct.Struct("<H")

F_NEXT = lib.VRING_DESC_F_NEXT
F_WRITE = lib.VRING_DESC_F_WRITE
F_INDIRECT = lib.VRING_DESC_F_INDIRECT
MAX_CHAIN = 1024                       # descriptors per chain in all (QEMU's VIRTQUEUE_MAX_SIZE)


class QueueError(Exception):
    """The driver broke the virtqueue rules; the message says how (for the log)."""


class Chain:
    """One popped descriptor chain: its head (to return it as used) and its buffers as
    zero-copy views onto guest RAM, device-readable ones first."""
    __slots__ = ("head", "readable", "writable")

    def __init__(self, head: int) -> None:
        self.head = head
        self.readable: list[memoryview] = []
        self.writable: list[memoryview] = []

    @property
    def readable_size(self) -> int:
        return sum(len(b) for b in self.readable)

    @property
    def writable_size(self) -> int:
        return sum(len(b) for b in self.writable)

    def read(self, limit: int, offset: int = 0) -> bytes:
        """`limit` bytes (fewer if there are not that many) of what the driver gave the
        device, in order, from byte `offset` on: a device reads what it parses, never the
        whole chain."""
        out = bytearray()
        for buf in self.readable:
            if len(out) >= limit:
                break
            if offset >= len(buf):
                offset -= len(buf)
                continue
            out += buf[offset:offset + limit - len(out)]
            offset = 0
        return bytes(out)

    def write(self, data: bytes | memoryview, offset: int = 0) -> int:
        """Copy data into the writable buffers from `offset`; return bytes written."""
        data = memoryview(data)
        done = 0
        for buf in self.writable:
            if offset >= len(buf):
                offset -= len(buf)
                continue
            n = min(len(buf) - offset, len(data) - done)
            buf[offset:offset + n] = data[done:done + n]
            done += n
            offset = 0
            if done == len(data):
                break
        return done


def _need_event(event: int, new: int, old: int) -> bool:
    """vring_need_event: did the index pass `event` moving from old to new (mod 2^16)?"""
    return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF


class Virtqueue:
    """One split virtqueue. The transport fills in size and the three addresses while the
    driver sets it up, then calls `activate`; a device calls `pop`, `push` and
    `needs_interrupt` (from the I/O thread)."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.reset()

    def reset(self) -> None:
        self.size = self.max_size
        self.desc_addr = self.driver_addr = self.device_addr = 0
        self.enabled = False
        self.msix_vector = lib.VIRTIO_MSI_NO_VECTOR
        self.last_avail = 0          # next available-ring slot to read
        self.used_idx = 0            # next used-ring slot to write
        self._signalled_used = 0     # used_idx at the last interrupt (EVENT_IDX)
        self._mem: GuestMemory | None = None
        self._event_idx = False
        self._indirect = False

    def activate(self, mem: GuestMemory, *, event_idx: bool, indirect: bool) -> None:
        """Check the areas the driver gave (alignment, inside RAM) and start using them."""
        size = self.size
        if not size or size & (size - 1) or size > self.max_size:
            raise QueueError(f"queue size {size} is not a power of two up to {self.max_size}")
        areas = ((self.desc_addr, 16 * size, 16, "descriptor table"),
                 (self.driver_addr, 6 + 2 * size, 2, "driver area"),
                 (self.device_addr, 6 + 8 * size, 4, "device area"))
        for addr, length, align, name in areas:
            if addr % align or not mem.contains(addr, length):
                raise QueueError(f"{name} at {addr:#x} (+{length}) is misaligned or outside "
                                 f"guest RAM")
        self._desc = mem.buffer(self.desc_addr, 16 * size)
        self._avail = mem.buffer(self.driver_addr, 6 + 2 * size)
        self._used = mem.buffer(self.device_addr, 6 + 8 * size)
        self._mem = mem
        self._event_idx = event_idx
        self._indirect = indirect

    @property
    def ready(self) -> bool:
        return self._mem is not None

    # --- snapshots ------------------------------------------------------------------------
    _STATE = ("size", "desc_addr", "driver_addr", "device_addr", "enabled", "msix_vector",
              "last_avail", "used_idx", "_signalled_used", "_event_idx", "_indirect")

    def snapshot_state(self) -> dict:
        """Size, areas, vector, the device's ring indices, and whether it is in use."""
        state = capture(self, self._STATE)
        state["ready"] = self.ready
        return state

    def restore_state(self, state: dict, mem: GuestMemory) -> None:
        """Back to a saved state; a queue that was in use is activated on its areas again."""
        self.reset()
        restore_fields(self, state, self._STATE, "virtqueue")
        if not all(0 <= getattr(self, n) <= 0xFFFF
                   for n in ("size", "last_avail", "used_idx", "_signalled_used")):
            raise DeviceStateError("virtqueue: a saved index is out of range")
        if state.get("ready"):
            try:
                self.activate(mem, event_idx=self._event_idx, indirect=self._indirect)
            except QueueError as e:
                raise DeviceStateError(f"virtqueue: {e}") from None

    def used_area(self) -> tuple[int, int] | None:
        """The used ring while the queue is in use: the device writes it at any time
        through the view it holds (so snapshots count it as always written)."""
        return (self.device_addr, 6 + 8 * self.size) if self.ready else None

    # --- consuming ------------------------------------------------------------------------
    def pop(self) -> Chain | None:
        """The next available chain, or None when the driver has made nothing new."""
        avail_idx = U16.unpack_from(self._avail, 2)[0]
        pending = (avail_idx - self.last_avail) & 0xFFFF
        if pending == 0:
            return None
        if pending > self.size:
            raise QueueError(f"available index moved {pending} entries ahead, more than the "
                             f"queue size {self.size}")
        slot = self.last_avail % self.size
        head = U16.unpack_from(self._avail, 4 + 2 * slot)[0]
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        if self._event_idx:   # ask to be notified as soon as the driver adds anything
            U16.pack_into(self._used, 4 + 8 * self.size, self.last_avail)
            # The store must be visible before the next load of avail idx, or a driver that
            # read the old avail_event skips its kick while we miss its new entry (a
            # store-load pair: x86 reorders it too; vhost and QEMU fence here as well).
            lib.pv_mb()
        return self._walk(head)

    def unpop(self, count: int = 1) -> None:
        """Give back the last `count` popped chains unused (a device that found it needs
        more buffers than the driver has posted yet); they are popped again later."""
        self.last_avail = (self.last_avail - count) & 0xFFFF

    def _walk(self, head: int) -> Chain:
        chain = Chain(head)
        table, count, index = self._desc, self.size, head
        indirect = False
        seen = 0          # descriptors of the current table visited (a loop ends it)
        total = 0         # descriptors of the whole chain
        while True:
            if index >= count:
                raise QueueError(f"descriptor index {index} is outside the "
                                 f"{'indirect table' if indirect else 'queue'} of {count}")
            seen += 1
            total += 1
            if seen > count or total > MAX_CHAIN:
                raise QueueError(f"descriptor chain from head {head} loops or is longer than "
                                 f"its table ({count} entries) or {MAX_CHAIN} in all")
            addr, length, flags, nxt = DESC.unpack_from(table, 16 * index)
            if flags & F_INDIRECT:
                if indirect or not self._indirect:
                    raise QueueError("nested indirect descriptor" if indirect
                                     else "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC")
                if flags & F_NEXT or length == 0 or length % 16:
                    raise QueueError(f"indirect descriptor with NEXT set or a length ({length}) "
                                     f"that is not a multiple of 16")
                if length // 16 > MAX_CHAIN:
                    raise QueueError(f"indirect table of {length // 16} entries, more than "
                                     f"{MAX_CHAIN}")
                table, count, index, seen, indirect = self._buffer(addr, length), length // 16, 0, 0, True
                total -= 1    # the indirect descriptor itself carries no buffer
                continue
            buf = self._buffer(addr, length)
            if flags & F_WRITE:
                chain.writable.append(buf)
            elif chain.writable:
                raise QueueError("a device-readable descriptor follows a device-writable one")
            else:
                chain.readable.append(buf)
            if not flags & F_NEXT:
                return chain
            index = nxt

    def _buffer(self, addr: int, length: int) -> memoryview:
        try:
            return self._mem.buffer(addr, length)
        except GuestMemoryError:
            raise QueueError(f"buffer {addr:#x} (+{length}) is outside guest RAM") from None

    # --- returning ------------------------------------------------------------------------
    def push(self, head: int, written: int) -> None:
        """Return chain `head` with `written` bytes in its writable buffers."""
        slot = self.used_idx % self.size
        USED_ELEM.pack_into(self._used, 4 + 8 * slot, head, written)
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        U16.pack_into(self._used, 2, self.used_idx)   # after the element (x86 keeps order)

    def needs_interrupt(self) -> bool:
        """Whether the driver wants an interrupt for what was pushed since the last one."""
        old, new = self._signalled_used, self.used_idx
        if old == new:
            return False
        self._signalled_used = new
        lib.pv_mb()   # used idx stored before used_event / flags are loaded (as above)
        if self._event_idx:
            used_event = U16.unpack_from(self._avail, 4 + 2 * self.size)[0]
            return _need_event(used_event, new, old)
        return not U16.unpack_from(self._avail, 0)[0] & lib.VRING_AVAIL_F_NO_INTERRUPT
