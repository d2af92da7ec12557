"""Multiboot 1 and 2: the header (and its tags), the a.out kludge or ELF32/ELF64 loading,
relocation, the modules after the kernel and the boot information, through load_kernel
with boot protocol "multiboot" and write_boot_info.

The input is a prefix (the module count, 0-2, and the first module's size) and then the
kernel file. Invariants: refusals are KernelError or ConfigError; the loaded kernel lies
in RAM between 1 MiB and 4 GiB with its entry inside it; modules are page-aligned, above
the kernel, in order and hold their files' bytes; the boot information is written after
them and starts as its specification says (MB1 flags, MB2 total_size)."""
from __future__ import annotations

import struct

from pyvisor.errors import ConfigError, KernelError
from pyvisor.loader.kernel import load_kernel
from pyvisor.loader.multiboot import write_boot_info

from ..devices import InvariantError
from ..guest import guest_memory
from ..memfile import MemFile
from ..stream import Reader

ERRORS = (KernelError, ConfigError)
PAGE = 4096
RSDP = bytes(36)


def make():
    mem = guest_memory()
    kernel = MemFile("fuzz-multiboot")
    modules = [MemFile("fuzz-module-1"), MemFile("fuzz-module-2")]

    def run(data: bytes) -> None:
        r = Reader(data)
        count = r.u8() % 3
        first = r.u16()
        kernel.set(r.rest())
        contents = [b"m" * first, b"second module"][:count]
        for f, content in zip(modules, contents):
            f.set(content)
        spec = ",".join(f"{f.path} arg{i}" for i, f in enumerate(modules[:count])) or None
        image = load_kernel(kernel.path, mem, boot_protocol="multiboot", initrd=spec)
        mb = image.multiboot
        if not (0x100000 <= mb.low < mb.high <= 1 << 32 and mem.contains(mb.low, mb.high - mb.low)):
            raise InvariantError(f"kernel {mb.low:#x}-{mb.high:#x} outside RAM or under 1 MiB")
        if not mb.low <= mb.entry < mb.high:
            raise InvariantError(f"entry {mb.entry:#x} outside the kernel")
        floor = mb.high
        for m, content in zip(mb.modules, contents):
            if m.gpa % PAGE or m.gpa < floor or mem.read(m.gpa, m.size) != content:
                raise InvariantError(f"module at {m.gpa:#x} misplaced or not copied")
            floor = m.end
        if len(mb.modules) != count or mb.info_addr < floor or mb.info_addr % PAGE:
            raise InvariantError("modules or boot information misplaced")
        at = write_boot_info(mem, mb, b"fuzz cmdline", mem.layout.e820(), RSDP)
        head, second = struct.unpack("<II", mem.read(at, 8))
        if mb.version == 1 and head != 0x24D or mb.version == 2 and second != 0:
            raise InvariantError(f"boot information header {head:#x} {second:#x}")
    return run


def _mb1(flags: int, extra: bytes = b"") -> bytes:
    return struct.pack("<III", 0x1BADB002, flags, -(0x1BADB002 + flags) & 0xFFFFFFFF) + extra


def _mb2(*tags: bytes) -> bytes:
    body = b"".join(tags) + struct.pack("<HHI", 0, 0, 8)
    length = 16 + len(body)
    return struct.pack("<IIII", 0xE85250D6, 0, length,
                       -(0xE85250D6 + length) & 0xFFFFFFFF) + body


def _elf32(text: bytes, memsz: int) -> bytes:
    phdr = struct.pack("<IIIIIIII", 1, 0x1000, 0x100000, 0x100000, len(text), memsz, 7, 0x1000)
    ehdr = struct.pack("<16sHHIIIIIHHHHHH", b"\x7fELF\x01\x01\x01".ljust(16, b"\0"), 2, 3, 1,
                       0x100000, 52, 0, 0, 52, 32, 1, 40, 0, 0)
    return (ehdr + phdr).ljust(0x1000, b"\0") + text


def seeds() -> list[bytes]:
    aout = _mb1(0x10003, struct.pack("<IIIII", 0x100000, 0x100000, 0, 0x104000, 0x100020))
    reloc = struct.pack("<HHIIIII", 10, 0, 24, 0x100000, 0x1000000, 0x200000, 2)
    address = struct.pack("<HHIIIII", 2, 0, 24, 0x100000, 0x100000, 0, 0x102000)
    entry = struct.pack("<HHII", 3, 0, 12, 0x100040) + bytes(4)
    return [
        b"\x02\x10\x00" + aout.ljust(0x100, b"\x90"),
        b"\x01\x00\x01" + _elf32(_mb1(0x3) + b"\xf4" * 64, 0x3000),
        b"\x00\x00\x00" + _mb2(address, entry).ljust(0x100, b"\x90"),
        b"\x02\x00\x20" + _mb2(address, entry, reloc).ljust(0x100, b"\x90"),
    ]
