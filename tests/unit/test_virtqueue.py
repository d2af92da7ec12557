"""Split virtqueue, device side (pyvisor/devices/virtio/queue.py) against virtio 1.2, 2.7."""
import ctypes

import pytest

from pyvisor._native import lib
from pyvisor.devices.virtio.queue import QueueError, Virtqueue
from virtio_driver import (F_INDIRECT, F_NEXT, F_WRITE, RAM_SIZE, Buf, Driver, new_memory)

SIZE = 8


@pytest.fixture
def mem():
    return new_memory()


def make(mem, size=SIZE, *, event_idx=False, indirect=True, max_size=None):
    drv = Driver(mem, size)
    q = Virtqueue(max_size or size)
    drv.configure(q)
    q.activate(mem, event_idx=event_idx, indirect=indirect)
    return drv, q


def addr_of(mem, view):
    """Guest-physical address of a view returned by pop (it points into guest RAM)."""
    base = mem.buffer(0, 1)
    a = ctypes.addressof(ctypes.c_char.from_buffer(view))
    b = ctypes.addressof(ctypes.c_char.from_buffer(base))
    return a - b


# --- popping ----------------------------------------------------------------------------------

def test_pop_returns_readable_then_writable_views_at_the_right_addresses(mem):
    drv, q = make(mem)
    r1 = drv.alloc(10, b"0123456789")
    r2 = drv.alloc(3, b"abc")
    w1 = drv.alloc(7)
    w2 = drv.alloc(5)
    head = drv.add([Buf(r1, 10), Buf(r2, 3), Buf(w1, 7, True), Buf(w2, 5, True)])
    chain = q.pop()
    assert chain.head == head
    assert [len(b) for b in chain.readable] == [10, 3]
    assert [len(b) for b in chain.writable] == [7, 5]
    assert [addr_of(mem, b) for b in chain.readable] == [r1, r2]
    assert [addr_of(mem, b) for b in chain.writable] == [w1, w2]
    assert chain.read(100) == b"0123456789abc"
    assert chain.read(5) == b"01234"
    assert chain.readable_size == 13 and chain.writable_size == 12
    # writes land in guest RAM, spread over the writable buffers, from an offset
    assert chain.write(b"XYZWVUTSR", offset=2) == 9
    assert drv.read(w1, 7) == b"\0\0XYZWV"
    assert drv.read(w2, 5) == b"UTSR\0"
    assert q.pop() is None


def test_pop_returns_none_when_nothing_new(mem):
    drv, q = make(mem)
    assert q.pop() is None
    drv.add([Buf(drv.alloc(4), 4, True)])
    assert q.pop() is not None
    assert q.pop() is None
    assert q.pop() is None


def test_chains_come_in_ring_order_with_their_heads(mem):
    drv, q = make(mem)
    heads = [drv.add([Buf(drv.alloc(4), 4, True)]) for _ in range(3)]
    assert [q.pop().head for _ in range(3)] == heads
    assert q.pop() is None


def test_indirect_chain(mem):
    drv, q = make(mem)
    r = drv.alloc(16, b"header..........")
    ws = [drv.alloc(8) for _ in range(3)]
    head = drv.add([Buf(r, 16)] + [Buf(w, 8, True) for w in ws], indirect=True)
    chain = q.pop()
    assert chain.head == head
    assert [addr_of(mem, b) for b in chain.readable] == [r]
    assert [addr_of(mem, b) for b in chain.writable] == ws
    assert chain.read(100) == b"header.........."


def test_indirect_table_longer_than_the_queue_is_accepted(mem):
    drv, q = make(mem, size=4)
    bufs = [Buf(drv.alloc(4), 4, True) for _ in range(10)]
    drv.add(bufs, indirect=True)
    assert len(q.pop().writable) == 10


def test_chain_of_exactly_queue_size_descriptors_is_accepted(mem):
    drv, q = make(mem, size=4)
    drv.add([Buf(drv.alloc(4), 4, True) for _ in range(4)])
    assert len(q.pop().writable) == 4


