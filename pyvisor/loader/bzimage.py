"""Linux bzImage kernels, entered through the 64-bit boot protocol.

Documentation/arch/x86/boot.rst: a bzImage is ``(setup_sects + 1) * 512`` bytes of real-mode
setup (boot sector, then the setup header at 0x1F1 and the 16-bit setup code), followed by
the protected-mode kernel (for a real kernel, the decompressor with its compressed payload).
pyvisor skips the 16-bit code entirely: it copies the protected-mode part to its load address,
copies the setup header into the zero page, and enters at ``load address + 0x200`` in 64-bit
mode, which needs boot protocol 2.10 or later and ``XLF_KERNEL_64`` in ``xloadflags``.

As in elf.py, every check runs before the first byte is written, and every failure is one
KernelError line naming the file.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Iterable

from pyvisor.errors import ConfigError, KernelError
from pyvisor.loader.image_file import ImageSource
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.units import format_size
from pyvisor.value import Value
from pyvisor.x86.boot_layout import CMDLINE_MAX, KERNEL_MIN_ADDR
from pyvisor.x86.bootparams import BOOT_FLAG, HEADER_MAGIC, SETUP_HEADER_OFFSET

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

SECTOR = 512
MIN_PROTOCOL = 0x020A          # 2.10: pref_address, init_size, kernel_alignment all present
ENTRY_64_OFFSET = 0x200        # the 64-bit entry point, from the protected-mode load address
SETUP_HEADER_END_MIN = 0x264   # a 2.10+ header reaches at least the end of init_size
DEFAULT_INITRD_ADDR_MAX = 0x7FFFFFFF  # what every 64-bit kernel has advertised since 2.6.x
FOUR_GIB = 1 << 32

# loadflags (boot.rst "loadflags")
LOADED_HIGH = 1 << 0
KASLR_FLAG = 1 << 1
QUIET_FLAG = 1 << 5
KEEP_SEGMENTS = 1 << 6
CAN_USE_HEAP = 1 << 7

# xloadflags (protocol 2.12+)
XLF_KERNEL_64 = 1 << 0
XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1

# Offsets in the file (and in boot_params) of the header fields read here.
_U16, _U32, _U64 = (struct.Struct(f) for f in ("<H", "<I", "<Q"))
_OFF_SETUP_SECTS = 0x1F1
_OFF_SYSSIZE = 0x1F4
_OFF_BOOT_FLAG = 0x1FE
_OFF_JUMP = 0x200
_OFF_HEADER = 0x202
_OFF_VERSION = 0x206
_OFF_LOADFLAGS = 0x211
_OFF_INITRD_ADDR_MAX = 0x22C
_OFF_KERNEL_ALIGNMENT = 0x230
_OFF_RELOCATABLE = 0x234
_OFF_XLOADFLAGS = 0x236
_OFF_CMDLINE_SIZE = 0x238
_OFF_PAYLOAD_OFFSET = 0x248
_OFF_PAYLOAD_LENGTH = 0x24C
_OFF_PREF_ADDRESS = 0x258
_OFF_INIT_SIZE = 0x260


def is_bzimage(data: bytes) -> bool:
    """Whether ``data`` starts like a Linux boot image (boot_flag 0xAA55 and "HdrS")."""
    return (len(data) >= _OFF_HEADER + 4
            and _U16.unpack_from(data, _OFF_BOOT_FLAG)[0] == BOOT_FLAG
            and _U32.unpack_from(data, _OFF_HEADER)[0] == HEADER_MAGIC)


class BzImage(Value):
    """A validated bzImage, not yet placed in guest memory. Field names follow boot.rst;
    setup_sects is already 4 when the header says 0, syssize counts 16-byte units,
    cmdline_size is the longest command line without its NUL, initrd_addr_max the highest
    address the initrd may occupy (inclusive), setup_header the file's bytes 0x1F1 ..
    0x202 + data[0x201] (copied into the zero page), kernel_offset where the
    protected-mode kernel starts in the file and kernel_size its bytes (syssize * 16)."""

    __slots__ = ("version", "setup_sects", "syssize", "loadflags", "xloadflags",
                 "relocatable_kernel", "kernel_alignment", "pref_address", "init_size",
                 "cmdline_size", "initrd_addr_max", "payload_offset", "payload_length",
                 "setup_header", "kernel_offset", "kernel_size")

    def __init__(self, version: int, setup_sects: int, syssize: int, loadflags: int,
                 xloadflags: int, relocatable_kernel: bool, kernel_alignment: int,
                 pref_address: int, init_size: int, cmdline_size: int, initrd_addr_max: int,
                 payload_offset: int, payload_length: int, setup_header: bytes,
                 kernel_offset: int, kernel_size: int) -> None:
        self.version, self.setup_sects, self.syssize = version, setup_sects, syssize
        self.loadflags, self.xloadflags = loadflags, xloadflags
        self.relocatable_kernel, self.kernel_alignment = relocatable_kernel, kernel_alignment
        self.pref_address, self.init_size, self.cmdline_size = pref_address, init_size, cmdline_size
        self.initrd_addr_max = initrd_addr_max
        self.payload_offset, self.payload_length = payload_offset, payload_length
        self.setup_header, self.kernel_offset, self.kernel_size = (setup_header, kernel_offset,
                                                                   kernel_size)

    @property
    def protocol(self) -> str:
        return f"{self.version >> 8}.{self.version & 0xFF:02d}"

    @property
    def can_load_above_4g(self) -> bool:
        return bool(self.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G)

    @property
    def footprint(self) -> int:
        """Bytes the kernel needs from its load address on before it reads the memory map."""
        return max(self.init_size, self.kernel_size)


class LoadedBzImage(Value):
    """Where a bzImage ended up and what the zero page must say about it: load_addr is
    where the protected-mode kernel was copied, entry (load_addr + 0x200) the 64-bit entry."""

    __slots__ = ("image", "load_addr", "entry")

    def __init__(self, image: BzImage, load_addr: int, entry: int) -> None:
        self.image, self.load_addr, self.entry = image, load_addr, entry

    @property
    def setup_header(self) -> bytes:
        return self.image.setup_header

    @property
    def cmdline_size(self) -> int:
        return self.image.cmdline_size

    @property
    def initrd_addr_max(self) -> int:
        return self.image.initrd_addr_max

    @property
    def can_load_above_4g(self) -> bool:
        return self.image.can_load_above_4g

    @property
    def low(self) -> int:
        return self.load_addr

    @property
    def high(self) -> int:
        """End of the occupied range [load_addr, load_addr + init_size)."""
        return self.load_addr + self.image.footprint


HEAD_SIZE = 4096        # bytes parse_bzimage needs at most: the setup header ends by 0x301


def parse_bzimage(data: bytes, name: str, size: int | None = None) -> BzImage:
    """Validate a bzImage's setup header for the 64-bit boot protocol. `data` is the file
    or its first HEAD_SIZE bytes at least, with `size` the whole file's."""
    def fail(message: str) -> NoReturn:
        raise KernelError(f"kernel {name!r}: {message}")

    size = len(data) if size is None else size
    if not is_bzimage(data):
        fail("not a bzImage (no boot_flag 0xAA55 and \"HdrS\" setup header)")
    if size < SETUP_HEADER_END_MIN:
        fail(f"truncated: the setup header needs {SETUP_HEADER_END_MIN} bytes "
             f"but the file has {size}")
    version = _U16.unpack_from(data, _OFF_VERSION)[0]
    if version < MIN_PROTOCOL:
        fail(f"boot protocol {version >> 8}.{version & 0xFF:02d} is too old "
             f"(pyvisor needs 2.10 or later)")
    header_end = _OFF_HEADER + data[_OFF_JUMP + 1]
    if header_end < SETUP_HEADER_END_MIN:
        fail(f"the setup header ends at {header_end:#x}, before init_size (a 2.10+ header "
             f"reaches {SETUP_HEADER_END_MIN:#x})")
    setup_sects = data[_OFF_SETUP_SECTS] or 4
    kernel_offset = (setup_sects + 1) * SECTOR
    if header_end > kernel_offset:
        fail(f"the setup header ends at {header_end:#x}, past the {setup_sects} setup "
             f"sectors ({kernel_offset:#x})")
    loadflags = data[_OFF_LOADFLAGS]
    if not loadflags & LOADED_HIGH:
        fail("a zImage (loaded at 0x10000) is not supported: LOADED_HIGH is clear")
    xloadflags = _U16.unpack_from(data, _OFF_XLOADFLAGS)[0]
    if not xloadflags & XLF_KERNEL_64:
        fail(f"not 64-bit capable: xloadflags {xloadflags:#x} lacks XLF_KERNEL_64 "
             f"(boot protocol {version >> 8}.{version & 0xFF:02d})")
    syssize = _U32.unpack_from(data, _OFF_SYSSIZE)[0]
    if syssize == 0:
        fail("the setup header says the protected-mode kernel is empty (syssize 0)")
    kernel_size = syssize * 16
    if kernel_offset + kernel_size > size:
        fail(f"truncated: the setup header says {kernel_offset + kernel_size} bytes "
             f"({setup_sects} setup sectors and {kernel_size} bytes of kernel) "
             f"but the file has {size}")
    return BzImage(
        version=version, setup_sects=setup_sects, syssize=syssize,
        loadflags=loadflags, xloadflags=xloadflags,
        relocatable_kernel=bool(data[_OFF_RELOCATABLE]),
        kernel_alignment=_U32.unpack_from(data, _OFF_KERNEL_ALIGNMENT)[0],
        pref_address=_U64.unpack_from(data, _OFF_PREF_ADDRESS)[0],
        init_size=_U32.unpack_from(data, _OFF_INIT_SIZE)[0],
        cmdline_size=_U32.unpack_from(data, _OFF_CMDLINE_SIZE)[0],
        initrd_addr_max=_U32.unpack_from(data, _OFF_INITRD_ADDR_MAX)[0],
        payload_offset=_U32.unpack_from(data, _OFF_PAYLOAD_OFFSET)[0],
        payload_length=_U32.unpack_from(data, _OFF_PAYLOAD_LENGTH)[0],
        setup_header=bytes(data[SETUP_HEADER_OFFSET:header_end]),
        kernel_offset=kernel_offset, kernel_size=kernel_size)


