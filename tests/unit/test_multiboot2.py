"""Multiboot 2 (specification 2.0): the header and its tags, relocation, and the boot
information tag list, checked against the specification's numbers."""
import struct

import pytest

from pyvisor.errors import KernelError
from pyvisor.loader.multiboot2 import (Relocatable, build_info, find_header, kernel_image,
                                       parse_header, relocation)
from pyvisor.loader.multiboot_image import KernelImage, Module
from pyvisor.loader.elf import LoadSegment
from pyvisor.memory.layout import MemoryLayout

MIB = 1 << 20


def fail(message):
    raise KernelError(message)


def tag(type_, body=b"", flags=0):
    data = struct.pack("<HHI", type_, flags, 8 + len(body)) + body
    return data.ljust(-(-len(data) // 8) * 8, b"\0")


def header(*tags, arch=0, checksum=None, length=None):
    body = b"".join(tags) + tag(0)
    length = 16 + len(body) if length is None else length
    if checksum is None:
        checksum = -(0xE85250D6 + arch + length) & 0xFFFFFFFF
    return struct.pack("<IIII", 0xE85250D6, arch, length, checksum) + body


def flat(*tags, at=0x40, size=0x200):
    """A flat image for 1 MiB with the header at ``at``, loaded by address and entry tags."""
    h = header(tag(2, struct.pack("<IIII", 0x100000 + at, 0x100000, 0, 0x104000)),
               tag(3, struct.pack("<I", 0x100100)), *tags)
    data = bytearray(size)
    data[at:at + len(h)] = h
    return bytes(data)


def test_header_search_is_8_aligned_in_the_first_32_kib():
    assert find_header(bytes(32760) + header()) == 32760
    assert find_header(bytes(32768) + header()) is None
    assert find_header(bytes(4) + header()) is None


@pytest.mark.parametrize("data, message", [
    (header(checksum=1), "checksum"),
    (header(arch=4, checksum=-(0xE85250D6 + 4 + 24) & 0xFFFFFFFF), "architecture 4"),
    (header(length=200, checksum=-(0xE85250D6 + 200) & 0xFFFFFFFF), "truncated"),
    (header(tag(7)), "requires tag 7"),
    (header(tag(1, struct.pack("<II", 1, 9))), r"tag types 9\)"),
    (header(tag(2, b"\0" * 4)), "too short"),
    (header(tag(10, struct.pack("<IIII", 0x200000, 0x100000, 0x1000, 0))), "relocatable"),
    (header(tag(10, struct.pack("<IIII", 0x100000, 0x200000, 0x3000, 0))), "power of two"),
])
def test_malformed_headers(data, message):
    with pytest.raises(KernelError, match=message):
        parse_header(data, 0, fail)


def test_optional_tags_and_requests_pyvisor_cannot_meet_are_ignored():
    parsed = parse_header(header(tag(7, flags=1), tag(1, struct.pack("<I", 9), flags=1),
                                 tag(5, struct.pack("<III", 80, 25, 0)), tag(4, b"\0" * 4),
                                 tag(6)), 0, fail)
    assert parsed.addresses is None and parsed.entry is None


def test_address_and_entry_tags_load_the_flat_image():
    data = flat()
    image = kernel_image(data, parse_header(data, 0x40, fail), fail)
    (seg,) = image.segments
    assert (seg.paddr, seg.offset, seg.filesz, seg.memsz) == (0x100000, 0, 0x200, 0x4000)
    assert image.entry == 0x100100


def test_load_addr_minus_one_loads_from_the_start_of_the_file():
    h = header(tag(2, struct.pack("<IIII", 0x100040, 0xFFFFFFFF, 0, 0)),
               tag(3, struct.pack("<I", 0x100000)))
    data = bytes(0x40) + h
    (seg,) = kernel_image(data, parse_header(data, 0x40, fail), fail).segments
    assert (seg.paddr, seg.offset) == (0x100000, 0)


def test_an_address_tag_needs_an_entry_tag():
    h = header(tag(2, struct.pack("<IIII", 0x100000, 0x100000, 0, 0)))
    with pytest.raises(KernelError, match="entry address tag"):
        kernel_image(h, parse_header(h, 0, fail), fail)


IMAGE = KernelImage((LoadSegment(0x100000, 0, 0x1000, 0x3000),), 0x100010)


@pytest.mark.parametrize("reloc, delta", [
    (Relocatable(0x100000, 0x4000000, 0x1000, 0), 0),                     # stays as linked
    (Relocatable(0x200000, 0x4000000, 0x200000, 0), 0x100000),            # not allowed: lowest
    (Relocatable(0x100001, 0x4000000, 0x200000, 1), 0x100000),            # lowest aligned
    (Relocatable(0x100000, 0xFFFFFFFF, 0x200000, 2), 62 * MIB - 0x100000),  # highest in 64M
])
def test_relocation(reloc, delta):
    assert relocation(IMAGE, reloc, MIB, 64 * MIB, fail) == delta
    moved = IMAGE.moved(delta)
    assert moved.entry == 0x100010 + delta and moved.low == 0x100000 + delta


def test_relocation_with_no_room():
    with pytest.raises(KernelError, match="fits nowhere"):
        relocation(IMAGE, Relocatable(0x8000000, 0x9000000, 0x1000, 0), MIB, 64 * MIB, fail)


def test_boot_information_tags():
    e820 = MemoryLayout(64 * MIB).e820()
    rsdp = bytes(range(36))
    info = build_info(b"kernel a=1", [Module(0x200000, 0x10, b"m1 arg")], e820, b"pyvisor",
                      rsdp, 0x100000)
    total, reserved = struct.unpack_from("<II", info)
    assert (total, reserved) == (len(info), 0)
    tags, off = {}, 8
    while True:
        assert off % 8 == 0
        type_, size = struct.unpack_from("<II", info, off)
        tags[type_] = info[off + 8:off + size]
        if type_ == 0:
            assert size == 8 and off + 8 == total
            break
        off += -(-size // 8) * 8
    assert tags[1] == b"kernel a=1\0"
    assert tags[2] == b"pyvisor\0"
    assert tags[3] == struct.pack("<II", 0x200000, 0x200010) + b"m1 arg\0"
    assert tags[4] == struct.pack("<II", 639, 63 * 1024)
    entry_size, version = struct.unpack_from("<II", tags[6])
    assert (entry_size, version) == (24, 0)
    assert [struct.unpack_from("<QQI", tags[6], 8 + 24 * i) for i in range(len(e820))] == \
        [(e.addr, e.size, e.type) for e in e820]
    assert tags[14] == rsdp[:20] and tags[15] == rsdp
    assert tags[21] == struct.pack("<I", 0x100000)
