import struct

import pytest

from pyvisor._native import lib
from pyvisor.errors import ConfigError
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import E820Entry, MemoryLayout
from pyvisor.x86 import boot_layout
from pyvisor.x86.gdt import CODE32_SELECTOR, DATA_SELECTOR, TSS_SELECTOR
from pyvisor.x86.pvh import (MEMMAP_ENTRY, MEMMAP_MAX_ENTRIES, MODLIST_ENTRY, START_INFO,
                             START_INFO_ADDR, build_start_info, enter_protected_mode)
from pyvisor.x86.registers import CR0_ET, CR0_PE

MIB = 1 << 20


@pytest.fixture
def mem():
    with GuestMemory(MemoryLayout(64 * MIB)) as m:
        yield m


def u32(mem, gpa):
    return mem.read_u32(gpa)


def u64(mem, gpa):
    return mem.read_u64(gpa)


def test_address_is_free_boot_area():
    # Below 1 MiB, clear of the GDT/TSS, the zero page, the stack and the page tables.
    assert boot_layout.TSS_ADDR + boot_layout.TSS_SIZE <= START_INFO_ADDR
    assert START_INFO_ADDR + 0x1000 <= boot_layout.ZERO_PAGE_ADDR
    assert START_INFO_ADDR % 8 == 0


def test_struct_sizes():
    # start_info.h: hvm_start_info is 56 bytes, hvm_modlist_entry 32, hvm_memmap_table_entry 24
    assert (START_INFO.size, MODLIST_ENTRY.size, MEMMAP_ENTRY.size) == (56, 32, 24)


def test_start_info_layout(mem):
    e820 = MemoryLayout(64 * MIB).e820()
    addr = build_start_info(mem, e820, 0x20000, (0x3F00000, 0x12345), rsdp_gpa=0xE0000)
    assert addr == START_INFO_ADDR
    # xen/include/public/arch-x86/hvm/start_info.h offsets
    assert u32(mem, addr + 0) == 0x336EC578  # magic "xEn3"
    assert u32(mem, addr + 4) == 1  # version
    assert u32(mem, addr + 8) == 0  # flags
    assert u32(mem, addr + 12) == 1  # nr_modules
    modlist = u64(mem, addr + 16)
    assert u64(mem, addr + 24) == 0x20000  # cmdline_paddr
    assert u64(mem, addr + 32) == 0xE0000  # rsdp_paddr
    memmap = u64(mem, addr + 40)
    assert u32(mem, addr + 48) == len(e820)  # memmap_entries
    assert u32(mem, addr + 52) == 0  # reserved
    # hvm_modlist_entry: paddr, size, cmdline_paddr, reserved (32 bytes)
    assert struct.unpack("<QQQQ", mem.read(modlist, 32)) == (0x3F00000, 0x12345, 0, 0)
    # hvm_memmap_table_entry: addr, size, type, reserved (24 bytes)
    for i, e in enumerate(e820):
        assert struct.unpack("<QQII", mem.read(memmap + 24 * i, 24)) == (e.addr, e.size, e.type, 0)
    # The three do not overlap and stay in one page of the boot area.
    assert addr + 56 <= modlist and modlist + 32 <= memmap
    assert memmap + 24 * len(e820) <= boot_layout.ZERO_PAGE_ADDR


def test_without_initrd(mem):
    mem.fill(START_INFO_ADDR, 0x1000, 0xAA)  # stale bytes must not survive
    addr = build_start_info(mem, [E820Entry(0, 0x9FC00, lib.E820_RAM)], 0x20000, None, 0)
    assert u32(mem, addr + 12) == 0 and u64(mem, addr + 16) == 0
    assert u64(mem, addr + 32) == 0
    assert mem.read(addr + 56, 8) == bytes(8)


def test_too_many_memmap_entries(mem):
    entries = [E820Entry(i * MIB, MIB, lib.E820_RAM) for i in range(MEMMAP_MAX_ENTRIES + 1)]
    with pytest.raises(ConfigError, match=f"at most {MEMMAP_MAX_ENTRIES}"):
        build_start_info(mem, entries, 0x20000, None, 0)


class _Seg:
    pass


class _Table:
    pass


class FakeVcpu:
    """The get/set pairs enter_protected_mode uses, recording what it sets."""

    def __init__(self):
        self.sregs = _Table()
        for name in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"):
            setattr(self.sregs, name, _Seg())
        self.sregs.gdt, self.sregs.idt = _Seg(), _Seg()
        # Stale long-mode values that enter_protected_mode must clear.
        self.sregs.cr0, self.sregs.cr3 = 0x80000011, 0x1000
        self.sregs.cr4, self.sregs.efer = 0x20, 0x500
        self.regs, self.fpu = _Table(), _Table()

    def get_sregs(self):
        return self.sregs

    def set_sregs(self, s):
        self.sregs = s

    def get_regs(self):
        return self.regs

    def set_regs(self, r):
        self.regs = r

    def get_fpu(self):
        return self.fpu

    def set_fpu(self, f):
        self.fpu = f


def test_enter_protected_mode_state():
    vcpu = FakeVcpu()
    enter_protected_mode(vcpu, 0x500, 0x2F, 0x1000000, START_INFO_ADDR)
    s, r = vcpu.sregs, vcpu.regs
    assert s.cs.selector == CODE32_SELECTOR
    assert (s.cs.base, s.cs.limit, s.cs.l, s.cs.db, s.cs.type & 0x8) == (0, 0xFFFFFFFF, 0, 1, 0x8)
    for seg in (s.ds, s.es, s.fs, s.gs, s.ss):
        assert (seg.selector, seg.base, seg.limit, seg.db, seg.type) == \
            (DATA_SELECTOR, 0, 0xFFFFFFFF, 1, 0x3)
    assert s.tr.selector == TSS_SELECTOR and s.tr.limit == 0x67 and s.tr.type == 0xB
    assert (s.gdt.base, s.gdt.limit) == (0x500, 0x2F)
    assert s.cr0 == CR0_PE | CR0_ET
    assert (s.cr3, s.cr4, s.efer) == (0, 0, 0)
    assert r.rflags == 0x2
    assert r.rip == 0x1000000
    assert r.rbx == START_INFO_ADDR
