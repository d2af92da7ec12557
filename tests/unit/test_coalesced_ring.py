"""The coalesced ring as the KVM API documents it (struct kvm_coalesced_mmio_ring: u32
first, last, then 24-byte entries of u64 phys_addr, u32 len, u32 pio, u8 data[8]; the
ring fills one page), parsed by the C shim on a page built here, and which ports the
machine coalesces."""
import os
import struct
import threading

import pytest

from pyvisor._native import ffi, lib
from pyvisor.devices.bus import PioBus
from pyvisor.machine.coalesced_ring import CoalescedRing
from pyvisor.machine.hooks import RangeHooks
from pyvisor.machine.native_ports import fill_port_table

PAGE = 4096
ENTRY = struct.Struct("<QII8s")
HEADER = struct.Struct("<II")
CAPACITY = (PAGE - HEADER.size) // ENTRY.size     # 170


class FakeRing:
    """A ring page in memory, written the way KVM writes it."""

    def __init__(self) -> None:
        self.page = ffi.new("char[]", PAGE)
        self.buf = ffi.buffer(self.page)
        self.ring = CoalescedRing(-1, self.page, PAGE)
        self.ports = ffi.new("struct pv_ports *")
        ffi.memmove(self.ports.write, bytes([lib.PV_PORT_PYTHON]) * lib.PV_PORTS, lib.PV_PORTS)
        self.ports.console_fd = -1
        self.stats = ffi.new("struct pv_stats *")

    def indices(self) -> tuple[int, int]:
        return HEADER.unpack_from(self.buf, 0)

    def set_indices(self, first: int, last: int) -> None:
        HEADER.pack_into(self.buf, 0, first, last)

    def queue(self, *writes: tuple[int, int, int, bool]) -> None:
        """Append (addr, size, value, pio) entries at `last`, as KVM does."""
        first, last = self.indices()
        for addr, size, value, pio in writes:
            ENTRY.pack_into(self.buf, HEADER.size + last * ENTRY.size, addr, size, int(pio),
                            value.to_bytes(size, "little").ljust(8, b"\0"))
            last = (last + 1) % CAPACITY
        self.set_indices(first, last)

    def drain(self) -> list[tuple[str, int, int, int]]:
        got = []
        self.ring.drain(lambda a, s, v: got.append(("pio", a, s, v)),
                        lambda a, s, v: got.append(("mmio", a, s, v)), self.ports, self.stats)
        return got


def test_capacity_is_what_fits_in_a_page():
    assert FakeRing().ring.native.max == CAPACITY == 170


def test_writes_are_dispatched_in_order_and_counted():
    r = FakeRing()
    r.queue((0x70, 1, 0x4A, True), (0xFED0_0010, 8, 0x1122334455667788, False),
            (0x510, 2, 0xBEEF, True))
    assert r.drain() == [("pio", 0x70, 1, 0x4A), ("mmio", 0xFED0_0010, 8, 0x1122334455667788),
                         ("pio", 0x510, 2, 0xBEEF)]
    assert r.indices() == (3, 3)
    assert r.stats.ports[0x70] == 1 and r.stats.ports[0x510] == 1
    assert r.stats.mmio_count[[k for k in r.stats.mmio_page].index(0xFED00 + 1)] == 1
    assert r.ring.drained == 3
    assert r.drain() == []


def test_ports_the_table_serves_are_served_in_c_and_a_python_write_stays_queued_until_done():
    r = FakeRing()
    r.ports.write[0x80] = lib.PV_PORT_NONE
    r.queue((0x80, 1, 1, True), (0x70, 1, 5, True), (0x80, 1, 2, True))
    w = ffi.new("struct pv_write *")
    assert lib.pv_coalesced_next(r.ring.native, r.ports, r.stats, w) == 1
    assert (w.addr, w.size, w.value, w.pio) == (0x70, 1, 5, 1)
    assert r.indices() == (1, 3)              # the POST write is gone, the index write is not
    assert lib.pv_coalesced_next(r.ring.native, r.ports, r.stats, w) == 1   # still the head
    lib.pv_coalesced_done(r.ring.native, r.stats)
    assert lib.pv_coalesced_next(r.ring.native, r.ports, r.stats, w) == 0
    assert r.indices() == (3, 3)
    assert r.stats.ports[0x80] == 2 and r.stats.ports[0x70] == 1


