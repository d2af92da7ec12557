"""The boot GDT and the decoding of its descriptors into KVM segment registers.

The selectors follow the Linux boot protocol (__BOOT_CS = 0x10, __BOOT_DS = 0x18), and the
segment registers handed to KVM are decoded from the very descriptors written to guest
memory, so the cached state and the GDT a guest might reload from always agree.
"""

from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.value import Value
from pyvisor.x86.boot_layout import GDT_ADDR, TSS_ADDR, TSS_SIZE

CODE32_SELECTOR = 0x08
CODE64_SELECTOR = 0x10
DATA_SELECTOR = 0x18
TSS_SELECTOR = 0x20

_TSS_BUSY_64 = 0xB  # type of a busy 64-bit TSS: what VM entry requires of TR
_TSS_IOMAP_BASE_OFFSET = 0x66


def _system_descriptor(base: int, limit: int, type_: int) -> tuple[int, int]:
    """A 16-byte long-mode system descriptor (present, DPL 0, byte granular) as two qwords."""
    low = ((limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | (0x80 | type_) << 40
           | (limit >> 16 & 0xF) << 48 | (base >> 24 & 0xFF) << 56)
    return low, base >> 32


BOOT_GDT: list[int] = [
    0,
    0x00CF9B000000FFFF,  # 0x08: flat 32-bit code
    0x00AF9B000000FFFF,  # 0x10: flat 64-bit code
    0x00CF93000000FFFF,  # 0x18: flat data
    *_system_descriptor(TSS_ADDR, TSS_SIZE - 1, _TSS_BUSY_64),  # 0x20: TSS (16 bytes)
]


class Segment(Value):
    """A segment register's hidden state, field for field as in struct kvm_segment."""

    __slots__ = ("base", "limit", "selector", "type", "present", "dpl", "db", "s", "l", "g",
                 "avl")

    def __init__(self, base: int, limit: int, selector: int, type: int, present: int,
                 dpl: int, db: int, s: int, l: int, g: int, avl: int) -> None:  # noqa: E741
        self.base, self.limit, self.selector, self.type = base, limit, selector, type
        self.present, self.dpl, self.db, self.s = present, dpl, db, s
        self.l, self.g, self.avl = l, g, avl  # noqa: E741 - the architectural name


def segment_from_descriptor(selector: int, descriptor: int) -> Segment:
    """Decode a GDT descriptor. For a 16-byte system descriptor pass both qwords as one
    128-bit value (low | high << 64) to get the upper 32 bits of the base."""
    g = descriptor >> 55 & 1
    limit = (descriptor & 0xFFFF) | (descriptor >> 48 & 0xF) << 16
    if g:
        limit = limit << 12 | 0xFFF
    base = (descriptor >> 16 & 0xFFFFFF) | (descriptor >> 56 & 0xFF) << 24
    base |= (descriptor >> 64 & 0xFFFFFFFF) << 32
    return Segment(
        base=base, limit=limit, selector=selector,
        type=descriptor >> 40 & 0xF, s=descriptor >> 44 & 1, dpl=descriptor >> 45 & 3,
        present=descriptor >> 47 & 1, avl=descriptor >> 52 & 1, l=descriptor >> 53 & 1,
        db=descriptor >> 54 & 1, g=g)


def write_gdt(mem: GuestMemory) -> tuple[int, int]:
    """Write BOOT_GDT and a zeroed TSS; return (base, limit) for the GDTR."""
    table = b"".join(d.to_bytes(8, "little") for d in BOOT_GDT)
    mem.write(GDT_ADDR, table)
    mem.fill(TSS_ADDR, TSS_SIZE)
    # An I/O map base at or past the limit means "no I/O permission bitmap".
    mem.write_u16(TSS_ADDR + _TSS_IOMAP_BASE_OFFSET, TSS_SIZE)
    return GDT_ADDR, len(table) - 1
