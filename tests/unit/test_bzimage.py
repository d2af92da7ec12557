import os
import struct

import pytest

from helpers import ROOT
from pyvisor.errors import ConfigError, KernelError
from pyvisor.loader.bzimage import (CAN_USE_HEAP, KEEP_SEGMENTS, LOADED_HIGH, check_cmdline,
                                    fill_zero_page, is_bzimage, load_bzimage, parse_bzimage)
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import MemoryLayout
from pyvisor.x86.bootparams import ZeroPage

MIB = 1 << 20
PAYLOAD = bytes(range(256)) * 8 + b"\xf4" * 16  # 2064 bytes, a multiple of 16
HELLO_BZIMAGE = ROOT / "guests" / "out" / "hello.bzImage"


def make_bzimage(payload=PAYLOAD, *, setup_sects=1, version=0x020F, header_end=0x26C,
                 loadflags=LOADED_HIGH, xloadflags=1, relocatable=0, alignment=2 * MIB,
                 pref=MIB, init_size=None, cmdline_size=2047, initrd_addr_max=0x7FFFFFFF,
                 syssize=None, boot_flag=0xAA55, magic=b"HdrS", truncate=0):
    """A bzImage per boot.rst: (setup_sects + 1) sectors of setup, then the payload."""
    setup = bytearray(((setup_sects or 4) + 1) * 512)

    def put(off, fmt, value):
        struct.pack_into("<" + fmt, setup, off, value)

    put(0x1F1, "B", setup_sects)
    put(0x1F4, "I", len(payload) // 16 if syssize is None else syssize)
    put(0x1FE, "H", boot_flag)
    put(0x200, "B", 0xEB)
    put(0x201, "B", header_end - 0x202)
    put(0x202, "4s", magic)
    put(0x206, "H", version)
    put(0x211, "B", loadflags)
    put(0x214, "I", 0x100000)
    put(0x22C, "I", initrd_addr_max)
    put(0x230, "I", alignment)
    put(0x234, "B", relocatable)
    put(0x236, "H", xloadflags)
    put(0x238, "I", cmdline_size)
    put(0x258, "Q", pref)
    put(0x260, "I", len(payload) + 0x10000 if init_size is None else init_size)
    data = bytes(setup) + payload
    return data[:len(data) - truncate]


@pytest.fixture
def mem():
    with GuestMemory(MemoryLayout(64 * MIB)) as m:
        yield m


def write(tmp_path, data, name="bzImage"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_detects_only_boot_images():
    assert is_bzimage(make_bzimage())
    assert not is_bzimage(make_bzimage(boot_flag=0))
    assert not is_bzimage(make_bzimage(magic=b"HdrX"))
    assert not is_bzimage(b"\x7fELF" + bytes(1000))
    assert not is_bzimage(b"")


def test_parse_fields():
    image = parse_bzimage(make_bzimage(setup_sects=2, relocatable=1, pref=16 * MIB,
                                       init_size=0x123000, cmdline_size=4095,
                                       initrd_addr_max=0x3FFFFFFF, xloadflags=3), "k")
    assert image.setup_sects == 2 and image.kernel_offset == 3 * 512
    assert image.syssize * 16 == image.kernel_size == len(PAYLOAD)
    assert image.relocatable_kernel and image.kernel_alignment == 2 * MIB
    assert (image.pref_address, image.init_size) == (16 * MIB, 0x123000)
    assert (image.cmdline_size, image.initrd_addr_max) == (4095, 0x3FFFFFFF)
    assert image.can_load_above_4g and image.protocol == "2.15"


def test_setup_sects_zero_means_four():
    image = parse_bzimage(make_bzimage(setup_sects=0), "k")
    assert image.setup_sects == 4 and image.kernel_offset == 5 * 512


def test_setup_header_bytes_are_the_protocol_range():
    data = make_bzimage(header_end=0x270)
    image = parse_bzimage(data, "k")
    # From 0x1F1 up to 0x202 + the jump's displacement byte at 0x201.
    assert image.setup_header == data[0x1F1:0x270]
    assert image.setup_header[0x202 - 0x1F1:0x206 - 0x1F1] == b"HdrS"


@pytest.mark.parametrize("kwargs, message", [
    (dict(version=0x0209), "boot protocol 2.09 is too old"),
    (dict(xloadflags=0), "not 64-bit capable"),
    (dict(xloadflags=2), "lacks XLF_KERNEL_64"),
    (dict(loadflags=0), "zImage"),
    (dict(truncate=1), "truncated: the setup header says"),
    (dict(syssize=0), "syssize 0"),
    (dict(header_end=0x250), "before init_size"),
    (dict(setup_sects=0, header_end=0x26C, truncate=len(PAYLOAD) + 5 * 512 - 0x250),
     "truncated: the setup header needs"),
])
def test_parse_errors(kwargs, message):
    with pytest.raises(KernelError, match=message) as info:
        parse_bzimage(make_bzimage(**kwargs), "vmlinuz")
    assert str(info.value).startswith("kernel 'vmlinuz': ")
    assert "\n" not in str(info.value)


def test_loads_at_pref_address(tmp_path, mem):
    mem.fill(MIB - 16, 16, 0xAA)
    kernel = load_bzimage(write(tmp_path, make_bzimage(pref=2 * MIB, init_size=0x40000)), mem)
    assert kernel.load_addr == 2 * MIB
    assert kernel.entry == 2 * MIB + 0x200
    assert (kernel.low, kernel.high) == (2 * MIB, 2 * MIB + 0x40000)
    assert mem.read(2 * MIB, len(PAYLOAD)) == PAYLOAD
    assert mem.read(kernel.entry, 4) == PAYLOAD[0x200:0x204]
    assert mem.read(MIB - 16, 16) == b"\xaa" * 16  # nothing written below


def test_loads_from_a_pipe_as_from_a_file(mem):
    data = make_bzimage(pref=2 * MIB, init_size=0x40000)
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    try:
        kernel = load_bzimage(f"/dev/fd/{r}", mem)
    finally:
        os.close(r)
    assert kernel.load_addr == 2 * MIB
    assert mem.read(2 * MIB, len(PAYLOAD)) == PAYLOAD


def test_relocatable_kernel_moves_up_when_pref_does_not_fit(tmp_path, mem):
    # pref_address below 1 MiB (where the boot structures live): the next aligned spot.
    kernel = load_bzimage(write(tmp_path, make_bzimage(relocatable=1, pref=0x80000)), mem)
    assert kernel.load_addr == 2 * MIB  # 1 MiB rounded up to kernel_alignment
    assert mem.read(2 * MIB, len(PAYLOAD)) == PAYLOAD


def test_relocation_respects_alignment(tmp_path, mem):
    kernel = load_bzimage(write(tmp_path, make_bzimage(relocatable=1, pref=0x80000,
                                                       alignment=16 * MIB)), mem)
    assert kernel.load_addr == 16 * MIB


def test_relocation_never_goes_below_pref(tmp_path, mem):
    # 60 MiB + 8 MiB does not fit in 64 MiB, and a relocatable kernel loaded lower would
    # still run at pref_address: refuse rather than load it where it cannot stay.
    data = make_bzimage(relocatable=1, pref=60 * MIB, init_size=8 * MIB)
    with pytest.raises(KernelError, match="does not fit in RAM"):
        load_bzimage(write(tmp_path, data), mem)


def test_init_size_must_fit_not_just_the_file(tmp_path, mem):
    # The file (2 KiB) fits at 63 MiB; the 4 MiB init_size does not.
    data = make_bzimage(pref=63 * MIB, init_size=4 * MIB)
    with pytest.raises(KernelError, match=r"does not fit in RAM.*not relocatable.*64 MiB"):
        load_bzimage(write(tmp_path, data), mem)
    assert mem.read(63 * MIB, 16) == bytes(16)  # nothing was written


def test_fits_exactly_at_the_top(tmp_path, mem):
    kernel = load_bzimage(write(tmp_path, make_bzimage(pref=60 * MIB, init_size=4 * MIB)), mem)
    assert kernel.high == 64 * MIB


def test_missing_file(tmp_path, mem):
    with pytest.raises(KernelError, match="No such file"):
        load_bzimage(tmp_path / "nope", mem)


def test_check_cmdline():
    check_cmdline(b"a" * 255, 255)
    check_cmdline(b"a" * 255 + b"\0", 255)  # the NUL does not count
    with pytest.raises(ConfigError,
                       match="^command line too long: 256 bytes, this kernel accepts at most 255$"):
        check_cmdline(b"a" * 256, 255)


def test_fill_zero_page(tmp_path, mem):
    data = make_bzimage(pref=2 * MIB, cmdline_size=2047, loadflags=LOADED_HIGH | CAN_USE_HEAP
                        | KEEP_SEGMENTS)
    kernel = load_bzimage(write(tmp_path, data), mem)
    zp = ZeroPage()
    e820 = MemoryLayout(64 * MIB).e820()
    fill_zero_page(zp, kernel, 0x20000, 12, (0x3F00000, 0x5000), e820=e820)
    page = zp.to_bytes()
    hdr_len = 0x26C - 0x1F1
    expect = bytearray(data[0x1F1:0x26C])
    got = bytearray(page[0x1F1:0x1F1 + hdr_len])
    # Fields the loader writes; everything else is the kernel's header, byte for byte.
    for off, size in ((0x210, 1), (0x211, 1), (0x214, 4), (0x218, 8), (0x228, 4)):
        expect[off - 0x1F1:off - 0x1F1 + size] = got[off - 0x1F1:off - 0x1F1 + size]
    assert got == expect
    assert page[0x210] == 0xFF  # type_of_loader
    assert page[0x211] & LOADED_HIGH and not page[0x211] & (CAN_USE_HEAP | KEEP_SEGMENTS)
    u32 = lambda off: int.from_bytes(page[off:off + 4], "little")  # noqa: E731
    assert u32(0x214) == 2 * MIB  # code32_start = load address
    assert (u32(0x218), u32(0x21C)) == (0x3F00000, 0x5000)  # ramdisk_image, ramdisk_size
    assert u32(0x228) == 0x20000  # cmd_line_ptr
    assert u32(0x238) == 2047  # cmdline_size stays the kernel's limit
    assert u32(0x224) & 0xFFFF == 0  # heap_end_ptr
    assert page[0x1E8] == len(e820)


def test_fill_zero_page_without_initrd(tmp_path, mem):
    kernel = load_bzimage(write(tmp_path, make_bzimage()), mem)
    zp = ZeroPage()
    fill_zero_page(zp, kernel, 0x20000, 1, None)
    page = zp.to_bytes()
    assert page[0x218:0x220] == bytes(8)
    assert page[0x1E8] == 0  # e820 left to the caller


def test_tiny_hello_bzimage(mem):
    """guests/out/hello.bzImage (make -C guests): the wrapper's header parses and the
    64-bit entry lands on the tiny kernel's _start (cli: fa)."""
    if not HELLO_BZIMAGE.exists():
        pytest.fail(f"{HELLO_BZIMAGE} is missing: build the guests with `make guests`")
    data = HELLO_BZIMAGE.read_bytes()
    image = parse_bzimage(data, "hello.bzImage")
    assert image.version == 0x020F and image.pref_address == MIB
    assert not image.relocatable_kernel and image.cmdline_size == 4095
    assert image.init_size % 4096 == 0 and image.init_size >= image.kernel_size
    kernel = load_bzimage(HELLO_BZIMAGE, mem)
    assert kernel.entry == MIB + 0x200
    assert mem.read(kernel.entry, 1) == b"\xfa"  # start.S: cli
    assert mem.read(MIB, 2) == b"\x0f\x0b"  # the unused 32-bit entry is ud2
    assert mem.read(MIB + 0x100, 4) == b"LToP"  # kernel_info