def test_16_bit_indices_wrap_around(mem):
    drv, q = make(mem, size=4)
    # Start both sides just below 2^16, as after a long uptime.
    start = 0xFFFE
    drv.set_avail_idx(start)
    drv.avail_idx = start
    drv.last_used = start
    q.last_avail = start
    q.used_idx = start
    q._signalled_used = start
    heads = []
    for i in range(5):          # crosses 0xFFFF -> 0x0000 and wraps the 4-entry rings
        w = drv.alloc(4)
        head = drv.add([Buf(w, 4, True)])
        heads.append(head)
        chain = q.pop()
        assert chain is not None and chain.head == head
        q.push(chain.head, 4)
        assert q.pop() is None
    assert drv.used_idx == (start + 5) & 0xFFFF == 3
    assert q.last_avail == 3
    assert drv.get_used() == [(h, 4) for h in heads]


def test_push_writes_the_used_element_then_the_index(mem):
    drv, q = make(mem)
    drv.add([Buf(drv.alloc(4), 4, True)])
    drv.add([Buf(drv.alloc(4), 4, True)])
    a, b = q.pop(), q.pop()
    assert drv.used_idx == 0
    q.push(b.head, 3)
    assert drv.used_idx == 1
    assert drv.used_elem(0) == (b.head, 3)
    q.push(a.head, 0x12345678)
    assert drv.used_idx == 2
    assert drv.used_elem(1) == (a.head, 0x12345678)


def test_push_writes_the_element_before_publishing_the_index(mem, monkeypatch):
    """When used.idx moves, the element it covers must already be there."""
    drv, q = make(mem)
    drv.add([Buf(drv.alloc(4), 4, True)])
    chain = q.pop()
    seen = []
    import pyvisor.devices.virtio.queue as qmod

    class Spy:
        def __init__(self, real):
            self.real = real

        def pack_into(self, buf, off, *values):
            seen.append((off, drv.used_elem(0)))
            return self.real.pack_into(buf, off, *values)

        def __getattr__(self, name):
            return getattr(self.real, name)

    monkeypatch.setattr(qmod, "U16", Spy(qmod.U16))
    q.push(chain.head, 4)
    # the idx write (offset 2 of the used ring) saw the element already in place
    assert (2, (chain.head, 4)) in seen


# --- interrupt suppression ---------------------------------------------------------------------

def push_one(drv, q, written=1):
    drv.add([Buf(drv.alloc(4), 4, True)])
    chain = q.pop()
    q.push(chain.head, written)


def test_needs_interrupt_without_event_idx(mem):
    drv, q = make(mem, event_idx=False)
    assert not q.needs_interrupt()          # nothing pushed
    push_one(drv, q)
    assert q.needs_interrupt()
    assert not q.needs_interrupt()          # nothing new since the last one
    drv.set_avail_flags(lib.VRING_AVAIL_F_NO_INTERRUPT)
    push_one(drv, q)
    assert not q.needs_interrupt()
    drv.set_avail_flags(0)
    push_one(drv, q)
    assert q.needs_interrupt()


def test_needs_interrupt_without_event_idx_ignores_used_event(mem):
    drv, q = make(mem, event_idx=False)
    drv.set_used_event(100)
    push_one(drv, q)
    assert q.needs_interrupt()


def test_needs_interrupt_with_event_idx_follows_used_event(mem):
    drv, q = make(mem, event_idx=True)
    drv.set_used_event(0)               # "interrupt me once used.idx passes 0"
    push_one(drv, q)                     # used.idx 0 -> 1
    assert q.needs_interrupt()
    drv.set_used_event(3)               # not before used.idx becomes 4
    push_one(drv, q)                     # 2
    assert not q.needs_interrupt()
    push_one(drv, q)                     # 3
    assert not q.needs_interrupt()
    push_one(drv, q)                     # 4: passes 3
    assert q.needs_interrupt()
    # several pushes between checks: one interrupt when the event index was crossed
    drv.set_used_event(5)
    push_one(drv, q)                     # 5
    push_one(drv, q)                     # 6: crossed 5
    push_one(drv, q)                     # 7
    assert q.needs_interrupt()
    assert not q.needs_interrupt()


def test_event_idx_ignores_the_no_interrupt_flag(mem):
    drv, q = make(mem, event_idx=True)
    drv.set_avail_flags(lib.VRING_AVAIL_F_NO_INTERRUPT)
    drv.set_used_event(0)
    push_one(drv, q)
    assert q.needs_interrupt()


