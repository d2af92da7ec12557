"""Multiboot 2 (the specification 2.0): the header and its tags, and the boot information
tag list a kernel is handed in EBX.

The header is a 64-bit aligned magic 0xE85250D6 in the first 32 KiB, the architecture
(0: i386 protected mode), the header length and a checksum making the four sum to zero,
then 8-byte aligned tags up to an end tag. A tag whose ``optional`` flag is clear is a
requirement: one pyvisor cannot meet refuses the kernel, as the specification asks.
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

HEADER_MAGIC = 0xE85250D6
BOOTLOADER_MAGIC = 0x36D76289   # EAX at entry
SEARCH_LIMIT = 32768
HEADER_ALIGN = 8
ARCH_I386 = 0

# header tag types
TAG_END = 0
TAG_INFORMATION_REQUEST = 1
TAG_ADDRESS = 2
TAG_ENTRY_ADDRESS = 3
TAG_CONSOLE_FLAGS = 4
TAG_FRAMEBUFFER = 5
TAG_MODULE_ALIGN = 6
TAG_EFI_BS = 7
TAG_ENTRY_ADDRESS_EFI32 = 8
TAG_ENTRY_ADDRESS_EFI64 = 9
TAG_RELOCATABLE = 10
TAG_OPTIONAL = 1

# Tags pyvisor reads and honours. Console flags and the framebuffer ask for a display
# pyvisor does not have; like a loader without graphics, it goes on in text mode (the
# serial port) and sends no framebuffer tag. Module alignment is always met (pages).
_HONOURED = {TAG_INFORMATION_REQUEST, TAG_ADDRESS, TAG_ENTRY_ADDRESS, TAG_CONSOLE_FLAGS,
             TAG_FRAMEBUFFER, TAG_MODULE_ALIGN, TAG_RELOCATABLE}

# boot information tag types
INFO_CMDLINE = 1
INFO_BOOT_LOADER_NAME = 2
INFO_MODULE = 3
INFO_BASIC_MEMINFO = 4
INFO_MMAP = 6
INFO_ACPI_OLD = 14
INFO_ACPI_NEW = 15
INFO_LOAD_BASE_ADDR = 21
SUPPLIED = {INFO_CMDLINE, INFO_BOOT_LOADER_NAME, INFO_MODULE, INFO_BASIC_MEMINFO, INFO_MMAP,
            INFO_ACPI_OLD, INFO_ACPI_NEW, INFO_LOAD_BASE_ADDR}

_HEADER = struct.Struct("<IIII")
_TAG = struct.Struct("<HHI")
_MMAP_ENTRY = struct.Struct("<QQII")   # base_addr, length, type, reserved
RSDP_V1_SIZE = 20
RSDP_V2_SIZE = 36

PREFER_NONE, PREFER_LOW, PREFER_HIGH = 0, 1, 2


def find_header(data: bytes) -> int | None:
    """The file offset of the Multiboot 2 header magic, or None."""
    return find_magic(data, HEADER_MAGIC, SEARCH_LIMIT, HEADER_ALIGN)


class Relocatable(Value):
    __slots__ = ("min_addr", "max_addr", "align", "preference")

    def __init__(self, min_addr: int, max_addr: int, align: int, preference: int) -> None:
        self.min_addr, self.max_addr, self.align, self.preference = (min_addr, max_addr, align,
                                                                     preference)


class Header(Value):
    """addresses: header, load, load_end, bss_end (the address tag), or None."""

    __slots__ = ("offset", "addresses", "entry", "relocatable")

    def __init__(self, offset: int, addresses: tuple[int, int, int, int] | None = None,
                 entry: int | None = None, relocatable: Relocatable | None = None) -> None:
        self.offset, self.addresses, self.entry, self.relocatable = (offset, addresses, entry,
                                                                     relocatable)


def _align8(n: int) -> int:
    return n + 7 & ~7


def parse_header(data: bytes, offset: int, fail: Fail) -> Header:
    """The header at ``offset`` (find_header) and its tags, checked."""
    if offset + _HEADER.size > len(data):
        fail("truncated Multiboot 2 header")
    magic, arch, length, checksum = _HEADER.unpack_from(data, offset)
    if (magic + arch + length + checksum) & 0xFFFFFFFF:
        fail(f"bad Multiboot 2 header checksum {checksum:#010x} (magic + architecture + "
             f"header_length + checksum must be 0 mod 2^32)")
    if arch != ARCH_I386:
        fail(f"Multiboot 2 architecture {arch} (pyvisor boots 0, i386 protected mode)")
    end = offset + length
    if length < _HEADER.size + _TAG.size or end > len(data):
        fail(f"truncated Multiboot 2 header: header_length {length} at offset {offset:#x} "
             f"in a {len(data)}-byte file")
    addresses = entry = relocatable = None
    at = offset + _HEADER.size
    while True:
        if at + _TAG.size > end:
            fail("Multiboot 2 header tags run past header_length without an end tag")
        type_, flags, size = _TAG.unpack_from(data, at)
        if type_ == TAG_END:
            break
        if size < _TAG.size or at + size > end:
            fail(f"Multiboot 2 header tag {type_} at offset {at:#x} has size {size}")
        body = data[at + _TAG.size:at + size]
        optional = bool(flags & TAG_OPTIONAL)

        def need(fmt: str) -> tuple[int, ...]:
            if len(body) < struct.calcsize(fmt):
                fail(f"Multiboot 2 header tag {type_} is too short ({size} bytes)")
            return struct.unpack_from(fmt, body)

        if type_ not in _HONOURED:
            if not optional:
                fail(f"the Multiboot 2 header requires tag {type_}, which pyvisor does not "
                     f"support (EFI entry points and boot services need EFI firmware)")
        elif type_ == TAG_INFORMATION_REQUEST:
            wanted = struct.unpack_from(f"<{len(body) // 4}I", body)
            missing = sorted(set(wanted) - SUPPLIED)
            if missing and not optional:
                fail(f"the Multiboot 2 kernel requires information pyvisor does not provide "
                     f"(tag types {', '.join(map(str, missing))})")
        elif type_ == TAG_ADDRESS:
            addresses = need("<IIII")
        elif type_ == TAG_ENTRY_ADDRESS:
            entry = need("<I")[0]
        elif type_ == TAG_RELOCATABLE:
            min_addr, max_addr, align, preference = need("<IIII")
            if align & (align - 1) or min_addr > max_addr:
                fail(f"Multiboot 2 relocatable tag: min {min_addr:#x}, max {max_addr:#x}, "
                     f"align {align:#x} (alignment must be a power of two, min <= max)")
            relocatable = Relocatable(min_addr, max_addr, max(align, 1), preference)
        at += _align8(size)
    return Header(offset, addresses, entry, relocatable)


def kernel_image(data: bytes, header: Header, fail: Fail) -> KernelImage:
    """Where the kernel goes as linked: the address tag if present, else the ELF headers;
    the entry address tag, if present, overrides the ELF entry."""
    if header.addresses is not None:
        if header.entry is None:
            fail("the Multiboot 2 address tag needs an entry address tag")
        header_addr, load_addr, load_end, bss_end = header.addresses
        if load_addr == 0xFFFFFFFF:      # "load from the start of the file"
            load_addr = header_addr - header.offset
        return address_image(data, header.offset, header_addr, load_addr, load_end,
                             bss_end, header.entry, fail)
    image = elf_image(data, fail)
    return image if header.entry is None else KernelImage(image.segments, header.entry)


def relocation(image: KernelImage, reloc: Relocatable, ram_low: int, ram_end: int,
               fail: Fail) -> int:
    """How far to move a relocatable image: 0 where it was linked if that is allowed and in
    RAM (no preference), else the lowest or highest aligned place in [min_addr, max_addr]
    inside RAM from ``ram_low`` to ``ram_end``."""
    span = image.high - image.low
    lowest = max(reloc.min_addr, ram_low)
    highest = min(reloc.max_addr + 1, ram_end) - span
    low = -(-lowest // reloc.align) * reloc.align
    high = highest // reloc.align * reloc.align
    if low > high:
        fail(f"the relocatable Multiboot 2 kernel ({span} bytes) fits nowhere in "
             f"{reloc.min_addr:#x}-{reloc.max_addr:#x} inside guest RAM")
    if reloc.preference == PREFER_NONE and low <= image.low <= highest:
        return 0
    return (high if reloc.preference == PREFER_HIGH else low) - image.low


def _tag(type_: int, body: bytes) -> bytes:
    tag = _TAG.pack(type_, 0, _TAG.size + len(body)) + body
    return tag.ljust(_align8(len(tag)), b"\0")


def build_info(cmdline: bytes, modules: Sequence[Module], e820: Iterable[E820Entry],
               loader_name: bytes, rsdp: bytes, load_base: int) -> bytes:
    """The boot information: total_size and reserved, then the tags, then the end tag.
    ``rsdp`` is the ACPI RSDP's bytes (version 2: its first 20 are the version 1 RSDP);
    ``load_base`` where the image's lowest byte went (sent always, as GRUB does)."""
    entries = list(e820)
    lower, upper = memory_kib(entries)
    tags = [_tag(INFO_CMDLINE, cmdline + b"\0"),
            _tag(INFO_BOOT_LOADER_NAME, loader_name + b"\0"),
            *(_tag(INFO_MODULE, struct.pack("<II", m.gpa, m.end) + m.cmdline + b"\0")
              for m in modules),
            _tag(INFO_BASIC_MEMINFO, struct.pack("<II", lower, upper)),
            _tag(INFO_MMAP, struct.pack("<II", _MMAP_ENTRY.size, 0) + b"".join(
                _MMAP_ENTRY.pack(e.addr, e.size, e.type, 0) for e in entries)),
            _tag(INFO_ACPI_OLD, rsdp[:RSDP_V1_SIZE])]
    if len(rsdp) >= RSDP_V2_SIZE:
        tags.append(_tag(INFO_ACPI_NEW, rsdp[:RSDP_V2_SIZE]))
    tags.append(_tag(INFO_LOAD_BASE_ADDR, struct.pack("<I", load_base)))
    body = b"".join(tags) + _TAG.pack(TAG_END, 0, _TAG.size)
    return struct.pack("<II", 8 + len(body), 0) + body
