"""What Multiboot 1 and 2 share below their headers: where the kernel's bytes come from
(ELF32/ELF64 program headers, or the header's own address fields), copying them into guest
RAM, and the modules placed after the kernel.

Both specifications load a kernel in 32-bit physical memory, so every range must lie in
guest RAM between 1 MiB (below it live pyvisor's boot structures, see boot_layout.py) and
4 GiB. Every check runs before the first byte is written.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable

from pyvisor._native import lib

from pyvisor.errors import KernelError
from pyvisor.loader.elf import EM_X86_64, ET_EXEC, PT_LOAD, LoadSegment
from pyvisor.loader.image_file import read_image
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import E820Entry
from pyvisor.value import Value
from pyvisor.x86.boot_layout import KERNEL_MIN_ADDR

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    Fail = Callable[[str], NoReturn]

FOUR_GIB = 1 << 32
PAGE = 4096
EM_386 = 3

# e_type, e_machine, e_version, e_entry, e_phoff, (e_shoff, e_flags, e_ehsize), e_phentsize,
# e_phnum: the fields after e_ident in each class.
_EHDR = {1: struct.Struct("<HHIIIIIHHH"), 2: struct.Struct("<HHIQQQIHHH")}
# (p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz) picked out of each class's layout
_PHDR = {1: (struct.Struct("<IIIIIIII"), (0, 1, 2, 3, 4, 5)),
         2: (struct.Struct("<IIQQQQQQ"), (0, 2, 3, 4, 5, 6))}


def find_magic(data: bytes, magic: int, search_limit: int, align: int) -> int | None:
    """The file offset of a header's 32-bit magic within the first search_limit bytes, at
    an offset aligned to align (both Multiboot specifications say where to look), or None."""
    wanted = magic.to_bytes(4, "little")
    end = min(len(data), search_limit)
    offset = data.find(wanted, 0, end)     # bytes.find: every ELF boot searches 40 KiB
    while offset % align and offset != -1:
        offset = data.find(wanted, offset + 1, end)
    return None if offset == -1 else offset


def page_up(addr: int) -> int:
    return -(-addr // PAGE) * PAGE


class KernelImage(Value):
    """A Multiboot kernel's load segments and physical entry point, not yet in memory."""

    __slots__ = ("segments", "entry")

    def __init__(self, segments: tuple[LoadSegment, ...], entry: int) -> None:
        self.segments, self.entry = segments, entry

    @property
    def low(self) -> int:
        return min(s.paddr for s in self.segments)

    @property
    def high(self) -> int:
        return max(s.end for s in self.segments)

    def moved(self, delta: int) -> "KernelImage":
        """The same image loaded ``delta`` bytes higher (a relocatable Multiboot 2 kernel)."""
        return KernelImage(tuple(LoadSegment(s.paddr + delta, s.offset, s.filesz, s.memsz)
                                 for s in self.segments), self.entry + delta)


