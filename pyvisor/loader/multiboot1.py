"""Multiboot 1 (the specification 0.6.96): the header a kernel carries, and the
multiboot_info structure it is handed in EBX.

The header is a 32-bit aligned magic 0x1BADB002 in the first 8 KiB, then flags and a
checksum making the three sum to zero. Flags 0-15 are requirements a boot loader must
refuse when it cannot meet them: bit 0 (modules page-aligned) and bit 1 (memory
information) pyvisor always meets; bit 2 (a video mode) has no display to honour, and as
with QEMU the kernel simply gets no framebuffer information. Bit 16 says the header's
address fields (the "a.out kludge") say where the image goes instead of its ELF headers.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from pyvisor.loader.multiboot_image import (KernelImage, Module, address_image, elf_image,
                                            find_magic, memory_kib)
from pyvisor.memory.layout import E820Entry
from pyvisor.value import Value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pyvisor.loader.multiboot_image import Fail

HEADER_MAGIC = 0x1BADB002
BOOTLOADER_MAGIC = 0x2BADB002   # EAX at entry
SEARCH_LIMIT = 8192
HEADER_ALIGN = 4

FLAG_PAGE_ALIGN = 1 << 0
FLAG_MEMORY_INFO = 1 << 1
FLAG_VIDEO_MODE = 1 << 2
FLAG_AOUT_KLUDGE = 1 << 16
KNOWN_REQUIREMENTS = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE

_HEADER = struct.Struct("<III")
_ADDRESSES = struct.Struct("<IIIII")   # header_addr, load_addr, load_end, bss_end, entry

# multiboot_info.flags bits for the fields pyvisor fills
INFO_MEMORY = 1 << 0
INFO_CMDLINE = 1 << 2
INFO_MODS = 1 << 3
INFO_MEM_MAP = 1 << 6
INFO_BOOT_LOADER_NAME = 1 << 9
INFO_SIZE = 120                        # the structure up to and including the framebuffer
_MODULE = struct.Struct("<IIII")       # mod_start, mod_end, string, reserved
_MMAP_ENTRY = struct.Struct("<IQQI")   # size (20: not counting itself), base, length, type


def find_header(data: bytes) -> int | None:
    """The file offset of the Multiboot 1 header magic, or None."""
    return find_magic(data, HEADER_MAGIC, SEARCH_LIMIT, HEADER_ALIGN)


class Header(Value):
    """addresses: with FLAG_AOUT_KLUDGE, else None."""

    __slots__ = ("offset", "flags", "addresses")

    def __init__(self, offset: int, flags: int,
                 addresses: tuple[int, int, int, int, int] | None) -> None:
        self.offset, self.flags, self.addresses = offset, flags, addresses


def parse_header(data: bytes, offset: int, fail: Fail) -> Header:
    """The header at ``offset`` (find_header), checked: checksum, known requirements, and
    the address fields present when flag 16 asks for them."""
    if offset + _HEADER.size > len(data):
        fail("truncated Multiboot header")
    magic, flags, checksum = _HEADER.unpack_from(data, offset)
    if (magic + flags + checksum) & 0xFFFFFFFF:
        fail(f"bad Multiboot header checksum {checksum:#010x} (magic + flags + checksum "
             f"must be 0 mod 2^32; flags {flags:#x})")
    unknown = flags & 0xFFFF & ~KNOWN_REQUIREMENTS
    if unknown:
        fail(f"the Multiboot header requires features pyvisor does not know "
             f"(flags {unknown:#x})")
    addresses = None
    if flags & FLAG_AOUT_KLUDGE:
        at = offset + _HEADER.size
        if at + _ADDRESSES.size > len(data):
            fail("truncated Multiboot header: flag 16 needs the address fields")
        addresses = _ADDRESSES.unpack_from(data, at)
    return Header(offset, flags, addresses)


def kernel_image(data: bytes, header: Header, fail: Fail) -> KernelImage:
    """Where the kernel goes: the address fields with flag 16, else the ELF headers."""
    if header.addresses is None:
        return elf_image(data, fail)
    header_addr, load_addr, load_end, bss_end, entry = header.addresses
    return address_image(data, header.offset, header_addr, load_addr, load_end, bss_end,
                         entry, fail)


def build_info(base: int, cmdline: bytes, modules: Sequence[Module],
               e820: Iterable[E820Entry], loader_name: bytes) -> bytes:
    """multiboot_info at ``base`` followed by what it points at: the memory map, the module
    list, then the NUL-terminated strings (command line, boot loader name, modules')."""
    entries = list(e820)
    mmap_at = base + INFO_SIZE
    mods_at = mmap_at + _MMAP_ENTRY.size * len(entries)
    strings_at = mods_at + _MODULE.size * len(modules)
    strings = bytearray()

    def string(text: bytes) -> int:
        at = strings_at + len(strings)
        strings.extend(text + b"\0")
        return at

    cmdline_at, name_at = string(cmdline), string(loader_name)
    mods = b"".join(_MODULE.pack(m.gpa, m.end, string(m.cmdline), 0) for m in modules)
    mmap = b"".join(_MMAP_ENTRY.pack(_MMAP_ENTRY.size - 4, e.addr, e.size, e.type)
                    for e in entries)
    lower, upper = memory_kib(entries)
    info = bytearray(INFO_SIZE)
    struct.pack_into("<IIIIIII", info, 0,
                     INFO_MEMORY | INFO_CMDLINE | INFO_MODS | INFO_MEM_MAP
                     | INFO_BOOT_LOADER_NAME, lower, upper, 0, cmdline_at, len(modules),
                     mods_at if modules else 0)
    struct.pack_into("<II", info, 44, len(mmap), mmap_at)
    struct.pack_into("<I", info, 64, name_at)
    return bytes(info) + mmap + mods + bytes(strings)
