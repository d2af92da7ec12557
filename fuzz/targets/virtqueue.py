"""The split-virtqueue walker on its own: activation with any size and addresses, then
pops, pushes and unpops over descriptors, indirect tables and rings the input writes.

Invariants: activation and pops fail only with QueueError (after which the queue is
dead, as the transport resets the device); a popped chain has a head inside the queue
and at most MAX_CHAIN buffers; push and needs_interrupt never fail for a popped head."""
from __future__ import annotations

from pyvisor.devices.virtio.queue import MAX_CHAIN, QueueError, Virtqueue

from ..devices import InvariantError, Seed
from ..guest import (ADDR_DATA, ADDR_INDIRECT, GUEST_RAM, LEN_HUGE_TABLE, LEN_SMALL,
                     OP_INDIRECT_RUN, RING_OPS, Rings, clear_scratch, guest_memory,
                     ring_addresses, seed_desc)
from ..stream import Reader, Writer

ERRORS = (QueueError,)
MAX_SIZE = 256
OP_POP, OP_PUSH, OP_UNPOP, OP_INTERRUPT = range(RING_OPS, RING_OPS + 4)
OPS = RING_OPS + 4


def _area(r: Reader, addr: int) -> int:
    """Where the input puts one ring area: the usual place, misaligned, across the end of
    RAM, or anywhere."""
    sel = r.u8() % 8
    if sel == 4:
        return addr + 1
    if sel == 5:
        return GUEST_RAM - r.u16()
    if sel == 6:
        return r.u64()
    return addr + 2 if sel == 7 else addr


def make():
    mem = guest_memory()

    def run(data: bytes) -> None:
        r = Reader(data)
        clear_scratch(mem)
        q = Virtqueue(MAX_SIZE)
        sel = r.u8()
        q.size = MAX_SIZE >> sel % 9 if sel < 0xF0 else r.u16()
        q.desc_addr, q.driver_addr, q.device_addr = (
            _area(r, a) for a in ring_addresses(0))
        flags = r.u8()
        rings = Rings(mem, [q.size])
        q.activate(mem, event_idx=bool(flags & 1), indirect=not flags & 2)
        popped: list[int] = []
        while r.more:
            code = r.u8() % OPS
            if code < RING_OPS:
                rings.op(code, r)
            elif code == OP_POP:
                for _ in range(r.u8() % 8 + 1):
                    chain = q.pop()
                    if chain is None:
                        break
                    buffers = len(chain.readable) + len(chain.writable)
                    if chain.head >= q.size or buffers > MAX_CHAIN:
                        raise InvariantError(f"popped head {chain.head} of a {q.size}-entry "
                                             f"queue with {buffers} buffers")
                    popped.append(chain.head)
            elif code == OP_PUSH and popped:
                q.push(popped.pop(r.u8() % len(popped)), r.u32())
            elif code == OP_UNPOP and popped:
                n = r.u8() % len(popped) + 1
                q.unpop(n)
                del popped[-n:]
            elif code == OP_INTERRUPT:
                q.needs_interrupt()
    return run


def seeds() -> list[bytes]:
    # size, three area selectors, flags: all zero is the usual layout with both features
    header = bytes(5)
    bodies = [
        Seed(header=header).chain(0, 0, [(0, 16, False), (0x100, 64, True)]).publish(0, 0),
        Seed(header=header).chain(0, 0, [(0, 16, False)], then=0).publish(0, 0),   # a loop
    ]
    # issue 8: a 2-entry cycle in an indirect table declared 8M entries (128 MiB) long
    bodies.append(Seed(header=header).desc(0, 0, ADDR_INDIRECT, 0, LEN_HUGE_TABLE, 23, 4)
                  .publish(0, 0))
    cycle = Writer().u8(OP_INDIRECT_RUN).u8(0).u16(0).u16(2).u8(1)
    seed_desc(cycle, ADDR_DATA, 0, LEN_SMALL, 16, 0)
    bodies[-1].w.raw(cycle.data())
    out = []
    for body in bodies:
        data = body.data_bytes()
        out.append(data + bytes([OP_POP, 0, OP_PUSH, 0, 0, 0, 0, 0, OP_INTERRUPT]))
    return out