def _ram_ranges(mem: GuestMemory) -> Iterable[tuple[int, int]]:
    return ((r.gpa, r.end) for r in mem.layout.regions)


def choose_load_address(image: BzImage, mem: GuestMemory, name: str) -> int:
    """Where the protected-mode kernel goes: ``pref_address`` if [pref, pref + init_size)
    is RAM; otherwise, for a relocatable kernel, the lowest ``kernel_alignment``-aligned
    address above pref_address where init_size bytes are RAM.

    Never below pref_address: boot.rst's "runtime start address" of a relocatable kernel
    loaded lower is pref_address itself (arch/x86/boot/compressed/head_64.S decompresses
    there), so a lower load would not keep the kernel out of the missing range. Addresses
    at or above 4 GiB are used only with XLF_CAN_BE_LOADED_ABOVE_4G.
    """
    size = image.footprint
    pref = image.pref_address
    if pref >= KERNEL_MIN_ADDR and mem.contains(pref, size):
        return pref
    if not image.relocatable_kernel:
        if pref < KERNEL_MIN_ADDR:
            raise KernelError(f"kernel {name!r}: its fixed load address {pref:#x} is below "
                              f"1 MiB, where the boot structures live")
        raise KernelError(
            f"kernel {name!r}: does not fit in RAM: it is not relocatable and needs "
            f"{pref:#x}-{pref + size:#x} ({format_size(size)} of init_size) but the guest has "
            f"{format_size(mem.layout.ram_size)}")
    align = image.kernel_alignment
    if align == 0 or align & (align - 1):
        raise KernelError(f"kernel {name!r}: kernel_alignment {align:#x} is not a power of two")
    floor = max(pref, KERNEL_MIN_ADDR)
    limit = None if image.can_load_above_4g else FOUR_GIB
    for start, end in _ram_ranges(mem):
        addr = max(start, floor) + align - 1 & ~(align - 1)
        if addr + size <= end and (limit is None or addr + size <= limit):
            return addr
    raise KernelError(
        f"kernel {name!r}: does not fit in RAM: it needs {format_size(size)} (init_size) at "
        f"or above {floor:#x} but the guest has {format_size(mem.layout.ram_size)}")


