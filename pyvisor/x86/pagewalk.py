"""Guest-virtual to guest-physical translation, done in software by reading the guest's
own page tables: fault reports use it to find (and disassemble) the code at RIP.
Accessed/dirty bits are never set and permissions are ignored: this only looks."""

from collections.abc import Callable

from pyvisor.errors import GuestMemoryError

from .registers import CR0_PG, CR4_LA57, CR4_PAE, CR4_PSE, EFER_LMA

_PRESENT = 1 << 0
_HUGE = 1 << 7
_ADDR_MASK = 0x000F_FFFF_FFFF_F000  # bits 51:12 of a 64-bit entry


def _walk(read: Callable[[int], int], table: int, gva: int, shifts: tuple[int, ...],
          huge_from: int) -> int | None:
    """Walk 512-entry tables indexed by ``gva >> shift``; a PS entry ends the walk at
    levels whose shift is at most ``huge_from`` (1 GiB / 2 MiB pages)."""
    for shift in shifts:
        entry = read(table + (gva >> shift & 0x1FF) * 8)
        if not entry & _PRESENT:
            return None
        if shift == 12 or (shift <= huge_from and entry & _HUGE):
            size = 1 << shift
            return (entry & _ADDR_MASK & ~(size - 1)) | (gva & size - 1)
        table = entry & _ADDR_MASK
    return None


def _legacy_32bit(read32: Callable[[int], int], gva: int, cr3: int, cr4: int) -> int | None:
    pde = read32((cr3 & 0xFFFFF000) + (gva >> 22) * 4)
    if not pde & _PRESENT:
        return None
    if pde & _HUGE and cr4 & CR4_PSE:
        # 4 MiB page; PSE-36 puts physical address bits 39:32 in PDE bits 20:13.
        return (pde & 0xFFC00000) | (pde >> 13 & 0xFF) << 32 | (gva & 0x3FFFFF)
    pte = read32((pde & 0xFFFFF000) + (gva >> 12 & 0x3FF) * 4)
    if not pte & _PRESENT:
        return None
    return (pte & 0xFFFFF000) | (gva & 0xFFF)


def translate(read_u64: Callable[[int], int], gva: int, cr0: int, cr3: int, cr4: int,
              efer: int) -> int | None:
    """The guest-physical address ``gva`` maps to, or None when it is not mapped (or the
    tables themselves are not in guest RAM)."""
    try:
        if not cr0 & CR0_PG:
            return gva
        if efer & EFER_LMA:
            levels = 5 if cr4 & CR4_LA57 else 4
            width = 12 + 9 * levels
            top = gva >> (width - 1)
            if top not in (0, (1 << (65 - width)) - 1):
                return None  # non-canonical
            shifts = tuple(12 + 9 * i for i in reversed(range(levels)))
            return _walk(read_u64, cr3 & _ADDR_MASK, gva, shifts, 30)
        gva &= 0xFFFFFFFF
        if cr4 & CR4_PAE:
            pdpte = read_u64((cr3 & 0xFFFFFFE0) + (gva >> 30) * 8)
            if not pdpte & _PRESENT:
                return None
            return _walk(read_u64, pdpte & _ADDR_MASK, gva, (21, 12), 21)
        return _legacy_32bit(lambda gpa: read_u64(gpa) & 0xFFFFFFFF, gva, cr3, cr4)
    except GuestMemoryError:
        return None
