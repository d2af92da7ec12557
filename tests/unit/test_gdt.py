from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import MemoryLayout
from pyvisor.x86.boot_layout import GDT_ADDR, TSS_ADDR, TSS_SIZE
from pyvisor.x86.gdt import (BOOT_GDT, CODE32_SELECTOR, CODE64_SELECTOR, DATA_SELECTOR,
                             TSS_SELECTOR, Segment, segment_from_descriptor, write_gdt)


def test_boot_gdt_layout():
    assert BOOT_GDT[0] == 0
    assert BOOT_GDT[CODE32_SELECTOR >> 3] == 0x00CF9B000000FFFF
    assert BOOT_GDT[CODE64_SELECTOR >> 3] == 0x00AF9B000000FFFF
    assert BOOT_GDT[DATA_SELECTOR >> 3] == 0x00CF93000000FFFF
    assert (CODE64_SELECTOR, DATA_SELECTOR, TSS_SELECTOR) == (0x10, 0x18, 0x20)
    assert len(BOOT_GDT) == 6  # the TSS descriptor takes two slots


def test_code64_segment():
    assert segment_from_descriptor(0x10, BOOT_GDT[2]) == Segment(
        base=0, limit=0xFFFFFFFF, selector=0x10, type=0xB, present=1, dpl=0, db=0, s=1,
        l=1, g=1, avl=0)


def test_code32_and_data_segments():
    code32 = segment_from_descriptor(0x08, BOOT_GDT[1])
    assert (code32.type, code32.db, code32.l, code32.limit) == (0xB, 1, 0, 0xFFFFFFFF)
    data = segment_from_descriptor(0x18, BOOT_GDT[3])
    assert (data.type, data.s, data.db, data.l, data.present) == (0x3, 1, 1, 0, 1)


def test_tss_segment():
    tss = segment_from_descriptor(TSS_SELECTOR, BOOT_GDT[4] | BOOT_GDT[5] << 64)
    assert tss == Segment(base=TSS_ADDR, limit=TSS_SIZE - 1, selector=TSS_SELECTOR, type=0xB,
                          present=1, dpl=0, db=0, s=0, l=0, g=0, avl=0)
    assert segment_from_descriptor(TSS_SELECTOR, BOOT_GDT[4]) == tss  # base below 4 GiB


def test_decoding_scattered_fields():
    # base 0x12345678, limit 0xABCDE byte-granular, type 0xA, DPL 3, AVL, D/B
    d = 0x12_5_A_FA_345678_BCDE
    seg = segment_from_descriptor(0x2B, d)
    assert (seg.base, seg.limit, seg.type, seg.dpl, seg.present, seg.s) == \
        (0x12345678, 0xABCDE, 0xA, 3, 1, 1)
    assert (seg.avl, seg.l, seg.db, seg.g) == (1, 0, 1, 0)
    high = segment_from_descriptor(0, 0xDEADBEEF << 64)
    assert high.base == 0xDEADBEEF << 32


def test_write_gdt():
    with GuestMemory(MemoryLayout(2 << 20)) as mem:
        mem.fill(0, 0x1000, 0xFF)
        base, limit = write_gdt(mem)
        assert (base, limit) == (GDT_ADDR, 6 * 8 - 1)
        for i, descriptor in enumerate(BOOT_GDT):
            assert mem.read_u64(GDT_ADDR + i * 8) == descriptor
        assert GDT_ADDR + limit < TSS_ADDR
        tss = mem.read(TSS_ADDR, TSS_SIZE)
        assert tss[:0x66] == bytes(0x66)
        assert int.from_bytes(tss[0x66:0x68], "little") == TSS_SIZE  # no I/O bitmap