def place_bzimage(image: BzImage, source: ImageSource, name: str,
                  mem: GuestMemory) -> LoadedBzImage:
    """Choose the load address of a parsed bzImage and read its protected-mode kernel
    there, straight from the file."""
    load_addr = choose_load_address(image, mem, name)
    source.read_into(mem.buffer(load_addr, image.kernel_size), image.kernel_offset)
    return LoadedBzImage(image=image, load_addr=load_addr, entry=load_addr + ENTRY_64_OFFSET)


def load_bzimage(path: str | os.PathLike, mem: GuestMemory) -> LoadedBzImage:
    """Parse the bzImage at ``path``, choose its load address and load it there."""
    name = os.fspath(path)
    with ImageSource(path, f"kernel {name!r}", mem.layout.ram_size) as source:
        image = parse_bzimage(source.head(HEAD_SIZE), name, source.size)
        return place_bzimage(image, source, name, mem)


def check_cmdline(cmdline: bytes, cmdline_size: int) -> None:
    """Refuse a command line longer than the kernel's ``cmdline_size`` (which, like the
    length checked here, does not count the terminating NUL; a trailing NUL is ignored)."""
    length = len(cmdline) - 1 if cmdline.endswith(b"\0") else len(cmdline)
    if length > cmdline_size:
        raise ConfigError(f"command line too long: {length} bytes, this kernel accepts "
                          f"at most {cmdline_size}")


