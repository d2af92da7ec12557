"""The ELF64 kernel loader: the file's header, program headers, PT_LOAD placement (file
bytes and zeroed BSS) and PT_NOTE parsing, into guest RAM.

Invariants: refusals are KernelError only; a loaded kernel's segments lie in guest RAM at
or above 1 MiB with their file bytes copied and their BSS zero, and the entry point is
inside one of them."""
from __future__ import annotations

import struct

from pyvisor.errors import KernelError
from pyvisor.loader.elf import load_elf, parse_elf

from ..devices import InvariantError
from ..guest import guest_memory
from ..memfile import MemFile

ERRORS = (KernelError,)
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
PT_LOAD, PT_NOTE = 1, 4
SAMPLE = 64        # bytes compared at each end of a segment's file part and BSS


def elf_file(segments: list[tuple[int, int, bytes, int]], entry: int) -> bytes:
    """An ELF64 x86-64 executable: (p_type, paddr, file bytes, memsz) per program header,
    the bytes laid out after the headers."""
    offset = EHDR.size + PHDR.size * len(segments)
    phdrs, body = b"", b""
    for p_type, paddr, data, memsz in segments:
        phdrs += PHDR.pack(p_type, 7, offset + len(body), paddr, paddr, len(data), memsz, 16)
        body += data
    ident = b"\x7fELF\x02\x01\x01".ljust(16, b"\0")
    header = EHDR.pack(ident, 2, 62, 1, entry, EHDR.size, 0, 0, EHDR.size, PHDR.size,
                       len(segments), 0, 0, 0)
    return header + phdrs + body


def xen_pvh_note(entry: int, size: int = 4) -> bytes:
    """A PT_NOTE body with XEN_ELFNOTE_PHYS32_ENTRY."""
    return struct.pack("<III", 4, size, 18) + b"Xen\0" + entry.to_bytes(size, "little")


def check_loaded(mem, data: bytes, loaded_low: int, loaded_high: int, entry: int) -> None:
    """The segments parse_elf accepted are where load_elf says, with their bytes."""
    image = parse_elf(data, "fuzz")
    for seg in image.segments:
        if seg.paddr < 0x100000 or not mem.contains(seg.paddr, seg.memsz):
            raise InvariantError(f"segment {seg.paddr:#x}+{seg.memsz:#x} loaded outside RAM "
                                 f"or under 1 MiB")
        for at in (0, max(seg.filesz - SAMPLE, 0)):
            n = min(SAMPLE, seg.filesz - at)
            if mem.read(seg.paddr + at, n) != data[seg.offset + at:seg.offset + at + n]:
                raise InvariantError(f"segment {seg.paddr:#x}: file bytes not copied")
        bss = seg.memsz - seg.filesz
        for at in (seg.filesz, seg.memsz - min(bss, SAMPLE)):
            n = min(SAMPLE, bss)
            if n and mem.read(seg.paddr + at, n) != bytes(n):
                raise InvariantError(f"segment {seg.paddr:#x}: BSS at +{at:#x} not zero")
    if not any(s.paddr <= entry < s.end for s in image.segments):
        raise InvariantError(f"entry {entry:#x} outside the loaded segments")
    if loaded_low != min(s.paddr for s in image.segments) or \
            loaded_high != max(s.end for s in image.segments):
        raise InvariantError("the loaded span does not match the segments")


def make():
    mem = guest_memory()
    kernel = MemFile("fuzz-kernel")

    def run(data: bytes) -> None:
        kernel.set(data)
        mem.write(0x100000, b"\xa5" * 0x1000)      # so a missing BSS fill shows
        loaded = load_elf(kernel.path, mem)
        check_loaded(mem, data, loaded.low, loaded.high,
                     loaded.pvh_entry if loaded.pvh_entry is not None else loaded.entry)
    return run


def seeds() -> list[bytes]:
    code = bytes(range(256))
    return [
        elf_file([(PT_LOAD, 0x100000, code, 0x2000)], 0x100000),
        elf_file([(PT_LOAD, 0x100000, code, 256), (PT_LOAD, 0x200000, code[:16], 0x1000)],
                 0x200008),
        elf_file([(PT_LOAD, 0x100000, code, 256), (PT_NOTE, 0, xen_pvh_note(0x100010), 0)],
                 0x100000),
        # issue 8: a BSS as large as most of guest RAM, from a file of a few hundred bytes
        elf_file([(PT_LOAD, 0x100000, code, 200 << 20)], 0x100000),
    ]
