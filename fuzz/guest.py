"""Guest RAM for the fuzz targets and a hostile driver's writes into it.

Guest RAM is large (GUEST_RAM) so that descriptors aliasing it can declare far more bytes
than the host should ever allocate, and it is touched in full once, so that later growth
of the worker's peak RSS is host memory (limits.py). Everything an input writes lies in
the scratch area at the bottom, zeroed before each input:

    0x10000  queue q's descriptor table at 0x10000 + 0x4000 q, its driver area 0x1000 and
             its device area 0x2000 above that (room for 256 entries)
    0x20000  four indirect tables of 1024 entries, 0x4000 apart
    0x30000  the data window (request headers, payloads)

A descriptor's address and length are decoded from a selector byte into what matters to
a walker and a device (the data window, an indirect table, the rings themselves, big
buffers, the end of RAM, wrap-around, raw values), so a few input bytes build long,
aliasing, looping or overlapping chains.
"""
from __future__ import annotations

import struct
from functools import lru_cache

from pyvisor._native import lib
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import MemoryLayout

from .stream import Reader, Writer

MIB = 1 << 20
GUEST_RAM = 256 * MIB
RING_BASE = 0x10000
QUEUE_STRIDE = 0x4000
DRIVER_AREA = 0x1000
DEVICE_AREA = 0x2000
MAX_QUEUES = 4
INDIRECT_BASE = 0x20000
INDIRECT_STRIDE = 0x4000
INDIRECT_TABLES = 4
INDIRECT_ENTRIES = INDIRECT_STRIDE // 16
DATA_BASE = 0x30000
DATA_SIZE = 0x10000
SCRATCH_END = DATA_BASE + DATA_SIZE
BIG_BASE = 16 * MIB

DESC = struct.Struct("<QIHH")
F_NEXT, F_WRITE, F_INDIRECT = lib.VRING_DESC_F_NEXT, lib.VRING_DESC_F_WRITE, lib.VRING_DESC_F_INDIRECT
_ZEROS = bytes(SCRATCH_END)


@lru_cache(maxsize=None)
def guest_memory() -> GuestMemory:
    """The process's guest RAM, every page touched once."""
    mem = GuestMemory(MemoryLayout(GUEST_RAM))
    chunk = bytes(16 * MIB)
    for gpa in range(0, GUEST_RAM, len(chunk)):
        mem.write(gpa, chunk)
    return mem


def clear_scratch(mem: GuestMemory) -> None:
    mem.write(0, _ZEROS)


def ring_addresses(queue: int) -> tuple[int, int, int]:
    """Where the driver puts queue `queue`'s descriptor table, driver and device areas."""
    base = RING_BASE + QUEUE_STRIDE * (queue % MAX_QUEUES)
    return base, base + DRIVER_AREA, base + DEVICE_AREA


def indirect_table(index: int) -> int:
    return INDIRECT_BASE + INDIRECT_STRIDE * (index % INDIRECT_TABLES)


# --- descriptor fields from selector bytes ----------------------------------------------------
ADDR_DATA, ADDR_INDIRECT, ADDR_RING, ADDR_BIG, ADDR_END, ADDR_ZERO, ADDR_WRAP, ADDR_RAW = range(8)
LEN_SMALL, LEN_MEDIUM, LEN_TABLE, LEN_8M, LEN_REST, LEN_HUGE_TABLE, LEN_ZERO, LEN_RAW = range(8)
FLAG_CHOICES = (0, F_NEXT, F_WRITE, F_NEXT | F_WRITE, F_INDIRECT, F_INDIRECT | F_NEXT,
                F_INDIRECT | F_WRITE, None)   # None: a raw 16-bit value


