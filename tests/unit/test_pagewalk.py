import pytest

from pyvisor.errors import GuestMemoryError
from pyvisor.x86.pagewalk import translate

P, W, PS = 1, 2, 0x80
CR0_PG, CR0_PE = 1 << 31, 1
CR4_PSE, CR4_PAE, CR4_LA57 = 1 << 4, 1 << 5, 1 << 12
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
LONG = dict(cr0=CR0_PG | CR0_PE, cr4=CR4_PAE, efer=EFER_LME | EFER_LMA)


class FakeMemory:
    """Sparse guest memory holding 64-bit little-endian words."""

    def __init__(self, limit=1 << 32):
        self.words: dict[int, int] = {}
        self.limit = limit

    def set64(self, addr, value):
        self.words[addr] = value

    def set32(self, addr, value):
        # Place a 32-bit entry at addr (4-aligned) inside the containing qword.
        base = addr & ~7
        shift = (addr & 7) * 8
        old = self.words.get(base, 0) & ~(0xFFFFFFFF << shift)
        self.words[base] = old | value << shift

    def read_u64(self, addr):
        if addr + 8 > self.limit:
            raise GuestMemoryError("outside")
        base, shift = addr & ~7, (addr & 7) * 8
        if not shift:
            return self.words.get(base, 0)
        return (self.words.get(base, 0) >> shift | self.words.get(base + 8, 0) << (64 - shift)) \
            & (1 << 64) - 1


def test_paging_off_is_identity():
    assert translate(FakeMemory().read_u64, 0x12345, CR0_PE, 0, 0, 0) == 0x12345


def _long_mode_tables(mem, gva, leaf_level, phys):
    """Tables at 0x1000.. mapping gva with a leaf at level 3 (1G), 2 (2M) or 1 (4K)."""
    table = 0x1000
    for level, shift in ((4, 39), (3, 30), (2, 21), (1, 12)):
        index = gva >> shift & 0x1FF
        if level == leaf_level:
            mem.set64(table + index * 8, phys | P | W | (PS if level > 1 else 0))
            return
        nxt = table + 0x1000
        mem.set64(table + index * 8, nxt | P | W)
        table = nxt


@pytest.mark.parametrize("leaf_level, phys, offset_bits", [
    (3, 0x1_4000_0000, 30), (2, 0x60_0000, 21), (1, 0x7_5000, 12)])
def test_long_mode_page_sizes(leaf_level, phys, offset_bits):
    mem = FakeMemory()
    gva = 0xFFFF_8000_1234_5678
    _long_mode_tables(mem, gva, leaf_level, phys)
    offset = gva & (1 << offset_bits) - 1
    assert translate(mem.read_u64, gva, cr3=0x1000, **LONG) == phys + offset


def test_long_mode_not_present():
    mem = FakeMemory()
    _long_mode_tables(mem, 0x400000, 2, 0x800000)
    assert translate(mem.read_u64, 0x400000 + (1 << 30), cr3=0x1000, **LONG) is None


def test_long_mode_ignores_nx_and_available_bits():
    mem = FakeMemory()
    mem.set64(0x1000, 0x2000 | P | 1 << 63 | 1 << 52)
    mem.set64(0x2000, 0x4000_0000 | P | PS | 1 << 63 | 1 << 12)  # bit 12 is PAT here
    assert translate(mem.read_u64, 0x123, cr3=0x1000, **LONG) == 0x4000_0123


def test_non_canonical_address():
    mem = FakeMemory()
    mem.set64(0x1000, 0x2000 | P)
    assert translate(mem.read_u64, 0x0000_8000_0000_0000, cr3=0x1000, **LONG) is None


def test_five_level_paging():
    mem = FakeMemory()
    gva = 0x0001_0000_0000_1234  # bit 48: PML5 index 1
    mem.set64(0x1000 + 8, 0x2000 | P)
    mem.set64(0x2000, 0x3000 | P)
    mem.set64(0x3000, 0x4000_0000 | P | PS)
    assert translate(mem.read_u64, gva, cr0=CR0_PG, cr3=0x1000, cr4=CR4_PAE | CR4_LA57,
                     efer=EFER_LMA) == 0x4000_1234
    # With four levels that address is non-canonical.
    assert translate(mem.read_u64, gva, cr3=0x1000, **LONG) is None


def test_table_outside_guest_ram_is_none():
    mem = FakeMemory(limit=0x10000)
    mem.set64(0x1000, 0x8000_0000 | P)
    assert translate(mem.read_u64, 0x1000, cr3=0x1000, **LONG) is None
    assert translate(mem.read_u64, 0x1000, cr3=0x9000_0000, **LONG) is None


def test_pae_2m_and_4k():
    mem = FakeMemory()
    mem.set64(0x1000 + 3 * 8, 0x2000 | P)           # PDPTE 3: 0xC0000000..
    mem.set64(0x2000 + 1 * 8, 0x0060_0000 | P | PS)  # 2 MiB page
    mem.set64(0x2000 + 2 * 8, 0x3000 | P)
    mem.set64(0x3000 + 5 * 8, 0x1_2345_6000 | P)     # above 4 GiB: PAE can reach it
    cr = dict(cr0=CR0_PG | CR0_PE, cr3=0x1000, cr4=CR4_PAE, efer=0)
    assert translate(mem.read_u64, 0xC020_0ABC, **cr) == 0x60_0ABC
    assert translate(mem.read_u64, 0xC040_5ABC, **cr) == 0x1_2345_6ABC
    assert translate(mem.read_u64, 0x4000_0000, **cr) is None


def test_legacy_32bit_4k_and_4m():
    mem = FakeMemory()
    mem.set32(0x1000 + 0x300 * 4, 0x2000 | P)                 # PDE for 0xC0000000
    mem.set32(0x2000 + 0x12 * 4, 0x0055_5000 | P)
    mem.set32(0x1000 + 0x301 * 4, 0x0080_0000 | P | PS)       # 4 MiB page
    mem.set32(0x1000 + 0x302 * 4, 0x0080_0000 | P | PS | 0x3 << 13)  # PSE-36: bits 33:32
    mem.set32(0x1000 + 0x303 * 4, 0x2000)                     # not present
    cr = dict(cr0=CR0_PG | CR0_PE, cr3=0x1000, efer=0)
    assert translate(mem.read_u64, 0xC001_2345, cr4=CR4_PSE, **cr) == 0x55_5345
    assert translate(mem.read_u64, 0xC041_2345, cr4=CR4_PSE, **cr) == 0x81_2345
    assert translate(mem.read_u64, 0xC081_2345, cr4=CR4_PSE, **cr) == 0x3_0081_2345
    assert translate(mem.read_u64, 0xC0C0_0000, cr4=CR4_PSE, **cr) is None


def test_legacy_32bit_ps_bit_ignored_without_pse():
    mem = FakeMemory()
    mem.set32(0x1000 + 1 * 4, 0x2000 | P | PS)
    mem.set32(0x2000 + 3 * 4, 0x9000 | P)
    cr = dict(cr0=CR0_PG | CR0_PE, cr3=0x1000, efer=0)
    assert translate(mem.read_u64, 0x40_3123, cr4=0, **cr) == 0x9123