def test_console_port_bytes_go_to_the_console_fd():
    r = FakeRing()
    rfd, wfd = os.pipe()
    try:
        r.ports.console_fd = wfd
        r.ports.write[0xE9] = lib.PV_PORT_CONSOLE
        r.queue((0xE9, 1, ord("h"), True), (0xE9, 1, ord("i"), True))
        assert r.drain() == []
        assert os.read(rfd, 16) == b"hi"
    finally:
        os.close(rfd)
        os.close(wfd)


def test_the_ring_wraps_around():
    r = FakeRing()
    r.set_indices(CAPACITY - 1, CAPACITY - 1)
    r.queue((0x70, 1, 1, True), (0x70, 1, 2, True), (0x70, 1, 3, True))
    assert r.indices() == (CAPACITY - 1, 2)
    assert [v for _, _, _, v in r.drain()] == [1, 2, 3]
    assert r.indices() == (2, 2)


@pytest.mark.parametrize("first, last", [(CAPACITY, 0), (0, CAPACITY), (0xFFFFFFFF, 7)])
def test_indices_outside_the_ring_read_as_empty(first, last):
    r = FakeRing()
    r.set_indices(first, last)
    assert r.drain() == []
    assert r.indices() == (first, last)


def test_a_failing_device_still_takes_its_write_off_the_ring():
    r = FakeRing()
    r.queue((0x70, 1, 1, True), (0x70, 1, 2, True))

    def fail(addr, size, value):
        raise RuntimeError("device bug")

    with pytest.raises(RuntimeError):
        r.ring.drain(fail, fail, r.ports, r.stats)
    assert r.indices() == (1, 2)
    assert r.drain() == [("pio", 0x70, 1, 2)]


def test_a_write_being_dispatched_stays_queued_for_every_other_vcpu():
    """Another vCPU's exit meanwhile sees the write still queued (pv_run would hand it to
    Python, whose drain waits for the first): it cannot be overtaken."""
    r = FakeRing()
    r.queue((0x70, 1, 0x4A, True))
    inside, release, order = threading.Event(), threading.Event(), []

    def slow_device(addr, size, value):
        inside.set()
        release.wait(5)
        order.append(("first", value))

    first = threading.Thread(target=r.ring.drain, args=(slow_device, None, r.ports, r.stats))
    first.start()
    assert inside.wait(5)
    w = ffi.new("struct pv_write *")
    assert lib.pv_coalesced_next(r.ring.native, r.ports, r.stats, w) == 1 and w.value == 0x4A
    second = threading.Thread(target=r.ring.drain, args=(
        lambda a, s, v: order.append(("second", v)), None, r.ports, r.stats))
    second.start()
    second.join(0.2)
    assert second.is_alive() and order == []      # waiting for the first drain
    release.set()
    first.join(5)
    second.join(5)
    assert order == [("first", 0x4A)] and r.ring.drained == 1


class _Device:
    def pio_read(self, offset, size):
        return 0

    def pio_write(self, offset, size, value):
        pass


def _coalesced(bus: PioBus, hooks: RangeHooks) -> frozenset[int]:
    return fill_port_table(ffi.new("struct pv_ports *"), bus, hooks, 0xE9, 0x608, 0,
                           deferrable=(0x70,))


def test_coalesced_ports_are_the_quiet_delay_ports_and_unhooked_deferrable_registers():
    bus = PioBus()
    bus.register(0x70, 2, _Device(), "CMOS RTC")
    hooks = RangeHooks("port", bus.read, bus.write, lambda: None)
    assert _coalesced(bus, hooks) == {0x70, 0x80, 0xED}
    hooks.add(0x70, 0x70, lambda *a: None)
    hooks.add(0x80, 0x80, lambda *a: None)
    assert _coalesced(bus, hooks) == {0xED}       # a hook sees every access as it happens
    bus.register(0xED, 1, _Device(), "a delay port with a device")
    assert _coalesced(bus, hooks) == set()
