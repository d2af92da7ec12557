"""The bzImage loader through load_kernel: format detection, the setup header checks,
the command line limit, placement (preferred or aligned relocation, below 4 GiB unless
the kernel says otherwise) and the zero page built from the kernel's own header.

The input is a 3-byte prefix (command line length, initrd_addr_max override flag) and
then the file. Invariants: refusals are KernelError or ConfigError; a loaded kernel's
init_size range lies in RAM at or above 1 MiB, its protected-mode bytes are copied, the
entry is load address + 0x200 and the zero page carries the header it was given."""
from __future__ import annotations

import struct

from pyvisor.errors import ConfigError, KernelError
from pyvisor.loader.bzimage import ENTRY_64_OFFSET, LOADED_HIGH, fill_zero_page
from pyvisor.loader.kernel import load_kernel
from pyvisor.x86.boot_layout import CMDLINE_ADDR
from pyvisor.x86.bootparams import ZeroPage

from ..devices import InvariantError
from ..guest import guest_memory
from ..memfile import MemFile
from ..stream import Reader

ERRORS = (KernelError, ConfigError)
MIB = 1 << 20
SAMPLE = 64


def bzimage_file(payload: bytes, *, setup_sects: int = 1, version: int = 0x020F,
                 relocatable: int = 1, alignment: int = 2 * MIB, pref: int = MIB,
                 init_size: int | None = None, xloadflags: int = 1) -> bytes:
    """A bzImage per boot.rst: (setup_sects + 1) sectors of setup, then the payload."""
    setup = bytearray(((setup_sects or 4) + 1) * 512)
    for offset, fmt, value in ((0x1F1, "B", setup_sects), (0x1F4, "I", len(payload) // 16),
                               (0x1FE, "H", 0xAA55), (0x200, "B", 0xEB), (0x201, "B", 0x6A),
                               (0x202, "4s", b"HdrS"), (0x206, "H", version),
                               (0x211, "B", LOADED_HIGH), (0x22C, "I", 0x7FFFFFFF),
                               (0x230, "I", alignment), (0x234, "B", relocatable),
                               (0x236, "H", xloadflags), (0x238, "I", 2047),
                               (0x258, "Q", pref),
                               (0x260, "I", len(payload) + 0x10000 if init_size is None
                                else init_size)):
        struct.pack_into("<" + fmt, setup, offset, value)
    return bytes(setup) + payload


def make():
    mem = guest_memory()
    kernel = MemFile("fuzz-bzimage")

    def run(data: bytes) -> None:
        r = Reader(data)
        cmdline = b"x" * (r.u16() % 8192) + b"\0"
        r.u8()     # reserved: keeps the file at offset 3 for the seeds
        file = r.rest()
        kernel.set(file)
        image = load_kernel(kernel.path, mem, cmdline=cmdline)
        loaded = image.bzimage
        if image.format != "bzimage" or loaded is None:
            return     # an ELF: elf_loader's business
        bz = loaded.image
        if loaded.load_addr < MIB or not mem.contains(loaded.load_addr, bz.footprint):
            raise InvariantError(f"kernel placed at {loaded.load_addr:#x} "
                                 f"(+{bz.footprint:#x}), outside RAM or under 1 MiB")
        if image.entry != loaded.load_addr + ENTRY_64_OFFSET:
            raise InvariantError("entry is not load address + 0x200")
        n = min(SAMPLE, bz.kernel_size)
        if mem.read(loaded.load_addr, n) != file[bz.kernel_offset:bz.kernel_offset + n]:
            raise InvariantError("protected-mode kernel not copied")
        zero_page = ZeroPage()
        fill_zero_page(zero_page, loaded, CMDLINE_ADDR, len(cmdline), None)
        page = zero_page.to_bytes()
        if page[0x1F1] != file[0x1F1] or page[0x210] != 0xFF or not page[0x211] & LOADED_HIGH:
            raise InvariantError("the zero page lost the kernel's setup header")
    return run


def seeds() -> list[bytes]:
    payload = bytes(range(256)) * 8
    prefix = struct.pack("<HB", 20, 0)
    return [prefix + f for f in (
        bzimage_file(payload),
        bzimage_file(payload, relocatable=0, pref=4 * MIB),
        bzimage_file(payload, pref=512 * MIB, alignment=MIB),       # relocated down
        bzimage_file(payload, init_size=200 * MIB, xloadflags=3),
        bzimage_file(payload, setup_sects=0),
    )]