def elf_image(data: bytes, fail: Fail) -> KernelImage:
    """The PT_LOAD segments (at p_paddr) and entry of an ELF32 i386 or ELF64 x86-64 executable.

    e_entry is a virtual address; inside a segment's virtual range it is translated to
    the physical one, as GRUB does for kernels linked above their load address."""
    if data[:4] != b"\x7fELF":
        fail("not an ELF file and no a.out kludge address fields in the Multiboot header")
    cls = data[4]
    if cls not in _EHDR or data[5] != 1:
        fail("not a little-endian ELF32 or ELF64 file")
    ehdr = _EHDR[cls]
    if len(data) < 16 + ehdr.size:
        fail(f"truncated: the ELF header needs {16 + ehdr.size} bytes but the file has "
             f"{len(data)}")
    e_type, machine, _, entry, phoff, _, _, _, phentsize, phnum = ehdr.unpack_from(data, 16)
    if (cls, machine) not in ((1, EM_386), (2, EM_X86_64)):
        fail(f"an ELF{32 * cls} file for machine {machine} (expected i386 or x86-64)")
    if e_type != ET_EXEC:
        fail(f"not an executable ELF file (e_type {e_type}, expected ET_EXEC)")
    phdr, picks = _PHDR[cls]
    if phnum and phentsize != phdr.size:
        fail(f"unexpected program header size {phentsize} (expected {phdr.size})")
    if phoff + phnum * phdr.size > len(data):
        fail(f"truncated: the program headers need bytes up to {phoff + phnum * phdr.size} "
             f"but the file has {len(data)}")
    segments, physical_entry = [], None
    for i in range(phnum):
        fields = phdr.unpack_from(data, phoff + i * phdr.size)
        p_type, offset, vaddr, paddr, filesz, memsz = (fields[k] for k in picks)
        if p_type != PT_LOAD or memsz == 0 and filesz == 0:
            continue
        if offset + filesz > len(data):
            fail(f"truncated: segment {i} needs bytes up to {offset + filesz} but the file "
                 f"has {len(data)}")
        if filesz > memsz:
            fail(f"segment {i} has more file bytes ({filesz}) than memory bytes ({memsz})")
        if vaddr <= entry < vaddr + memsz:
            physical_entry = entry - vaddr + paddr
        segments.append(LoadSegment(paddr, offset, filesz, memsz))
    if not segments:
        fail("no loadable (PT_LOAD) segments")
    return KernelImage(tuple(segments), entry if physical_entry is None else physical_entry)


def address_image(data: bytes, header_offset: int, header_addr: int, load_addr: int,
                  load_end_addr: int, bss_end_addr: int, entry: int, fail: Fail) -> KernelImage:
    """The kernel as the header's address fields describe it (Multiboot 1's a.out kludge,
    Multiboot 2's address tag): the file from ``header_offset - (header_addr - load_addr)``
    up to ``load_end_addr`` (0: the end of the file), then zeros up to ``bss_end_addr``
    (0: no BSS)."""
    if load_addr > header_addr:
        fail(f"load_addr {load_addr:#x} is above header_addr {header_addr:#x}")
    if header_addr - load_addr > header_offset:
        fail(f"header_addr {header_addr:#x} - load_addr {load_addr:#x} reaches before the "
             f"start of the file (the header is at offset {header_offset:#x})")
    offset = header_offset - (header_addr - load_addr)
    filesz = len(data) - offset if load_end_addr == 0 else load_end_addr - load_addr
    if filesz < 0:
        fail(f"load_end_addr {load_end_addr:#x} is below load_addr {load_addr:#x}")
    if offset + filesz > len(data):
        fail(f"truncated: load_end_addr {load_end_addr:#x} needs {filesz} bytes from file "
             f"offset {offset:#x} but the file has {len(data)}")
    end = load_addr + filesz
    if bss_end_addr and bss_end_addr < end:
        fail(f"bss_end_addr {bss_end_addr:#x} is below the end of the loaded text {end:#x}")
    memsz = (bss_end_addr or end) - load_addr
    if not load_addr <= entry < load_addr + memsz:
        fail(f"entry_addr {entry:#x} is outside the kernel {load_addr:#x}-"
             f"{load_addr + memsz:#x}")
    return KernelImage((LoadSegment(load_addr, offset, filesz, memsz),), entry)


def low_ram_end(mem: GuestMemory) -> int:
    """The end of the RAM a 32-bit kernel can use contiguously from 1 MiB."""
    return min(mem.layout.regions[0].end, FOUR_GIB)


