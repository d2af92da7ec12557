import pytest

from pyvisor._native import ffi, lib
from pyvisor.errors import ConfigError
from pyvisor.memory.layout import E820Entry, MemoryLayout
from pyvisor.x86.bootparams import ZeroPage


def u8(page, off):
    return page[off]


def u16(page, off):
    return int.from_bytes(page[off:off + 2], "little")


def u32(page, off):
    return int.from_bytes(page[off:off + 4], "little")


def u64(page, off):
    return int.from_bytes(page[off:off + 8], "little")


def test_offsets_match_the_boot_protocol():
    # Documentation/arch/x86/zero-page.rst and boot.rst
    assert ffi.sizeof("struct boot_params") == 4096
    assert ffi.offsetof("struct boot_params", "e820_entries") == 0x1E8
    assert ffi.offsetof("struct boot_params", "hdr") == 0x1F1
    assert ffi.offsetof("struct boot_params", "e820_table") == 0x2D0
    assert ffi.offsetof("struct boot_params", "ext_cmd_line_ptr") == 0x0C8
    assert 0x1F1 + ffi.offsetof("struct setup_header", "cmd_line_ptr") == 0x228


def test_defaults():
    page = ZeroPage().to_bytes()
    assert len(page) == 4096
    assert u16(page, 0x1FE) == 0xAA55
    assert page[0x202:0x206] == b"HdrS"
    assert u8(page, 0x210) == 0xFF  # type_of_loader
    assert u8(page, 0x1E8) == 0


def test_e820():
    zp = ZeroPage()
    entries = MemoryLayout(5 << 30).e820()
    zp.set_e820(entries)
    page = zp.to_bytes()
    assert u8(page, 0x1E8) == len(entries)
    for i, e in enumerate(entries):
        off = 0x2D0 + i * 20
        assert (u64(page, off), u64(page, off + 8), u32(page, off + 16)) == \
            (e.addr, e.size, e.type)


def test_e820_too_many_entries():
    zp = ZeroPage()
    n = lib.E820_MAX_ENTRIES_ZEROPAGE
    zp.set_e820([E820Entry(i << 20, 1 << 20, lib.E820_RAM) for i in range(n)])
    with pytest.raises(ConfigError, match=f"at most {n}"):
        zp.set_e820([E820Entry(i << 20, 1 << 20, lib.E820_RAM) for i in range(n + 1)])


def test_cmdline():
    zp = ZeroPage()
    zp.set_cmdline(0x20000, 12)
    page = zp.to_bytes()
    assert u32(page, 0x228) == 0x20000
    assert u32(page, 0x0C8) == 0
    assert u32(page, 0x238) == 12  # cmdline_size
    zp.set_cmdline(0x1_2345_6000, 12)
    page = zp.to_bytes()
    assert (u32(page, 0x228), u32(page, 0x0C8)) == (0x2345_6000, 1)


def test_initrd():
    zp = ZeroPage()
    zp.set_initrd(0x2_0000_1000, 0x1_0000_0200)
    page = zp.to_bytes()
    assert u32(page, 0x218) == 0x1000      # ramdisk_image
    assert u32(page, 0x21C) == 0x200       # ramdisk_size
    assert u32(page, 0x0C0) == 2           # ext_ramdisk_image
    assert u32(page, 0x0C4) == 1           # ext_ramdisk_size


def test_hdr_field_access():
    zp = ZeroPage()
    zp.hdr.loadflags |= lib.LOADED_HIGH
    zp.hdr.vid_mode = 0xFFFF
    page = zp.to_bytes()
    assert u8(page, 0x211) & 1
    assert u16(page, 0x1FA) == 0xFFFF


def test_set_setup_header_copies_at_0x1f1():
    raw = bytearray(ffi.sizeof("struct setup_header"))  # up to 0x26C with kernel_info_offset
    raw[0] = 0x1B                                      # setup_sects
    raw[0x1FE - 0x1F1:0x200 - 0x1F1] = b"\x55\xaa"
    raw[0x202 - 0x1F1:0x206 - 0x1F1] = b"HdrS"
    raw[0x206 - 0x1F1:0x208 - 0x1F1] = (0x020F).to_bytes(2, "little")
    raw[0x230 - 0x1F1:0x234 - 0x1F1] = (0x200000).to_bytes(4, "little")  # kernel_alignment
    zp = ZeroPage()
    zp.set_e820([E820Entry(0, 0x1000, lib.E820_RAM)])
    zp.set_setup_header(bytes(raw) + b"\x99" * 64)  # excess is not copied
    page = zp.to_bytes()
    assert page[0x1F1] == 0x1B
    assert zp.hdr.version == 0x020F
    assert u32(page, 0x230) == 0x200000
    assert u8(page, 0x210) == 0xFF  # we are the loader
    assert u8(page, 0x1E8) == 1     # fields outside hdr untouched
    assert b"\x99" not in page
