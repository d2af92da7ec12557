"""The Linux zero page (struct boot_params), built over the real <asm/bootparam.h> layout
so field offsets can never drift from what the kernel reads."""
from __future__ import annotations

from collections.abc import Iterable

from pyvisor._native import ffi, lib
from pyvisor.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class E820Like(Protocol):   # what a memory map entry has (layout.E820Entry)
        addr: int
        size: int
        type: int

BOOT_FLAG = 0xAA55
HEADER_MAGIC = int.from_bytes(b"HdrS", "little")
LOADER_UNDEFINED = 0xFF  # type_of_loader: a boot loader without an assigned ID
SETUP_HEADER_OFFSET = 0x1F1  # where struct setup_header sits in boot_params (and a bzImage)


class ZeroPage:
    """A zeroed boot_params with the header fields a boot loader must fill in."""

    def __init__(self) -> None:
        self._params = ffi.new("struct boot_params *")
        self.hdr.boot_flag = BOOT_FLAG
        self.hdr.header = HEADER_MAGIC
        self.hdr.type_of_loader = LOADER_UNDEFINED

    @property
    def hdr(self):
        """The struct setup_header cdata, for direct field access."""
        return self._params.hdr

    def set_e820(self, entries: Iterable[E820Like]) -> None:
        entries = list(entries)
        if len(entries) > lib.E820_MAX_ENTRIES_ZEROPAGE:
            raise ConfigError(f"the e820 map has {len(entries)} entries; the zero page holds "
                              f"at most {lib.E820_MAX_ENTRIES_ZEROPAGE}")
        for slot, entry in zip(self._params.e820_table, entries):
            slot.addr, slot.size, slot.type = entry.addr, entry.size, entry.type
        self._params.e820_entries = len(entries)

    def set_cmdline(self, gpa: int, size: int) -> None:
        """Point at the NUL-terminated command line; ``size`` includes the NUL."""
        self.hdr.cmd_line_ptr = gpa & 0xFFFFFFFF
        self._params.ext_cmd_line_ptr = gpa >> 32
        self.hdr.cmdline_size = size

    def set_initrd(self, gpa: int, size: int) -> None:
        self.hdr.ramdisk_image = gpa & 0xFFFFFFFF
        self._params.ext_ramdisk_image = gpa >> 32
        self.hdr.ramdisk_size = size & 0xFFFFFFFF
        self._params.ext_ramdisk_size = size >> 32

    def set_acpi_rsdp(self, gpa: int) -> None:
        """Tell the kernel where the RSDP is (protocol 2.14+ reads it; older kernels
        find it by scanning the BIOS area, where pyvisor puts it anyway)."""
        self._params.acpi_rsdp_addr = gpa

    def set_setup_header(self, raw: bytes) -> None:
        """Copy a bzImage's setup header (its bytes from offset 0x1F1 on) into hdr.

        Bytes past the end of the struct this build knows are dropped: boot_params fields
        follow the header there. type_of_loader is then set again, since we are the loader.
        """
        size = min(len(raw), ffi.sizeof("struct setup_header"))
        ffi.memmove(ffi.addressof(self._params, "hdr"), raw[:size], size)
        self.hdr.type_of_loader = LOADER_UNDEFINED

    def to_bytes(self) -> bytes:
        """The 4096-byte page to write at ZERO_PAGE_ADDR."""
        return bytes(ffi.buffer(self._params))
