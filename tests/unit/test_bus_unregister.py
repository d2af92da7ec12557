"""MmioBus.unregister (pyvisor/devices/bus.py): a PCI BAR the guest moves; the buses'
generation, which counts registration changes."""
import pytest

from pyvisor.devices.bus import MmioBus, PioBus


class Dev:
    def __init__(self, tag):
        self.tag = tag
        self.calls = []

    def mmio_read(self, offset, size):
        self.calls.append(("r", offset, size))
        return self.tag + offset

    def mmio_write(self, offset, size, value):
        self.calls.append(("w", offset, size, value))


class Port:
    def pio_read(self, offset, size):
        return 0

    def pio_write(self, offset, size, value):
        pass


def test_unregister_releases_the_range():
    bus = MmioBus()
    a, b = Dev(0x1000), Dev(0x2000)
    bus.register(0xC0000000, 0x1000, a, "a")
    bus.register(0xC0001000, 0x1000, b, "b")
    bus.unregister(0xC0000000)
    assert bus.read(0xC0000010, 4) == 0xFFFFFFFF           # unclaimed now
    bus.write(0xC0000010, 4, 1)
    assert a.calls == []
    assert bus.unclaimed_reads == 1 and bus.unclaimed_writes == 1
    assert bus.read(0xC0001004, 4) == 0x2004               # the neighbour stays
    assert [r.name for r in bus.registrations()] == ["b"]


def test_the_range_can_be_registered_again_and_moved():
    bus = MmioBus()
    a = Dev(0x1000)
    bus.register(0xC0000000, 0x8000, a, "a")
    bus.unregister(0xC0000000)
    bus.register(0xC0004000, 0x8000, a, "a")               # overlaps the old range
    assert bus.read(0xC0004000, 4) == 0x1000
    assert bus.read(0xC000BFFC, 4) == 0x1000 + 0x7FFC
    assert bus.read(0xC0000000, 4) == 0xFFFFFFFF
    assert a.calls == [("r", 0, 4), ("r", 0x7FFC, 4)]


def test_unregister_in_the_middle_keeps_lookup_sorted():
    bus = MmioBus()
    devs = [Dev(i << 16) for i in range(5)]
    for i, d in enumerate(devs):
        bus.register(0x1000 * (i + 1), 0x100, d, f"d{i}")
    bus.unregister(0x3000)
    for i, d in enumerate(devs):
        got = bus.read(0x1000 * (i + 1) + 8, 2)
        assert got == (0xFFFF if i == 2 else (i << 16) + 8)


def test_unregister_of_an_unknown_base_changes_nothing():
    bus = MmioBus()
    a = Dev(0)
    bus.register(0x1000, 0x100, a)
    bus.unregister(0x1010)                                  # not a base
    bus.unregister(0x5000)
    assert bus.read(0x1010, 1) == 0x10
    assert len(bus.registrations()) == 1


def test_the_generation_counts_registration_changes_only():
    """What is worked out from the registrations (the snapshot engine's device walk) is
    redone when the generation moves, and only then."""
    bus, ports = MmioBus(), PioBus()
    start = bus.generation
    bus.register(0x1000, 0x100, Dev(0))
    assert bus.generation == start + 1
    bus.read(0x1000, 4), bus.write(0x1000, 4, 1)
    bus.unregister(0x5000)                                  # nothing there
    assert bus.generation == start + 1
    bus.unregister(0x1000)
    assert bus.generation == start + 2
    with pytest.raises(ValueError):
        ports.register(0x70, 0, Dev(0))                     # refused: no change
    assert ports.generation == 0
    ports.register(0x70, 2, Port())
    assert ports.generation == 1