def read_addr(r: Reader) -> int:
    sel = r.u8() % 8
    if sel == ADDR_DATA:
        return DATA_BASE + r.u16() % DATA_SIZE
    if sel == ADDR_INDIRECT:
        return indirect_table(r.u8()) + 16 * (r.u8() % 16)
    if sel == ADDR_RING:
        return RING_BASE + r.u16() % (QUEUE_STRIDE * MAX_QUEUES)
    if sel == ADDR_BIG:
        return BIG_BASE + MIB * (r.u8() % (GUEST_RAM // MIB - 16))
    if sel == ADDR_END:
        return GUEST_RAM - r.u16()
    if sel == ADDR_ZERO:
        return 0
    if sel == ADDR_WRAP:
        return (1 << 64) - 1 - r.u16()
    return r.u64()


def read_length(r: Reader, addr: int) -> int:
    sel = r.u8() % 8
    if sel == LEN_SMALL:
        return r.u8()
    if sel == LEN_MEDIUM:
        return r.u16()
    if sel == LEN_TABLE:
        return 16 * (r.u16() % (INDIRECT_ENTRIES + 1))
    if sel == LEN_8M:
        return 8 * MIB
    if sel == LEN_REST:
        return max(GUEST_RAM - addr, 0) & 0xFFFFFFFF
    if sel == LEN_HUGE_TABLE:
        return 16 << (r.u8() % 24)      # up to 128 MiB of table: 8M entries declared
    if sel == LEN_ZERO:
        return 0
    return r.u32()


def read_desc(r: Reader) -> tuple[int, int, int, int]:
    """(addr, len, flags, next) of one descriptor."""
    addr = read_addr(r)
    length = read_length(r, addr)
    flags = r.pick(FLAG_CHOICES)
    if flags is None:
        flags = r.u16()
    nxt = r.u8()
    if nxt == 0xFF:
        nxt = r.u16()
    return addr, length, flags, nxt


# Bytes of argument each selector reads (ADDR_INDIRECT: table, then entry, one byte each).
ADDR_ARG = {ADDR_DATA: 2, ADDR_INDIRECT: 2, ADDR_RING: 2, ADDR_BIG: 1, ADDR_END: 2,
            ADDR_ZERO: 0, ADDR_WRAP: 2, ADDR_RAW: 8}
LEN_ARG = {LEN_SMALL: 1, LEN_MEDIUM: 2, LEN_TABLE: 2, LEN_8M: 0, LEN_REST: 0,
           LEN_HUGE_TABLE: 1, LEN_ZERO: 0, LEN_RAW: 4}


def seed_desc(w: Writer, addr_sel: int, addr_arg: int, len_sel: int, len_arg: int,
              flags: int, nxt: int = 0) -> Writer:
    """The seed-side counterpart of read_desc; `flags` is an index into FLAG_CHOICES."""
    w.u8(addr_sel).raw(addr_arg.to_bytes(ADDR_ARG[addr_sel], "little"))
    w.u8(len_sel).raw(len_arg.to_bytes(LEN_ARG[len_sel], "little"))
    return w.u8(flags).u8(nxt)


class Rings:
    """The driver's side of the queues in the scratch area: descriptors (direct and in
    indirect tables), available rings, notification fields, the data window."""

    def __init__(self, mem: GuestMemory, sizes: list[int]) -> None:
        self.mem = mem
        self.sizes = sizes
        self.avail_idx = [0] * len(sizes)

    def _size(self, q: int) -> int:
        size = self.sizes[q]
        return size if 0 < size <= 256 else 256     # where a bogus size is, write as if 256

    def desc(self, q: int, index: int, d: tuple[int, int, int, int]) -> None:
        base, _, _ = ring_addresses(q)
        self.mem.write(base + 16 * (index % 256), DESC.pack(*d))

    def run(self, table: int, entries: int, start: int, count: int,
            d: tuple[int, int, int, int], loop: bool) -> None:
        """`count` copies of descriptor `d` from `start`, linked by NEXT (the last one
        without NEXT, or back to `start` with `loop`), in a table of `entries`."""
        addr, length, flags, _ = d
        count = max(1, min(count, entries))
        for i in range(count):
            index = (start + i) % entries
            last = i == count - 1
            nxt = start % entries if last else (index + 1) % entries
            f = flags | F_NEXT if not last or loop else flags & ~F_NEXT
            self.mem.write(table + 16 * index, DESC.pack(addr, length, f & 0xFFFF, nxt))

    def publish(self, q: int, head: int, times: int = 1) -> None:
        _, avail, _ = ring_addresses(q)
        size = self._size(q)
        for _ in range(times):
            idx = self.avail_idx[q]
            self.mem.write_u16(avail + 4 + 2 * (idx % size), head)
            self.avail_idx[q] = (idx + 1) & 0xFFFF
        self.mem.write_u16(avail + 2, self.avail_idx[q])

    def set_avail_idx(self, q: int, value: int) -> None:
        _, avail, _ = ring_addresses(q)
        self.avail_idx[q] = value & 0xFFFF
        self.mem.write_u16(avail + 2, self.avail_idx[q])

    def events(self, q: int, avail_flags: int, used_event: int, avail_event: int) -> None:
        _, avail, used = ring_addresses(q)
        size = self._size(q)
        self.mem.write_u16(avail, avail_flags)
        self.mem.write_u16(avail + 4 + 2 * size, used_event)
        self.mem.write_u16(used + 4 + 8 * size, avail_event)

    def data(self, offset: int, payload: bytes) -> None:
        offset %= DATA_SIZE
        self.mem.write(DATA_BASE + offset, payload[:DATA_SIZE - offset])

    # --- the program ops that write guest RAM, decoded from the input --------------------
    def op(self, code: int, r: Reader) -> None:
        """Run ring op `code` (0 .. RING_OPS - 1) with its arguments from `r`."""
        nq = len(self.sizes)
        if code == OP_DESC:
            q, index = r.u8() % nq, r.u16()
            self.desc(q, index, read_desc(r))
        elif code == OP_RUN:
            q, start, count, loop = r.u8() % nq, r.u8(), r.u16(), r.u8() & 1
            base, _, _ = ring_addresses(q)
            self.run(base, self._size(q), start, count, read_desc(r), bool(loop))
        elif code == OP_INDIRECT:
            t, index = r.u8(), r.u16() % INDIRECT_ENTRIES
            self.mem.write(indirect_table(t) + 16 * index, DESC.pack(*read_desc(r)))
        elif code == OP_INDIRECT_RUN:
            t, start, count, loop = r.u8(), r.u16(), r.u16(), r.u8() & 1
            self.run(indirect_table(t), INDIRECT_ENTRIES, start, count, read_desc(r),
                     bool(loop))
        elif code == OP_PUBLISH:
            q, head, times = r.u8() % nq, r.u8(), r.u8() % 8 or 1
            self.publish(q, head if head != 0xFF else r.u16(), times)
        elif code == OP_PUBLISH_MANY:
            q, head, times = r.u8() % nq, r.u8(), r.u16() % 1024
            self.publish(q, head, times)
        elif code == OP_AVAIL_IDX:
            self.set_avail_idx(r.u8() % nq, r.u16())
        elif code == OP_EVENTS:
            self.events(r.u8() % nq, r.u16(), r.u16(), r.u16())
        elif code == OP_DATA:
            offset, n = r.u16(), r.u8()
            self.data(offset, r.bytes(n))


(OP_DESC, OP_RUN, OP_INDIRECT, OP_INDIRECT_RUN, OP_PUBLISH, OP_PUBLISH_MANY, OP_AVAIL_IDX,
 OP_EVENTS, OP_DATA) = range(9)
RING_OPS = 9
