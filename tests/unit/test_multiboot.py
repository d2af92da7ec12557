"""Multiboot 1 (specification 0.6.96): the header, the a.out kludge and ELF32/ELF64
loading, module lists and the multiboot_info layout; offsets and magic numbers are the
specification's, written out here rather than taken from the code under test."""
import struct

import pytest

from pyvisor.errors import KernelError
from pyvisor.loader.kernel import load_kernel
from pyvisor.loader.multiboot1 import build_info, find_header, kernel_image, parse_header
from pyvisor.loader.multiboot_image import Module, load_image, parse_modules
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import MemoryLayout

MIB = 1 << 20


def fail(message):
    raise KernelError(message)


def header(flags=0x3, addresses=None, checksum=None):
    """A Multiboot 1 header: magic, flags, checksum (+ the five address fields)."""
    if checksum is None:
        checksum = -(0x1BADB002 + flags) & 0xFFFFFFFF
    data = struct.pack("<III", 0x1BADB002, flags, checksum)
    return data + (struct.pack("<IIIII", *addresses) if addresses else b"")


def aout(load_end=0x100100, bss_end=0x102000, entry=0x100080, header_addr=0x100040,
         load_addr=0x100000, size=0x100):
    """A flat image loaded at 1 MiB with its header at file offset 0x40."""
    body = bytearray(b"\x90" * size)
    h = header(0x10003, (header_addr, load_addr, load_end, bss_end, entry))
    body[0x40:0x40 + len(h)] = h
    return bytes(body)


def elf32(paddr=0x100000, vaddr=0xC0100000, entry=0xC0100010, body=b"\xfa\xf4" * 32,
          memsz=0x3000, flags=0x3):
    """An ELF32 i386 ET_EXEC with one PT_LOAD (the Multiboot header at its start)."""
    text = header(flags) + body
    phdr = struct.pack("<IIIIIIII", 1, 0x1000, vaddr, paddr, len(text), memsz, 7, 0x1000)
    ident = b"\x7fELF\x01\x01\x01" + bytes(9)
    ehdr = struct.pack("<16sHHIIIIIHHHHHH", ident, 2, 3, 1, entry, 52, 0, 0, 52, 32, 1,
                       40, 0, 0)
    return (ehdr + phdr).ljust(0x1000, b"\0") + text


@pytest.fixture
def mem():
    with GuestMemory(MemoryLayout(64 * MIB)) as m:
        m.fill(MIB, 2 * MIB, 0xA5)        # so a missing BSS clear shows
        yield m


def test_header_search_is_4_aligned_in_the_first_8_kib():
    assert find_header(bytes(8184) + header()) == 8184
    assert find_header(bytes(8192) + header()) is None
    assert find_header(bytes(6) + header()) is None


def test_checksum_is_checked():
    with pytest.raises(KernelError, match="bad Multiboot header checksum"):
        parse_header(header(checksum=5), 0, fail)


def test_unknown_requirements_are_refused_and_known_ones_accepted():
    with pytest.raises(KernelError, match=r"requires features .*0x8\)"):
        parse_header(header(flags=0x8), 0, fail)
    assert parse_header(header(flags=0x7), 0, fail).addresses is None   # page, mem, video
    assert parse_header(header(flags=0x1 << 20), 0, fail).flags == 1 << 20  # optional bits


def test_aout_kludge_loads_the_file_and_zeroes_the_bss(mem):
    data = aout()
    image = kernel_image(data, parse_header(data, 0x40, fail), fail)
    load_image(image, data, mem, fail)
    assert image.entry == 0x100080
    assert mem.read(0x100000, 0x100) == data
    assert mem.read(0x100100, 0x1F00) == bytes(0x1F00)
    assert mem.read(0x102000, 16) == b"\xa5" * 16


def test_aout_load_end_zero_means_the_whole_file_and_bss_zero_none():
    data = aout(load_end=0, bss_end=0)
    (seg,) = kernel_image(data, parse_header(data, 0x40, fail), fail).segments
    assert (seg.paddr, seg.offset, seg.filesz, seg.memsz) == (0x100000, 0, 0x100, 0x100)


@pytest.mark.parametrize("fields, message", [
    (dict(header_addr=0x100040, load_addr=0x100100), "is above header_addr"),
    (dict(header_addr=0x100080), "before the start of the file"),
    (dict(load_end=0x100200), "truncated"),
    (dict(bss_end=0x100080), "bss_end_addr"),
    (dict(entry=0x103000), "entry_addr"),
])
def test_aout_fields_are_checked(fields, message):
    data = aout(**fields)
    with pytest.raises(KernelError, match=message):
        kernel_image(data, parse_header(data, 0x40, fail), fail)


def test_truncated_header():
    with pytest.raises(KernelError, match="needs the address fields"):
        parse_header(header(0x10003)[:12] + bytes(8), 0, fail)


