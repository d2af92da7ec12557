import logging

import pytest

from pyvisor.devices.bus import MmioBus, PioBus


class Recorder:
    """A device that records accesses and answers reads with a tagged value."""

    def __init__(self, tag: int):
        self.tag = tag
        self.calls: list[tuple] = []

    def pio_read(self, offset, size):
        self.calls.append(("r", offset, size))
        return self.tag + offset

    def pio_write(self, offset, size, value):
        self.calls.append(("w", offset, size, value))

    mmio_read = pio_read
    mmio_write = pio_write


def test_pio_dispatch_passes_offset_relative_to_base():
    bus = PioBus()
    uart, dbg = Recorder(0x100), Recorder(0x200)
    bus.register(0x3F8, 8, uart, "com1")
    bus.register(0xE9, 1, dbg)
    assert bus.read(0x3FD, 1) == 0x105
    bus.write(0x3F8, 1, 0x41)
    assert bus.read(0xE9, 1) == 0x200
    assert uart.calls == [("r", 5, 1), ("w", 0, 1, 0x41)]
    assert dbg.calls == [("r", 0, 1)]


def test_pio_edges_of_range():
    bus = PioBus()
    dev = Recorder(0)
    bus.register(0x3F8, 8, dev)
    assert bus.read(0x3FF, 1) == 7
    assert bus.read(0x3F7, 1) == 0xFF
    assert bus.read(0x400, 2) == 0xFFFF
    assert dev.calls == [("r", 7, 1)]


def test_same_device_at_two_bases():
    bus = PioBus()
    dev = Recorder(0)
    bus.register(0x60, 1, dev, "a")
    bus.register(0x64, 1, dev, "b")
    bus.read(0x64, 1)
    bus.read(0x60, 1)
    assert dev.calls == [("r", 0, 1), ("r", 0, 1)]
    assert bus.read(0x61, 1) == 0xFF


@pytest.mark.parametrize("base,length", [(0x3F0, 9), (0x3FF, 1), (0x3FC, 2), (0x300, 0x200)])
def test_pio_overlap_names_both(base, length):
    bus = PioBus()
    bus.register(0x3F8, 8, Recorder(0), "com1")
    with pytest.raises(ValueError) as e:
        bus.register(base, length, Recorder(0), "intruder")
    assert "com1" in str(e.value) and "intruder" in str(e.value)
    # The failed registration claimed nothing.
    assert [r.name for r in bus.registrations()] == ["com1"]
    assert bus.read(0x3F0 if base < 0x3F8 else 0x400, 1) == 0xFF


def test_pio_adjacent_ranges_are_fine_and_listed_sorted():
    bus = PioBus()
    a, b = Recorder(0), Recorder(0)
    bus.register(0x3F8, 8, a, "com1")
    bus.register(0x3F0, 8, b)
    regs = bus.registrations()
    assert [(r.base, r.length, r.name) for r in regs] == [(0x3F0, 8, "Recorder"), (0x3F8, 8, "com1")]
    assert regs[1].device is a


@pytest.mark.parametrize("base,length", [(-1, 1), (0xFFFF, 2), (0x10000, 1), (0x80, 0)])
def test_pio_rejects_bad_ranges(base, length):
    with pytest.raises(ValueError):
        PioBus().register(base, length, Recorder(0))


def test_unclaimed_accesses_read_ones_and_are_counted():
    bus = PioBus()
    assert bus.read(0x80, 1) == 0xFF
    assert bus.read(0x80, 2) == 0xFFFF
    assert bus.read(0xCF8, 4) == 0xFFFFFFFF
    bus.write(0x80, 1, 0x12)
    assert bus.unclaimed_reads == 3
    assert bus.unclaimed_writes == 1
    assert bus.unclaimed_by_addr[0x80, "r"] == 2
    assert bus.unclaimed_by_addr[0x80, "w"] == 1
    assert bus.unclaimed_by_addr[0xCF8, "r"] == 1


def test_unclaimed_statistics_stay_bounded():
    """A guest reading 100,000 distinct unclaimed addresses: the totals count them all,
    per-address counts are kept for the first few only (and keep counting those)."""
    import sys
    from pyvisor.devices.bus import UNCLAIMED_ADDRESSES
    bus = MmioBus()
    for addr in range(0xD0000000, 0xD0000000 + 100_000):
        bus.read(addr, 1)
    bus.write(0xD0000000, 4, 0)
    bus.read(0xD0000000, 1)
    assert bus.unclaimed_reads == 100_001 and bus.unclaimed_writes == 1
    assert len(bus.unclaimed_by_addr) == UNCLAIMED_ADDRESSES <= 256
    assert bus.unclaimed_by_addr[0xD0000000, "r"] == 2
    assert (0xD0000000, "w") not in bus.unclaimed_by_addr    # a new pair past the first few
    assert sys.getsizeof(bus.unclaimed_by_addr) < 16 << 10


def test_claimed_accesses_are_not_counted():
    bus = PioBus()
    bus.register(0x80, 1, Recorder(0))
    bus.read(0x80, 1)
    bus.write(0x80, 1, 0)
    assert (bus.unclaimed_reads, bus.unclaimed_writes) == (0, 0)
    assert not bus.unclaimed_by_addr


def test_unclaimed_logged_only_at_debug(caplog):
    bus = PioBus()
    with caplog.at_level(logging.INFO, logger="pyvisor.devices"):
        bus.read(0x80, 1)
    assert not caplog.records
    with caplog.at_level(logging.DEBUG, logger="pyvisor.devices"):
        bus.write(0x81, 1, 0x5A)
    assert len(caplog.records) == 1
    assert "0x81" in caplog.records[0].getMessage()
    assert "0x5a" in caplog.records[0].getMessage()


def test_mmio_dispatch_with_bisect():
    bus = MmioBus()
    hi, lo, mid = Recorder(0x1000), Recorder(0x2000), Recorder(0x3000)
    bus.register(0xFEC00000, 0x1000, hi, "ioapic")
    bus.register(0xD0000000, 0x200, lo)
    bus.register(0xD0001000, 0x1000, mid)
    assert bus.read(0xFEC00010, 4) == 0x1010
    assert bus.read(0xD0000000, 4) == 0x2000
    assert bus.read(0xD00001FF, 1) == 0x21FF
    assert bus.read(0xD0000200, 4) == 0xFFFFFFFF      # gap after lo
    assert bus.read(0xCFFFFFFF, 1) == 0xFF            # below everything
    assert bus.read(0xFEC01000, 8) == (1 << 64) - 1   # past the top
    bus.write(0xD0001008, 8, 0x1122334455667788)
    assert mid.calls == [("w", 8, 8, 0x1122334455667788)]
    bus.write(0xD0000800, 4, 1)
    assert bus.unclaimed_reads == 3 and bus.unclaimed_writes == 1
    assert bus.unclaimed_by_addr[0xD0000800, "w"] == 1
    assert [r.name for r in bus.registrations()] == ["Recorder", "Recorder", "ioapic"]


@pytest.mark.parametrize("base,length", [(0xFFF, 2), (0x1FFF, 1), (0x800, 0x2000), (0x1800, 0x10)])
def test_mmio_overlap(base, length):
    bus = MmioBus()
    bus.register(0x1000, 0x1000, Recorder(0), "first")
    with pytest.raises(ValueError, match="first"):
        bus.register(base, length, Recorder(0), "second")
    assert len(bus.registrations()) == 1