def cmdline_limit(kernel: BzImage | LoadedBzImage) -> int:
    """The longest command line pyvisor can hand this kernel: its cmdline_size, capped by
    the CMDLINE_MAX-byte buffer (with the NUL) the machine writes it into."""
    return min(kernel.cmdline_size, CMDLINE_MAX - 1)


def fill_zero_page(zero_page, kernel: LoadedBzImage, cmdline_gpa: int, cmdline_len: int,
                   initrd: tuple[int, int] | None, e820=None) -> None:
    """Fill a bootparams.ZeroPage for the 64-bit entry of ``kernel`` (boot.rst, "64-bit
    boot protocol"): the kernel's own setup header, then what the loader must write.

    ``cmdline_len`` counts the terminating NUL (as ZeroPage.set_cmdline). ``e820``, when
    given, is written too (the machine may equally call set_e820 itself).

    - type_of_loader = 0xFF (no assigned ID), set by set_setup_header;
    - loadflags: LOADED_HIGH set; CAN_USE_HEAP left clear and heap_end_ptr 0, since the heap
      is only used by the 16-bit setup code that the 64-bit entry skips; KEEP_SEGMENTS clear
      (obsolete, and meaningless for the 64-bit entry);
    - code32_start = the load address (what the 32-bit entry would jump to; unused here);
    - cmd_line_ptr (+ ext_cmd_line_ptr); hdr.cmdline_size keeps the kernel's own value;
    - ramdisk_image / ramdisk_size (+ ext_*) when there is an initrd, else 0.
    """
    zero_page.set_setup_header(kernel.setup_header)
    hdr = zero_page.hdr
    hdr.loadflags = (hdr.loadflags | LOADED_HIGH) & ~(CAN_USE_HEAP | KEEP_SEGMENTS)
    hdr.heap_end_ptr = 0
    hdr.code32_start = kernel.load_addr & 0xFFFFFFFF
    zero_page.set_cmdline(cmdline_gpa, cmdline_len)
    hdr.cmdline_size = kernel.cmdline_size  # set_cmdline wrote the length; keep the limit
    if initrd is not None:
        zero_page.set_initrd(*initrd)
    else:
        zero_page.set_initrd(0, 0)
    if e820 is not None:
        zero_page.set_e820(e820)