def test_event_idx_used_event_behind_means_no_interrupt(mem):
    drv, q = make(mem, event_idx=True)
    push_one(drv, q)
    drv.set_used_event(0)
    assert q.needs_interrupt()
    # used_event stays at 0 (the driver has not re-armed): no more interrupts
    for _ in range(3):
        push_one(drv, q)
        assert not q.needs_interrupt()


def test_event_idx_wraps_around(mem):
    drv, q = make(mem, event_idx=True)
    q.used_idx = q._signalled_used = 0xFFFE
    drv.set_used_event(0xFFFF)           # interrupt when used.idx moves past 0xFFFF
    push_one(drv, q)                     # 0xFFFF
    assert not q.needs_interrupt()
    push_one(drv, q)                     # 0x0000
    assert q.needs_interrupt()


def test_avail_event_is_written_on_pop_with_event_idx(mem):
    drv, q = make(mem, event_idx=True)
    drv.add([Buf(drv.alloc(4), 4, True)])
    drv.add([Buf(drv.alloc(4), 4, True)])
    q.pop()
    assert drv.avail_event == 1
    q.pop()
    assert drv.avail_event == 2


def test_avail_event_is_not_written_without_event_idx(mem):
    drv, q = make(mem, event_idx=False)
    drv.set_avail_event(0xABCD)
    drv.add([Buf(drv.alloc(4), 4, True)])
    q.pop()
    assert drv.avail_event == 0xABCD


class FenceSpy:
    """Stands in for the native lib in queue.py: records, at each full barrier, the
    avail_event and used idx then in guest RAM, and every avail-ring load after it."""

    def __init__(self, real, drv):
        self.real, self.drv = real, drv
        self.events: list = []

    def pv_mb(self):
        self.events.append(("mb", self.drv.avail_event, self.drv.used_idx))
        self.real.pv_mb()

    def __getattr__(self, name):
        return getattr(self.real, name)


def spy_fences(monkeypatch, drv):
    import pyvisor.devices.virtio.queue as qmod
    spy = FenceSpy(qmod.lib, drv)
    monkeypatch.setattr(qmod, "lib", spy)
    return spy


def test_event_idx_fences_between_avail_event_store_and_the_next_avail_load(mem, monkeypatch):
    """vhost's and QEMU's smp_mb: the driver's next entry is either seen by the next pop,
    or the driver saw our avail_event and kicks; without the fence, both can miss."""
    drv, q = make(mem, event_idx=True)
    drv.add([Buf(drv.alloc(4), 4, True)])
    spy = spy_fences(monkeypatch, drv)
    q.pop()
    assert spy.events == [("mb", 1, 0)]      # avail_event already stored at the fence
    assert q.pop() is None


def test_fence_between_used_idx_store_and_the_used_event_load(mem, monkeypatch):
    for event_idx in (True, False):
        drv, q = make(mem, event_idx=event_idx)
        push_one(drv, q)
        spy = spy_fences(monkeypatch, drv)
        q.needs_interrupt()
        assert spy.events and spy.events[-1][2] == 1   # used idx stored before the fence


# --- hostile drivers ---------------------------------------------------------------------------

class Canary:
    """Checks that nothing outside the chain's buffers changed in guest RAM."""

    def __init__(self, mem):
        self.mem = mem
        self.before = mem.read(0, RAM_SIZE)

    def unchanged_except_rings(self, drv):
        after = self.mem.read(0, RAM_SIZE)
        # only the rings may legitimately differ (avail_event, used ring)
        lo, hi = drv.desc_addr, drv.end
        assert after[:lo] == self.before[:lo]
        assert after[hi:] == self.before[hi:]


def pop_fails(drv, q, mem, match=None):
    canary = Canary(mem)
    with pytest.raises(QueueError, match=match):
        q.pop()
    canary.unchanged_except_rings(drv)


@pytest.mark.parametrize("addr, length", [
    (RAM_SIZE, 16),                 # starts at the end of RAM
    (RAM_SIZE - 8, 16),             # crosses the end of RAM
    (RAM_SIZE + 0x1000, 1),
    (0xFFFFFFFFFFFFFFF0, 0x20),     # would wrap a 64-bit sum
    (0xFEE00000, 4),                # MMIO, not RAM
])
@pytest.mark.parametrize("writable", [False, True])
def test_buffer_outside_ram(mem, addr, length, writable):
    drv, q = make(mem)
    drv.write_desc(0, addr, length, F_WRITE if writable else 0)
    drv.publish(0)
    pop_fails(drv, q, mem, "outside guest RAM")


