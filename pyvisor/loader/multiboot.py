"""Booting a Multiboot 1 or 2 kernel as QEMU's ``-kernel`` does: find the header, load the
image, place the modules, and after the ACPI tables exist write the boot information.

Guest RAM from the kernel up, as this module lays it out:

    kernel (its segments, BSS included)
    module 1, module 2, ...   each page-aligned, right after the one before
    boot information          page-aligned after the last module (EBX at entry)

A file with both headers is booted as Multiboot 1, as QEMU would.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

from pyvisor.errors import KernelError
from pyvisor.loader import multiboot1, multiboot2
from pyvisor.loader.multiboot_image import (Module, load_image, low_ram_end, page_up,
                                            place_modules, write_info)
from pyvisor.memory.guest_memory import GuestMemory
from pyvisor.memory.layout import E820Entry
from pyvisor.value import Value
from pyvisor.x86.boot_layout import KERNEL_MIN_ADDR

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

LOADER_NAME = b"pyvisor"


def detect(data: bytes) -> int | None:
    """The Multiboot version whose header magic ``data`` carries (1 first), or None."""
    if multiboot1.find_header(data) is not None:
        return 1
    if multiboot2.find_header(data) is not None:
        return 2
    return None


class MultibootKernel(Value):
    """A loaded Multiboot kernel: how to enter it and where its boot information goes."""

    __slots__ = ("version", "entry", "low", "high", "modules", "info_addr")

    def __init__(self, version: int, entry: int, low: int, high: int,
                 modules: tuple[Module, ...], info_addr: int) -> None:
        self.version, self.entry, self.low, self.high = version, entry, low, high
        self.modules, self.info_addr = modules, info_addr

    @property
    def magic(self) -> int:
        """EAX at entry."""
        return multiboot1.BOOTLOADER_MAGIC if self.version == 1 else multiboot2.BOOTLOADER_MAGIC


def load_multiboot(data: bytes, name: str, mem: GuestMemory,
                   modules: str | None) -> MultibootKernel:
    """Load the Multiboot kernel in ``data`` and the ``--initrd`` modules into ``mem``."""
    def fail(message: str) -> NoReturn:
        raise KernelError(f"kernel {name!r}: {message}")

    version = detect(data)
    if version is None:
        fail("no Multiboot header in the first 8 KiB (Multiboot 1) or 32 KiB (Multiboot 2)")
    if version == 1:
        header1 = multiboot1.parse_header(data, multiboot1.find_header(data), fail)
        image = multiboot1.kernel_image(data, header1, fail)
    else:
        header2 = multiboot2.parse_header(data, multiboot2.find_header(data), fail)
        image = multiboot2.kernel_image(data, header2, fail)
        if header2.relocatable is not None:
            image = image.moved(multiboot2.relocation(image, header2.relocatable,
                                                      KERNEL_MIN_ADDR, low_ram_end(mem), fail))
    load_image(image, data, mem, fail)
    placed = tuple(place_modules(mem, modules, image.high))
    info_addr = page_up(max([image.high] + [m.end for m in placed]))
    return MultibootKernel(version, image.entry, image.low, image.high, placed, info_addr)


def kernel_cmdline(kernel: str | os.PathLike, cmdline: str) -> bytes:
    """The command line as QEMU hands it over: the kernel's file name first (argv[0])."""
    return b" ".join(filter(None, (os.fsencode(kernel), cmdline.encode())))


def write_boot_info(mem: GuestMemory, kernel: MultibootKernel, cmdline: bytes,
                    e820: Iterable[E820Entry], rsdp: bytes) -> int:
    """Write the boot information for ``kernel`` at its info_addr; return it, for EBX."""
    if kernel.version == 1:
        info = multiboot1.build_info(kernel.info_addr, cmdline, kernel.modules, e820,
                                     LOADER_NAME)
    else:
        info = multiboot2.build_info(cmdline, kernel.modules, e820, LOADER_NAME, rsdp,
                                     kernel.low)
    write_info(mem, kernel.info_addr, info)
    return kernel.info_addr
