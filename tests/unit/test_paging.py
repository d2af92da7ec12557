import pytest

from pyvisor.errors import ConfigError
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import MemoryLayout
from pyvisor.x86.boot_layout import PAGE_TABLES_ADDR, PAGE_TABLES_END, PD_ADDR
from pyvisor.x86.pagewalk import translate
from pyvisor.x86.paging import build_identity_map

MIB = 1 << 20
GIB = 1 << 30
LONG = dict(cr0=1 << 31 | 1, cr4=1 << 5, efer=1 << 10 | 1 << 8)


@pytest.fixture
def mem():
    with GuestMemory(MemoryLayout(4 * MIB)) as m:
        yield m


def _walk(mem, cr3, gva):
    return translate(mem.read_u64, gva, cr3=cr3, **LONG)


@pytest.mark.parametrize("huge_1g", [True, False])
def test_identity_map_covers_4g(mem, huge_1g):
    cr3 = build_identity_map(mem, 4 * MIB, huge_1g)
    assert cr3 == PAGE_TABLES_ADDR
    for gpa in (0, 0x1234, 0x100000, 3 * GIB + 0x42, 0xFEE00000, 0xFEC00000 + 0x10,
                4 * GIB - 1):
        assert _walk(mem, cr3, gpa) == gpa
    assert _walk(mem, cr3, 4 * GIB) is None


@pytest.mark.parametrize("huge_1g", [True, False])
def test_identity_map_covers_ram_above_4g(mem, huge_1g):
    top = 9 * GIB + 2 * MIB  # rounded up to a whole GiB
    cr3 = build_identity_map(mem, top, huge_1g)
    for gpa in (5 * GIB + 0x5000, top - 1, 10 * GIB - 1):
        assert _walk(mem, cr3, gpa) == gpa
    assert _walk(mem, cr3, 10 * GIB) is None


def test_page_sizes(mem):
    cr3 = build_identity_map(mem, 4 * MIB, huge_1g=True)
    pdpte = mem.read_u64(mem.read_u64(cr3) & ~0xFFF)
    assert pdpte == 0x83  # present | writable | 1 GiB page at 0
    cr3 = build_identity_map(mem, 4 * MIB, huge_1g=False)
    pd = mem.read_u64(mem.read_u64(cr3) & ~0xFFF) & ~0xFFF
    assert pd == PD_ADDR
    assert mem.read_u64(pd + 8) == 2 * MIB | 0x83


def test_rebuild_clears_stale_entries(mem):
    build_identity_map(mem, 8 * GIB, huge_1g=True)
    cr3 = build_identity_map(mem, 4 * MIB, huge_1g=True)
    assert _walk(mem, cr3, 5 * GIB) is None


def test_2m_pages_limit(mem):
    most = (PAGE_TABLES_END - PD_ADDR) // 0x1000
    cr3 = build_identity_map(mem, most * GIB, huge_1g=False)
    assert _walk(mem, cr3, most * GIB - 1) == most * GIB - 1
    with pytest.raises(ConfigError, match="needs 1 GiB pages"):
        build_identity_map(mem, most * GIB + 1, huge_1g=False)


def test_1g_pages_limit(mem):
    cr3 = build_identity_map(mem, 512 * GIB, huge_1g=True)
    assert _walk(mem, cr3, 512 * GIB - 1) == 512 * GIB - 1
    with pytest.raises(ConfigError, match="more than the 512 GiB"):
        build_identity_map(mem, 512 * GIB + 1, huge_1g=True)


def test_tables_stay_in_the_reserved_area(mem):
    mem.fill(0, 4 * MIB, 0xEE)
    most = (PAGE_TABLES_END - PD_ADDR) // 0x1000
    build_identity_map(mem, most * GIB, huge_1g=False)
    assert mem.read(PAGE_TABLES_ADDR - 16, 16) == b"\xee" * 16
    assert mem.read(PAGE_TABLES_END, 16) == b"\xee" * 16
