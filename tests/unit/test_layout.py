import pytest

from pyvisor._native import lib
from pyvisor.errors import ConfigError
from pyvisor.memory.layout import (BIOS_AREA_START, HIGH_MEMORY_START, MIN_RAM_SIZE,
                                   MMIO_HOLE_END, MMIO_HOLE_START, E820Entry, MemoryLayout,
                                   Region)

MIB = 1 << 20
GIB = 1 << 30


def test_hole_constants():
    assert (MMIO_HOLE_START, MMIO_HOLE_END) == (3 * GIB, 4 * GIB)


def test_region_end():
    assert Region(0x1000, 0x2000).end == 0x3000


def test_small_ram_is_one_region():
    layout = MemoryLayout(64 * MIB)
    assert layout.regions == (Region(0, 64 * MIB),)
    assert layout.ram_size == 64 * MIB
    assert layout.top == 64 * MIB


def test_exactly_3g_is_one_region():
    layout = MemoryLayout(3 * GIB)
    assert layout.regions == (Region(0, 3 * GIB),)
    assert layout.top == 3 * GIB


def test_large_ram_is_split_around_the_hole():
    layout = MemoryLayout(5 * GIB)
    assert layout.regions == (Region(0, 3 * GIB), Region(4 * GIB, 2 * GIB))
    assert layout.top == 6 * GIB
    assert sum(r.size for r in layout.regions) == 5 * GIB


def test_e820_small():
    assert MemoryLayout(64 * MIB).e820() == [
        E820Entry(0, 0x9FC00, lib.E820_RAM),
        E820Entry(0x9FC00, 0x400, lib.E820_RESERVED),
        E820Entry(0xE0000, 0x20000, lib.E820_RESERVED),
        E820Entry(0x100000, 63 * MIB, lib.E820_RAM),
    ]


def test_e820_with_high_memory():
    entries = MemoryLayout(4 * GIB).e820()
    assert entries[3] == E820Entry(0x100000, 3 * GIB - MIB, lib.E820_RAM)
    assert entries[4] == E820Entry(4 * GIB, GIB, lib.E820_RAM)
    assert len(entries) == 5


def test_e820_entries_are_sorted_and_disjoint():
    entries = MemoryLayout(6 * GIB).e820()
    for a, b in zip(entries, entries[1:]):
        assert a.addr + a.size <= b.addr


def test_minimum_size():
    assert MemoryLayout(MIN_RAM_SIZE).top == 2 * MIB
    with pytest.raises(ConfigError, match="^guest RAM must be at least 2 MiB$"):
        MemoryLayout(MIN_RAM_SIZE - 4096)


def test_size_must_be_page_multiple():
    with pytest.raises(ConfigError, match="multiple of 4 KiB"):
        MemoryLayout(64 * MIB + 512)


def test_bios_area_covers_the_acpi_tables():
    # The ACPI tables (RSDP at 0xE0000) sit in the reserved BIOS area, never in RAM the
    # guest may hand out; the EBDA stays reserved as well.
    assert (BIOS_AREA_START, HIGH_MEMORY_START) == (0xE0000, 0x100000)
    reserved = [(e.addr, e.addr + e.size) for e in MemoryLayout(64 * MIB).e820()
                if e.type == lib.E820_RESERVED]
    assert (0xE0000, 0x100000) in reserved
    assert (0x9FC00, 0xA0000) in reserved
