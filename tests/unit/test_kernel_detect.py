import struct

import pytest

from pyvisor.errors import ConfigError, KernelError
from pyvisor.loader.kernel import BootImage, detect_format, load_kernel
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import MemoryLayout

MIB = 1 << 20


def bzimage(payload=b"\x90" * 0x200 + b"\xfa\xf4" + bytes(14), *, cmdline_size=255,
            init_size=0x10000, initrd_addr_max=0x7FFFFFFF):
    """A minimal 64-bit bzImage: 1 setup sector after the boot sector, protocol 2.15."""
    setup = bytearray(2 * 512)
    for off, fmt, value in ((0x1F1, "B", 1), (0x1F4, "I", len(payload) // 16),
                            (0x1FE, "H", 0xAA55), (0x200, "B", 0xEB), (0x201, "B", 0x6A),
                            (0x202, "4s", b"HdrS"), (0x206, "H", 0x020F), (0x211, "B", 1),
                            (0x22C, "I", initrd_addr_max), (0x230, "I", 2 * MIB),
                            (0x236, "H", 1), (0x238, "I", cmdline_size),
                            (0x258, "Q", MIB), (0x260, "I", init_size)):
        struct.pack_into("<" + fmt, setup, off, value)
    return bytes(setup) + payload


def elf(entry=0x100000, pvh_entry=None, paddr=0x100000, body=b"\xfa\xf4" + bytes(62)):
    """A minimal ELF64 ET_EXEC with one PT_LOAD and optionally a Xen PVH entry note."""
    notes = b""
    if pvh_entry is not None:
        notes = struct.pack("<III", 4, 4, 18) + b"Xen\0" + struct.pack("<I", pvh_entry)
    phnum = 2 if notes else 1
    data_at = 64 + 56 * phnum
    phdrs = struct.pack("<IIQQQQQQ", 1, 7, data_at, paddr, paddr, len(body), len(body), 0x1000)
    if notes:
        phdrs += struct.pack("<IIQQQQQQ", 4, 4, data_at + len(body), 0, 0, len(notes),
                             len(notes), 4)
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    header = struct.pack("<16sHHIQQQIHHHHHH", ident, 2, 62, 1, entry, 64, 0, 0, 64, 56,
                         phnum, 64, 0, 0)
    return header + phdrs + body + notes


@pytest.fixture
def mem():
    with GuestMemory(MemoryLayout(64 * MIB)) as m:
        yield m


def write(tmp_path, data, name="kernel"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_detect_format():
    assert detect_format(bzimage()) == "bzimage"
    assert detect_format(elf()) == "elf"
    assert detect_format(b"MZ" + bytes(1000)) is None
    assert detect_format(b"") is None


def test_bzimage_boots_linux64(tmp_path, mem):
    image = load_kernel(write(tmp_path, bzimage()), mem, cmdline=b"console=ttyS0")
    assert isinstance(image, BootImage)
    assert (image.format, image.protocol) == ("bzimage", "linux64")
    assert image.entry == MIB + 0x200
    assert mem.read(image.entry, 2) == b"\xfa\xf4"
    assert image.setup_header is not None and image.setup_header[0x11:0x15] == b"HdrS"
    assert image.bzimage is not None and image.bzimage.load_addr == MIB
    assert (image.low, image.high) == (MIB, MIB + 0x10000)
    assert image.cmdline_max == 255 and image.initrd is None


def test_bzimage_with_initrd(tmp_path, mem):
    rd = write(tmp_path, b"\x07" * 10000, "initrd")
    image = load_kernel(write(tmp_path, bzimage(initrd_addr_max=32 * MIB - 1)), mem,
                        cmdline=b"", initrd=rd)
    gpa, size = image.initrd
    assert size == 10000 and gpa % 4096 == 0
    assert image.high <= gpa and gpa + size <= 32 * MIB
    assert mem.read(gpa, size) == b"\x07" * 10000


def test_bzimage_cmdline_limit_checked_before_loading(tmp_path, mem):
    with pytest.raises(ConfigError, match="command line too long: 256 bytes, this kernel "
                                          "accepts at most 255"):
        load_kernel(write(tmp_path, bzimage()), mem, cmdline=b"x" * 256)
    assert mem.read(MIB, 16) == bytes(16)


def test_bzimage_limit_capped_by_pyvisor_buffer(tmp_path, mem):
    image = load_kernel(write(tmp_path, bzimage(cmdline_size=0xFFFFF)), mem)
    assert image.cmdline_max == 4095


def test_elf_defaults_to_the_64bit_entry_even_with_a_pvh_note(tmp_path, mem):
    image = load_kernel(write(tmp_path, elf(entry=0x100000, pvh_entry=0x100001)), mem)
    assert (image.format, image.protocol, image.entry) == ("elf", "linux64", 0x100000)
    assert image.setup_header is None and image.bzimage is None
    assert (image.low, image.high) == (0x100000, 0x100040)


def test_elf_pvh_on_request(tmp_path, mem):
    rd = write(tmp_path, b"rd" * 100, "initrd")
    image = load_kernel(write(tmp_path, elf(pvh_entry=0x100001)), mem, initrd=rd,
                        boot_protocol="pvh")
    assert (image.protocol, image.entry) == ("pvh", 0x100001)
    assert image.initrd[1] == 200 and image.initrd[0] + 200 <= 0x80000000


def test_pvh_needs_the_note(tmp_path, mem):
    with pytest.raises(KernelError, match="no ne|has none"):
        load_kernel(write(tmp_path, elf()), mem, boot_protocol="pvh")


def test_pvh_refuses_a_bzimage(tmp_path, mem):
    with pytest.raises(KernelError, match="PVH boot needs an ELF"):
        load_kernel(write(tmp_path, bzimage()), mem, boot_protocol="pvh")


def test_bzimage_forced_linux64(tmp_path, mem):
    image = load_kernel(write(tmp_path, bzimage()), mem, boot_protocol="linux64")
    assert image.protocol == "linux64"


def test_unknown_protocol(tmp_path, mem):
    with pytest.raises(ConfigError, match="unknown boot protocol 'floppy'"):
        load_kernel(write(tmp_path, elf()), mem, boot_protocol="floppy")


@pytest.mark.parametrize("data", [b"", b"#!/bin/sh\necho hi\n", bytes(8192)])
def test_not_a_kernel(tmp_path, mem, data):
    path = write(tmp_path, data)
    with pytest.raises(KernelError) as info:
        load_kernel(path, mem)
    assert str(info.value) == (f"kernel {str(path)!r}: not a bzImage or ELF kernel"
                               + (" (the file is empty)" if not data else ""))


def test_missing_kernel(tmp_path, mem):
    with pytest.raises(KernelError, match="No such file"):
        load_kernel(tmp_path / "nope", mem)


def test_elf_errors_come_from_the_elf_loader(tmp_path, mem):
    with pytest.raises(KernelError, match="not a 64-bit ELF"):
        load_kernel(write(tmp_path, b"\x7fELF\x01" + bytes(100)), mem)