def test_buffer_outside_ram_later_in_chain(mem):
    drv, q = make(mem)
    drv.write_desc(0, drv.alloc(16), 16, F_NEXT, 1)
    drv.write_desc(1, RAM_SIZE - 4, 8, F_WRITE)
    drv.publish(0)
    pop_fails(drv, q, mem)


def test_buffer_ending_exactly_at_the_end_of_ram_is_fine(mem):
    drv, q = make(mem)
    drv.write_desc(0, RAM_SIZE - 16, 16, F_WRITE)
    drv.publish(0)
    assert q.pop().writable_size == 16


def test_head_index_out_of_range(mem):
    drv, q = make(mem)
    drv.publish(SIZE)
    pop_fails(drv, q, mem, "outside the queue")


def test_head_index_far_out_of_range(mem):
    drv, q = make(mem)
    drv.publish(0xFFFF)
    pop_fails(drv, q, mem)


def test_next_index_out_of_range(mem):
    drv, q = make(mem)
    drv.write_desc(0, drv.alloc(4), 4, F_NEXT, SIZE)
    drv.publish(0)
    pop_fails(drv, q, mem, "outside the queue")


def test_loop_a_b_a(mem):
    drv, q = make(mem)
    drv.write_desc(2, drv.alloc(4), 4, F_NEXT, 5)
    drv.write_desc(5, drv.alloc(4), 4, F_NEXT, 2)
    drv.publish(2)
    pop_fails(drv, q, mem, "loops")


def test_self_loop(mem):
    drv, q = make(mem)
    drv.write_desc(0, drv.alloc(4), 4, F_WRITE | F_NEXT, 0)
    drv.publish(0)
    pop_fails(drv, q, mem)


def test_chain_longer_than_the_queue(mem):
    """With a small queue, a chain using every descriptor then going back to the first."""
    drv, q = make(mem, size=4)
    for i in range(4):
        drv.write_desc(i, drv.alloc(4), 4, F_WRITE | F_NEXT, (i + 1) % 4)
    drv.publish(0)
    pop_fails(drv, q, mem)


def test_loop_inside_an_indirect_table(mem):
    drv, q = make(mem)
    table = drv.alloc(32)
    drv.write_desc(0, drv.alloc(4), 4, F_WRITE | F_NEXT, 1, table=table)
    drv.write_desc(1, drv.alloc(4), 4, F_WRITE | F_NEXT, 0, table=table)
    drv.write_desc(0, table, 32, F_INDIRECT)
    drv.publish(0)
    pop_fails(drv, q, mem)


# QEMU's VIRTQUEUE_MAX_SIZE: the most descriptors one chain may have, indirect ones included.
CHAIN_CAP = 1024


def indirect_chain(drv, entries, *, length=None):
    """An indirect table of `entries` 4-byte writable buffers (all the same one), declared
    `length` bytes long (16 * entries unless given), as descriptor 0."""
    table, buf = drv.alloc(16 * entries), drv.alloc(4)
    for i in range(entries):
        last = i == entries - 1
        drv.write_desc(i, buf, 4, F_WRITE | (0 if last else F_NEXT), 0 if last else i + 1,
                       table=table)
    drv.write_desc(0, table, 16 * entries if length is None else length, F_INDIRECT)
    return table


def test_indirect_table_of_the_cap_is_accepted(mem):
    drv, q = make(mem)
    indirect_chain(drv, CHAIN_CAP)
    drv.publish(0)
    assert len(q.pop().writable) == CHAIN_CAP


def test_indirect_table_longer_than_the_cap_is_refused_unread(mem):
    drv, q = make(mem)
    indirect_chain(drv, CHAIN_CAP + 1)
    drv.publish(0)
    pop_fails(drv, q, mem, f"more than {CHAIN_CAP}")


def test_direct_descriptors_count_towards_the_cap(mem):
    """One direct readable descriptor, then an indirect table of the cap: one too many."""
    drv, q = make(mem)
    table = indirect_chain(drv, CHAIN_CAP)
    drv.write_desc(0, drv.alloc(4), 4, F_NEXT, 1)
    drv.write_desc(1, table, 16 * CHAIN_CAP, F_INDIRECT)
    drv.publish(0)
    pop_fails(drv, q, mem, f"{CHAIN_CAP} in all")


