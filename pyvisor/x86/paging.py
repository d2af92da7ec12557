"""Identity page tables for entering a kernel in long mode.

They map at least the first 4 GiB so the LAPIC/IOAPIC in the MMIO hole are reachable
before the kernel builds its own tables, and all of RAM beyond that.
"""

import struct

from pyvisor.errors import ConfigError
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.units import format_size
from pyvisor.x86.boot_layout import PAGE_TABLES_END, PD_ADDR, PDPT_ADDR, PML4_ADDR

PTE_PRESENT = 1 << 0
PTE_WRITABLE = 1 << 1
PTE_HUGE = 1 << 7  # PS: this entry maps a 1 GiB / 2 MiB page rather than a table

_GIB = 1 << 30
_MIB2 = 1 << 21
_ENTRIES = 512
_PDPT_SPAN = _ENTRIES * _GIB  # what one PDPT (one PML4 entry) covers


def _table(entries: list[int]) -> bytes:
    return struct.pack(f"<{len(entries)}Q", *entries).ljust(_ENTRIES * 8, b"\0")


def build_identity_map(mem: GuestMemory, top: int, huge_1g: bool) -> int:
    """Identity-map [0, max(4 GiB, top)) and return the CR3 value.

    ``huge_1g`` (CPUID 0x80000001 EDX bit 26) selects 1 GiB pages; otherwise 2 MiB pages,
    whose page directories must fit below PAGE_TABLES_END.
    """
    gib = -(-max(4 * _GIB, top) // _GIB)
    if gib * _GIB > _PDPT_SPAN:
        raise ConfigError(f"guest RAM up to {format_size(top)} is more than the "
                          f"{format_size(_PDPT_SPAN)} the boot page tables can map")
    flags = PTE_PRESENT | PTE_WRITABLE
    if huge_1g:
        pdpt = [i * _GIB | flags | PTE_HUGE for i in range(gib)]
    else:
        limit = (PAGE_TABLES_END - PD_ADDR) // 0x1000
        if gib > limit:
            raise ConfigError(
                f"guest RAM up to {format_size(top)} needs 1 GiB pages, which this host CPU "
                f"lacks; with 2 MiB pages the boot page tables map at most {limit} GiB")
        pdpt = [PD_ADDR + i * 0x1000 | flags for i in range(gib)]
        pages = [i * _MIB2 | flags | PTE_HUGE for i in range(gib * _ENTRIES)]
        mem.write(PD_ADDR, _table(pages))
    mem.write(PDPT_ADDR, _table(pdpt))
    mem.write(PML4_ADDR, _table([PDPT_ADDR | flags]))
    return PML4_ADDR