def test_elf32_loads_at_paddr_with_the_entry_translated(mem):
    data = elf32()
    image = kernel_image(data, parse_header(data, find_header(data), fail), fail)
    load_image(image, data, mem, fail)
    assert image.entry == 0x100010
    assert mem.read(0x100000, 12) == header()
    assert mem.read(0x100000 + len(data) - 0x1000, 0x100) == bytes(0x100)   # BSS


@pytest.mark.parametrize("paddr, message", [(0x80000, "over the boot structures"),
                                            (64 * MIB - 0x1000, "outside guest RAM")])
def test_segments_outside_ram_or_over_the_boot_structures(mem, paddr, message):
    data = elf32(paddr=paddr, vaddr=paddr, entry=paddr)
    image = kernel_image(data, parse_header(data, find_header(data), fail), fail)
    with pytest.raises(KernelError, match=message):
        load_image(image, data, mem, fail)
    assert mem.read(MIB, 4) == b"\xa5" * 4


def test_module_list_as_qemu_reads_it():
    assert parse_modules("a.bin x y,b") == [("a.bin", "a.bin x y"), ("b", "b")]
    assert parse_modules("a x=1,,2,b,,c") == [("a", "a x=1,2"), ("b,c", "b,c")]
    with pytest.raises(KernelError, match="empty module name"):
        parse_modules("a, ,b")


def test_info_layout():
    e820 = MemoryLayout(64 * MIB).e820()
    modules = [Module(0x200000, 0x10, b"m1 arg"), Module(0x201000, 5, b"m2")]
    base = 0x300000
    info = build_info(base, b"kernel a=1", modules, e820, b"pyvisor")
    u32 = lambda off: struct.unpack_from("<I", info, off)[0]

    def string(addr):
        at = addr - base
        return info[at:info.index(b"\0", at)]

    # flags: mem (0), cmdline (2), mods (3), mmap (6), boot_loader_name (9)
    assert u32(0) == 0x24D
    assert (u32(4), u32(8)) == (639, 63 * 1024)
    assert string(u32(16)) == b"kernel a=1"
    assert u32(20) == 2
    mods = u32(24) - base
    assert [string(struct.unpack_from("<I", info, mods + 16 * i + 8)[0]) for i in range(2)] \
        == [b"m1 arg", b"m2"]
    assert struct.unpack_from("<II", info, mods) == (0x200000, 0x200010)
    assert struct.unpack_from("<II", info, mods + 16) == (0x201000, 0x201005)
    length, at = u32(44), u32(48) - base
    entries, off = [], 0
    while off < length:
        size, addr, n, type_ = struct.unpack_from("<IQQI", info, at + off)
        entries.append((addr, n, type_))
        off += size + 4
    assert entries == [(e.addr, e.size, e.type) for e in e820]
    assert string(u32(64)) == b"pyvisor"


def test_auto_picks_multiboot_and_force_needs_a_header(tmp_path, mem):
    path = tmp_path / "k.elf"
    path.write_bytes(elf32())
    image = load_kernel(path, mem, boot_protocol="auto", initrd=None)
    assert (image.protocol, image.entry) == ("multiboot", 0x100010)
    path.write_bytes(elf32()[:0x1000] + b"\x90" * 64)
    with pytest.raises(KernelError, match="no Multiboot header"):
        load_kernel(path, mem, boot_protocol="multiboot")


def test_modules_follow_the_kernel_page_aligned(tmp_path, mem):
    kernel, one, two = tmp_path / "k.elf", tmp_path / "one", tmp_path / "two"
    kernel.write_bytes(elf32())
    one.write_bytes(b"x" * 5000)
    two.write_bytes(b"second")
    image = load_kernel(kernel, mem, initrd=f"{one} --flag,{two}")
    first, second = image.multiboot.modules
    assert (first.gpa, first.size, first.cmdline) == (0x103000, 5000, f"{one} --flag".encode())
    assert (second.gpa, second.size) == (0x105000, 6)
    assert mem.read(second.gpa, 6) == b"second"
    assert image.multiboot.info_addr == 0x106000


def test_a_bzimage_is_never_multiboot(tmp_path, mem):
    """A Linux setup header wins: auto boots it as Linux, --boot multiboot refuses it."""
    data = bytearray(0x1000)
    data[0x1FE:0x200] = b"\x55\xaa"                # boot_flag
    data[0x202:0x206] = b"HdrS"
    data[0x400:0x400 + 12] = header()              # a Multiboot header too
    path = tmp_path / "bz"
    path.write_bytes(bytes(data))
    with pytest.raises(KernelError, match="Multiboot needs a Multiboot kernel, not a bzImage"):
        load_kernel(path, mem, boot_protocol="multiboot")