def test_cycle_in_a_huge_declared_indirect_table_costs_nothing(mem):
    """A 2-entry cycle in a table declared 4M entries long (64 MiB, more than RAM): refused
    for its declared length at once, not walked 4M times."""
    import time
    drv, q = make(mem)
    table = drv.alloc(32)
    drv.write_desc(0, drv.alloc(4), 4, F_WRITE | F_NEXT, 1, table=table)
    drv.write_desc(1, drv.alloc(4), 4, F_WRITE | F_NEXT, 0, table=table)
    drv.write_desc(0, table, 16 << 22, F_INDIRECT)
    drv.publish(0)
    start = time.perf_counter()
    pop_fails(drv, q, mem, f"more than {CHAIN_CAP}")
    assert time.perf_counter() - start < 0.5


def test_cycle_in_an_indirect_table_of_the_cap_ends_within_the_cap(mem):
    drv, q = make(mem)
    table = indirect_chain(drv, CHAIN_CAP)
    drv.write_desc(CHAIN_CAP - 1, drv.alloc(4), 4, F_WRITE | F_NEXT, 0, table=table)
    drv.publish(0)
    pop_fails(drv, q, mem, "loops")


def test_aliased_descriptors_are_views_not_copies(mem):
    """64 descriptors naming the same 1 MiB: the chain claims 64 MiB of a 2 MiB guest, and
    its buffers all share that memory."""
    drv, q = make(mem, size=64)
    buf = drv.alloc(1 << 20)
    drv.add([Buf(buf, 1 << 20, True) for _ in range(64)])
    chain = q.pop()
    assert chain.writable_size == 64 << 20
    chain.writable[63][0] = 0x5A
    assert mem.read_u8(buf) == 0x5A


def test_next_out_of_range_inside_an_indirect_table(mem):
    drv, q = make(mem)
    table = drv.alloc(32)
    drv.write_desc(0, drv.alloc(4), 4, F_WRITE | F_NEXT, 2, table=table)
    drv.write_desc(1, drv.alloc(4), 4, F_WRITE, table=table)
    drv.write_desc(0, table, 32, F_INDIRECT)
    drv.publish(0)
    pop_fails(drv, q, mem, "indirect table")


def test_avail_idx_jumping_more_than_queue_size(mem):
    drv, q = make(mem)
    drv.set_avail_idx(SIZE + 1)
    pop_fails(drv, q, mem, "more than the queue size")


def test_avail_idx_moving_backwards_is_a_huge_jump(mem):
    drv, q = make(mem)
    drv.add([Buf(drv.alloc(4), 4, True)])
    q.pop()
    drv.set_avail_idx(0)        # 0 - 1 = 0xFFFF entries ahead
    pop_fails(drv, q, mem)


def test_avail_idx_exactly_queue_size_ahead_is_fine(mem):
    drv, q = make(mem)
    for _ in range(SIZE):
        drv.add([Buf(drv.alloc(4), 4, True)])
    assert sum(1 for _ in iter(q.pop, None)) == SIZE


def test_indirect_without_the_feature(mem):
    drv, q = make(mem, indirect=False)
    drv.add([Buf(drv.alloc(4), 4, True)], indirect=True)
    pop_fails(drv, q, mem, "INDIRECT_DESC")


def test_nested_indirect(mem):
    drv, q = make(mem)
    inner = drv.alloc(16)
    drv.write_desc(0, drv.alloc(4), 4, F_WRITE, table=inner)
    outer = drv.alloc(16)
    drv.write_desc(0, inner, 16, F_INDIRECT, table=outer)
    drv.write_desc(0, outer, 16, F_INDIRECT)
    drv.publish(0)
    pop_fails(drv, q, mem, "nested")


def test_indirect_with_next(mem):
    drv, q = make(mem)
    table = drv.alloc(16)
    drv.write_desc(0, drv.alloc(4), 4, F_WRITE, table=table)
    drv.write_desc(0, table, 16, F_INDIRECT | F_NEXT, 1)
    drv.write_desc(1, drv.alloc(4), 4, F_WRITE)
    drv.publish(0)
    pop_fails(drv, q, mem, "NEXT")


