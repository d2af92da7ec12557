"""PVH boot: an ELF with the Xen PHYS32_ENTRY note through load_kernel (boot protocol
"pvh" or "auto"), the initrd placed as high as allowed, and the hvm_start_info written
from the e820 map.

The input is a prefix (flags: PVH or auto, with or without an initrd; the initrd size;
the command line length) and then the ELF file. Invariants: refusals are KernelError or
ConfigError; a PVH entry lies inside a loaded segment; the initrd is page-aligned, in
RAM, above the kernel and below initrd_addr_max; the start info has its magic and
points at the module list when there is an initrd."""
from __future__ import annotations

import struct

from pyvisor.errors import ConfigError, KernelError
from pyvisor.loader.bzimage import DEFAULT_INITRD_ADDR_MAX
from pyvisor.loader.kernel import load_kernel
from pyvisor.x86.boot_layout import CMDLINE_ADDR, START_INFO_ADDR
from pyvisor.x86.pvh import HVM_START_MAGIC, START_INFO, build_start_info

from ..devices import InvariantError
from ..guest import GUEST_RAM, guest_memory
from ..memfile import MemFile
from ..stream import Reader
from .elf_loader import PT_LOAD, PT_NOTE, elf_file, xen_pvh_note

ERRORS = (KernelError, ConfigError)
PAGE = 4096
RSDP = 0xE0000


def _initrd_size(r: Reader) -> int:
    sel = r.u8() % 4
    if sel == 0:
        return r.u16() + 1
    if sel == 1:
        return GUEST_RAM - PAGE * (r.u16() % 4096)     # around what fits
    if sel == 2:
        return 0
    return r.u32()


def make():
    mem = guest_memory()
    kernel, initrd = MemFile("fuzz-pvh"), MemFile("fuzz-initrd")

    def run(data: bytes) -> None:
        r = Reader(data)
        flags = r.u8()
        size = _initrd_size(r)
        cmdline = b"y" * (r.u16() % 8192) + b"\0"
        kernel.set(r.rest())
        initrd.resize(size)
        image = load_kernel(kernel.path, mem, cmdline=cmdline,
                            initrd=initrd.path if flags & 1 else None,
                            boot_protocol="auto" if flags & 2 else "pvh")
        if image.initrd is not None:
            gpa, length = image.initrd
            if gpa % PAGE or length != size or gpa < image.high or \
                    gpa + length - 1 > DEFAULT_INITRD_ADDR_MAX or not mem.contains(gpa, length):
                raise InvariantError(f"initrd at {gpa:#x}+{length:#x} (kernel ends at "
                                     f"{image.high:#x})")
        if image.protocol != "pvh":
            return
        if not image.low <= image.entry < image.high:
            raise InvariantError(f"PVH entry {image.entry:#x} outside the kernel "
                                 f"{image.low:#x}-{image.high:#x}")
        build_start_info(mem, mem.layout.e820(), CMDLINE_ADDR, image.initrd, RSDP)
        magic, _, _, modules, modlist = START_INFO.unpack_from(
            mem.read(START_INFO_ADDR, START_INFO.size))[:5]
        if magic != HVM_START_MAGIC or modules != (image.initrd is not None) or \
                bool(modlist) != bool(modules):
            raise InvariantError("hvm_start_info does not describe what was loaded")
    return run


def seeds() -> list[bytes]:
    code = bytes(range(256))
    elf = elf_file([(PT_LOAD, 0x100000, code, 0x1000),
                    (PT_NOTE, 0, xen_pvh_note(0x100040), 0)], 0x100000)
    elf8 = elf_file([(PT_LOAD, 0x200000, code, 0x1000),
                     (PT_NOTE, 0, xen_pvh_note(0x200000, 8), 0)], 0x200000)
    return [
        struct.pack("<BBH", 0, 2, 16) + elf,                      # PVH, no initrd
        struct.pack("<BBHH", 1, 0, 0x1000, 16) + elf,             # PVH with an initrd
        struct.pack("<BBHH", 3, 1, 8, 16) + elf8,                 # auto, initrd near full
        struct.pack("<BBH", 0, 2, 16) + elf_file([(PT_LOAD, 0x100000, code, 256)],
                                                     0x100000),   # no note
    ]
