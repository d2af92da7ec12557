"""ELF64 x86-64 kernel loading: PT_LOAD segments go to their physical addresses (p_paddr).

Every check runs before the first byte is written, and each failure is one KernelError line
naming the file, since a bad kernel path or image is the most common user mistake.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Callable

from pyvisor.errors import KernelError
from pyvisor.loader.image_file import read_image
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import MMIO_HOLE_END, MMIO_HOLE_START
from pyvisor.units import format_size
from pyvisor.value import Value
from pyvisor.x86.boot_layout import KERNEL_MIN_ADDR

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_NHDR = struct.Struct("<III")

ET_EXEC = 2
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18


class LoadSegment(Value):
    """A PT_LOAD segment: ``filesz`` bytes from ``offset`` at ``paddr``, zeroed up to ``memsz``."""

    __slots__ = ("paddr", "offset", "filesz", "memsz")

    def __init__(self, paddr: int, offset: int, filesz: int, memsz: int) -> None:
        self.paddr, self.offset, self.filesz, self.memsz = paddr, offset, filesz, memsz

    @property
    def end(self) -> int:
        return self.paddr + self.memsz


class ElfImage(Value):
    """A validated kernel image, not yet placed in guest memory."""

    __slots__ = ("entry", "segments", "pvh_entry")

    def __init__(self, entry: int, segments: list[LoadSegment], pvh_entry: int | None) -> None:
        self.entry, self.segments, self.pvh_entry = entry, segments, pvh_entry


class LoadedKernel(Value):
    """Where a kernel ended up: its entry points and the guest-physical span it occupies."""

    __slots__ = ("entry", "pvh_entry", "low", "high")

    def __init__(self, entry: int, pvh_entry: int | None, low: int, high: int) -> None:
        self.entry, self.pvh_entry, self.low, self.high = entry, pvh_entry, low, high


def _pvh_entry(note: bytes, fail: Callable[[str], NoReturn]) -> int | None:
    """The Xen PVH 32-bit entry point from a PT_NOTE segment's notes, if there is one."""
    pos = 0
    while pos + _NHDR.size <= len(note):
        namesz, descsz, type_ = _NHDR.unpack_from(note, pos)
        name_at = pos + _NHDR.size
        desc_at = name_at + (namesz + 3 & ~3)
        pos = desc_at + (descsz + 3 & ~3)
        if desc_at + descsz > len(note):
            fail("truncated note in a PT_NOTE segment")
        if note[name_at:name_at + namesz] == b"Xen\0" and type_ == XEN_ELFNOTE_PHYS32_ENTRY:
            if descsz not in (4, 8):
                fail(f"the Xen PVH entry note has a {descsz}-byte value (expected 4 or 8)")
            return int.from_bytes(note[desc_at:desc_at + descsz], "little")
    return None


def parse_elf(data: bytes, name: str) -> ElfImage:
    """Validate an ELF64 x86-64 executable and describe its loadable segments."""
    def fail(message: str) -> NoReturn:
        raise KernelError(f"kernel {name!r}: {message}")

    if data[:4] != b"\x7fELF":
        fail("not an ELF file (bad magic)")
    if data[4:5] != b"\x02":
        fail("not a 64-bit ELF file")
    if data[5:6] != b"\x01":
        fail("not a little-endian ELF file")
    if len(data) < _EHDR.size:
        fail(f"truncated: the ELF header needs {_EHDR.size} bytes but the file has {len(data)}")
    (_, e_type, machine, _, entry, phoff, _, _, _,
     phentsize, phnum, _, _, _) = _EHDR.unpack_from(data)
    if machine != EM_X86_64:
        fail(f"not an x86-64 ELF file (e_machine {machine}, expected {EM_X86_64})")
    if e_type != ET_EXEC:
        fail(f"not an executable ELF file (e_type {e_type}, expected ET_EXEC)")
    if phnum and phentsize != _PHDR.size:
        fail(f"unexpected program header size {phentsize} (expected {_PHDR.size})")
    if phoff + phnum * _PHDR.size > len(data):
        fail(f"truncated: the program headers need bytes up to {phoff + phnum * _PHDR.size} "
             f"but the file has {len(data)}")

    segments: list[tuple[int, LoadSegment]] = []
    pvh_entry = None
    for i in range(phnum):
        p_type, _, offset, _, paddr, filesz, memsz, _ = _PHDR.unpack_from(
            data, phoff + i * _PHDR.size)
        if p_type not in (PT_LOAD, PT_NOTE):
            continue
        if offset + filesz > len(data):
            fail(f"truncated: segment {i} needs bytes up to {offset + filesz} "
                 f"but the file has {len(data)}")
        if p_type == PT_NOTE:
            found = _pvh_entry(data[offset:offset + filesz], fail)
            pvh_entry = pvh_entry if found is None else found
            continue
        if filesz > memsz:
            fail(f"segment {i} has more file bytes ({filesz}) than memory bytes ({memsz})")
        if memsz == 0:
            continue
        if paddr < KERNEL_MIN_ADDR:
            fail(f"segment {i} at {paddr:#x} overlaps the boot structures below 1 MiB")
        segments.append((i, LoadSegment(paddr, offset, filesz, memsz)))

    if not segments:
        fail("no loadable (PT_LOAD) segments")
    ordered = sorted(segments, key=lambda s: s[1].paddr)
    for (i, a), (j, b) in zip(ordered, ordered[1:]):
        if b.paddr < a.end:
            fail(f"segments {min(i, j)} and {max(i, j)} overlap at guest-physical {b.paddr:#x}")
    loads = [seg for _, seg in segments]

    def loaded(addr: int) -> bool:
        return any(s.paddr <= addr < s.end for s in loads)

    if pvh_entry is not None:
        if not loaded(pvh_entry):
            fail(f"PVH entry point {pvh_entry:#x} is not inside any loaded segment")
    elif not loaded(entry):
        fail(f"entry point {entry:#x} is not inside any loaded segment")
    return ElfImage(entry, loads, pvh_entry)


def load_elf(path: str | os.PathLike, mem: GuestMemory) -> LoadedKernel:
    """Read the kernel at ``path`` and load it (see load_elf_data)."""
    name = os.fspath(path)
    return load_elf_data(read_image(path, f"kernel {name!r}", mem.layout.ram_size), name, mem)


def load_elf_data(data: bytes, name: str, mem: GuestMemory) -> LoadedKernel:
    """Check that the kernel in ``data`` (a whole ELF file) fits in guest RAM, then copy it
    there."""
    image = parse_elf(data, name)
    for seg in image.segments:
        if mem.contains(seg.paddr, seg.memsz):
            continue
        if seg.end > mem.layout.top:
            raise KernelError(f"kernel {name!r}: needs guest RAM up to {seg.end:#x} but the "
                              f"guest has {format_size(mem.layout.ram_size)}")
        raise KernelError(
            f"kernel {name!r}: segment {seg.paddr:#x}-{seg.end:#x} is in the MMIO hole "
            f"{MMIO_HOLE_START:#x}-{MMIO_HOLE_END:#x}, not in guest RAM")
    view = memoryview(data)
    for seg in image.segments:
        mem.write(seg.paddr, view[seg.offset:seg.offset + seg.filesz])
        mem.fill(seg.paddr + seg.filesz, seg.memsz - seg.filesz)
    return LoadedKernel(entry=image.entry, pvh_entry=image.pvh_entry,
                        low=min(s.paddr for s in image.segments),
                        high=max(s.end for s in image.segments))