def check_fits(image: KernelImage, mem: GuestMemory, fail: Fail) -> None:
    """Every segment inside guest RAM, above the boot structures and below 4 GiB, with no
    two overlapping."""
    ordered = sorted(image.segments, key=lambda s: s.paddr)
    for seg in ordered:
        if seg.paddr < KERNEL_MIN_ADDR:
            fail(f"loads at {seg.paddr:#x}, over the boot structures below 1 MiB")
        if seg.end > low_ram_end(mem) or not mem.contains(seg.paddr, seg.memsz):
            fail(f"loads at {seg.paddr:#x}-{seg.end:#x}, outside guest RAM below "
                 f"{low_ram_end(mem):#x}")
    for a, b in zip(ordered, ordered[1:]):
        if b.paddr < a.end:
            fail(f"two segments overlap at guest-physical {b.paddr:#x}")
    if not any(s.paddr <= image.entry < s.end for s in image.segments):
        fail(f"entry point {image.entry:#x} is not inside the loaded kernel")


def load_image(image: KernelImage, data: bytes, mem: GuestMemory, fail: Fail) -> None:
    """Check the image (check_fits), then copy its bytes and zero its BSS."""
    check_fits(image, mem, fail)
    view = memoryview(data)
    for seg in image.segments:
        mem.write(seg.paddr, view[seg.offset:seg.offset + seg.filesz])
        mem.fill(seg.paddr + seg.filesz, seg.memsz - seg.filesz)


class Module(Value):
    """A boot module in guest RAM: [gpa, gpa + size), with its command line (QEMU's: the
    whole "FILE ARGS" text the user wrote)."""

    __slots__ = ("gpa", "size", "cmdline")

    def __init__(self, gpa: int, size: int, cmdline: bytes) -> None:
        self.gpa, self.size, self.cmdline = gpa, size, cmdline

    @property
    def end(self) -> int:
        return self.gpa + self.size


def parse_modules(text: str) -> list[tuple[str, str]]:
    """``--initrd "mod1 arg,mod2"`` as QEMU's -initrd reads it for Multiboot: modules split
    at commas (",," is a comma within one), each a file name, then its arguments after the
    first space. Returns (path, command line) pairs; the command line is the whole entry."""
    entries = [entry.replace("\0", ",").strip()
               for entry in text.replace(",,", "\0").split(",")]
    if not all(entries):
        raise KernelError(f"--initrd {text!r}: an empty module name in the list")
    return [(entry.split(" ", 1)[0], entry) for entry in entries]


def place_modules(mem: GuestMemory, text: str | None, floor: int) -> list[Module]:
    """Read each module of ``text`` (parse_modules) into guest RAM, page-aligned one after
    the other from ``floor`` up, below 4 GiB."""
    if text is None:
        return []
    limit = low_ram_end(mem)
    modules, at = [], page_up(floor)
    for path, cmdline in parse_modules(text):
        what = f"module {path!r}"
        data = read_image(path, what, mem.layout.ram_size)
        if at + len(data) > limit:
            raise KernelError(f"{what} does not fit: {len(data)} bytes at {at:#x}, but RAM "
                              f"below 4 GiB ends at {limit:#x}")
        mem.write(at, data)
        modules.append(Module(at, len(data), os.fsencode(cmdline)))
        at = page_up(at + len(data))
    return modules


def write_info(mem: GuestMemory, gpa: int, info: bytes) -> None:
    """Write a boot information structure at ``gpa``, refusing one that leaves 32-bit RAM."""
    if gpa + len(info) > low_ram_end(mem):
        raise KernelError(f"the Multiboot information ({len(info)} bytes at {gpa:#x}) does "
                          f"not fit in RAM below {low_ram_end(mem):#x}")
    mem.write(gpa, info)


def memory_kib(e820: Iterable[E820Entry]) -> tuple[int, int]:
    """(mem_lower, mem_upper) in KiB: the RAM from 0 and the RAM from 1 MiB up to its first
    hole, as both specifications define them, read off the e820 map."""
    lower = upper = 0
    for e in e820:
        if e.type == lib.E820_RAM and e.addr == 0:
            lower = e.size // 1024
        if e.type == lib.E820_RAM and e.addr == KERNEL_MIN_ADDR:
            upper = min(e.size, FOUR_GIB - KERNEL_MIN_ADDR) // 1024
    return lower, upper