@pytest.mark.parametrize("length", [0, 8, 24, 17])
def test_indirect_length_not_a_multiple_of_16(mem, length):
    drv, q = make(mem)
    table = drv.alloc(32)
    drv.write_desc(0, drv.alloc(4), 4, F_WRITE, table=table)
    drv.write_desc(1, drv.alloc(4), 4, F_WRITE, table=table)
    drv.write_desc(0, table, length, F_INDIRECT)
    drv.publish(0)
    pop_fails(drv, q, mem)


@pytest.mark.parametrize("table", [RAM_SIZE - 16, RAM_SIZE + 0x100])
def test_indirect_table_outside_ram(mem, table):
    drv, q = make(mem)
    drv.write_desc(0, table, 32, F_INDIRECT)
    drv.publish(0)
    pop_fails(drv, q, mem, "outside guest RAM")


def test_indirect_buffer_outside_ram(mem):
    drv, q = make(mem)
    table = drv.alloc(16)
    drv.write_desc(0, RAM_SIZE - 2, 4, F_WRITE, table=table)
    drv.write_desc(0, table, 16, F_INDIRECT)
    drv.publish(0)
    pop_fails(drv, q, mem)


def test_readable_after_writable(mem):
    drv, q = make(mem)
    drv.write_desc(0, drv.alloc(4), 4, F_WRITE | F_NEXT, 1)
    drv.write_desc(1, drv.alloc(4), 4, 0)
    drv.publish(0)
    pop_fails(drv, q, mem, "readable")


def test_readable_after_writable_in_an_indirect_table(mem):
    drv, q = make(mem)
    w, r = drv.alloc(4), drv.alloc(4)
    drv.add([Buf(w, 4, True), Buf(r, 4, False)], indirect=True)
    pop_fails(drv, q, mem)


# --- activate ----------------------------------------------------------------------------------

def activate_fails(mem, size=SIZE, max_size=SIZE, **addrs):
    drv = Driver(mem, size if size & (size - 1) == 0 and size else 8)
    q = Virtqueue(max_size)
    drv.configure(q)
    q.size = size
    for name, value in addrs.items():
        setattr(q, name, value)
    with pytest.raises(QueueError):
        q.activate(mem, event_idx=True, indirect=True)
    assert not q.ready


def test_activate_accepts_a_good_queue(mem):
    drv = Driver(mem, SIZE)
    q = Virtqueue(SIZE)
    drv.configure(q)
    assert not q.ready
    q.activate(mem, event_idx=False, indirect=False)
    assert q.ready


@pytest.mark.parametrize("size", [0, 3, 6, 12, 16])
def test_activate_refuses_bad_sizes(mem, size):
    activate_fails(mem, size=size, max_size=8)


def test_activate_accepts_a_smaller_power_of_two(mem):
    drv = Driver(mem, 2)
    q = Virtqueue(8)
    drv.configure(q)
    q.activate(mem, event_idx=False, indirect=False)
    assert q.ready


@pytest.mark.parametrize("field, addr", [
    ("desc_addr", 0x20008),          # needs 16
    ("desc_addr", 0x20001),
    ("driver_addr", 0x20001),        # needs 2
    ("device_addr", 0x20002),        # needs 4
    ("device_addr", 0x20001),
])
def test_activate_refuses_misaligned_rings(mem, field, addr):
    activate_fails(mem, **{field: addr})


@pytest.mark.parametrize("field", ["desc_addr", "driver_addr", "device_addr"])
@pytest.mark.parametrize("addr", [RAM_SIZE, RAM_SIZE - 16, 0xFEE00000, 1 << 40])
def test_activate_refuses_rings_outside_ram(mem, field, addr):
    activate_fails(mem, **{field: addr})


def test_reset_forgets_everything(mem):
    drv, q = make(mem, event_idx=True)
    push_one(drv, q)
    q.msix_vector = 3
    q.reset()
    assert not q.ready and not q.enabled
    assert (q.size, q.desc_addr, q.driver_addr, q.device_addr) == (SIZE, 0, 0, 0)
    assert (q.last_avail, q.used_idx) == (0, 0)
    assert q.msix_vector == lib.VIRTIO_MSI_NO_VECTOR


def test_unpop_gives_a_chain_back(mem):
    drv, q = make(mem)
    head = drv.add([Buf(drv.alloc(4), 4, True)])
    assert q.pop().head == head
    q.unpop()
    assert q.pop().head == head
    assert q.pop() is None
