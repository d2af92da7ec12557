"""Where guest RAM lives in guest-physical address space, and the e820 map describing it.

RAM above 3 GiB is moved to 4 GiB and up so the 3-4 GiB window stays free for MMIO
(the LAPIC at 0xFEE00000, the IOAPIC at 0xFEC00000, and later PCI BARs).
"""


from pyvisor._native import lib
from pyvisor.errors import ConfigError
from pyvisor.units import format_size
from pyvisor.value import Value

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

MMIO_HOLE_START = 3 * GIB
MMIO_HOLE_END = 4 * GIB
MIN_RAM_SIZE = 2 * MIB
PAGE_SIZE = 4 * KIB

# The PC's legacy low-memory map: conventional memory ends where the EBDA starts, and the
# BIOS area (extended 0xE0000 and system 0xF0000 segments) sits just below 1 MiB. Linux
# expects to see both reserved. The ACPI tables live in the BIOS area (RSDP at 0xE0000,
# see pyvisor.acpi), which keeps them out of the RAM the guest allocates from.
EBDA_START = 0x9FC00
LEGACY_VIDEO_START = 0xA0000
BIOS_AREA_START = 0xE0000
HIGH_MEMORY_START = 0x100000


class Region(Value):
    """A contiguous range of guest RAM in guest-physical address space."""

    __slots__ = ("gpa", "size")

    def __init__(self, gpa: int, size: int) -> None:
        self.gpa, self.size = gpa, size

    @property
    def end(self) -> int:
        return self.gpa + self.size


class E820Entry(Value):
    """One entry of the BIOS e820 memory map; ``type`` is ``lib.E820_RAM`` etc."""

    __slots__ = ("addr", "size", "type")

    def __init__(self, addr: int, size: int, type: int) -> None:
        self.addr, self.size, self.type = addr, size, type


class MemoryLayout:
    """Splits ``ram_size`` bytes of guest RAM around the 3-4 GiB MMIO hole."""

    def __init__(self, ram_size: int):
        if ram_size < MIN_RAM_SIZE:
            raise ConfigError(f"guest RAM must be at least {format_size(MIN_RAM_SIZE)}")
        if ram_size % PAGE_SIZE:
            raise ConfigError(
                f"guest RAM size {ram_size} bytes is not a multiple of 4 KiB")
        self._ram_size = ram_size
        if ram_size <= MMIO_HOLE_START:
            self._regions = (Region(0, ram_size),)
        else:
            self._regions = (Region(0, MMIO_HOLE_START),
                             Region(MMIO_HOLE_END, ram_size - MMIO_HOLE_START))

    @property
    def ram_size(self) -> int:
        return self._ram_size

    @property
    def regions(self) -> tuple[Region, ...]:
        return self._regions

    @property
    def top(self) -> int:
        """End of the highest RAM region (what the identity map must cover at least)."""
        return self._regions[-1].end

    def e820(self) -> list[E820Entry]:
        """The memory map handed to the guest in the zero page."""
        low = self._regions[0]
        entries = [
            E820Entry(0, EBDA_START, lib.E820_RAM),
            E820Entry(EBDA_START, LEGACY_VIDEO_START - EBDA_START, lib.E820_RESERVED),
            E820Entry(BIOS_AREA_START, HIGH_MEMORY_START - BIOS_AREA_START, lib.E820_RESERVED),
            E820Entry(HIGH_MEMORY_START, low.end - HIGH_MEMORY_START, lib.E820_RAM),
        ]
        entries += [E820Entry(r.gpa, r.size, lib.E820_RAM) for r in self._regions[1:]]
        return entries
